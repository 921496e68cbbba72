"""Conditional GAN architectures: shapes per image size, one finite training step, config."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.mark.parametrize("kind", ["seed-cgan", "stable-cgan"])
@pytest.mark.parametrize("size", [32, 64])
def test_shapes(kind, size):
    from mammosynth.models.cgan import build_gan

    model = build_gan(kind, size, 16)
    z = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    y = np.array([0, 1, 1], np.int32)
    fake = model.generator([z, y])
    assert fake.shape == (3, size, size, 1)
    assert model.discriminator([np.asarray(fake), y]).shape == (3, 1)
    out = np.asarray(model([z, y]))
    assert out.shape == (3, size, size, 1) and out.min() >= 0.0 and out.max() <= 1.0


def test_seed_preset_224_rgb_builds_like_the_study():
    from mammosynth.models.cgan import build_gan, upsampling_plan

    assert upsampling_plan(224) == (7, 5)
    model = build_gan("seed-cgan", 224, 100, channels=3)
    assert model.width == 128
    assert model.generator.output_shape == (None, 224, 224, 3)
    assert model.discriminator.output_shape == (None, 1)
    transposed = [layer for layer in model.generator.layers if "conv2d_transpose" in layer.name]
    assert len(transposed) == 5
    dense = [layer for layer in model.generator.layers if layer.name.startswith("dense")]
    assert any(layer.units == 7 * 7 * 128 for layer in dense)


@pytest.mark.parametrize("kind", ["seed-cgan", "stable-cgan"])
def test_one_training_step_is_finite_and_moves_weights(kind):
    import keras

    from mammosynth.models.cgan import build_gan, default_optimizers

    keras.utils.set_random_seed(0)
    model = build_gan(kind, 32, 8, seed=0)
    model.compile(*default_optimizers(kind, 1e-3))
    before = [w.numpy().copy() for w in model.generator.trainable_variables]
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (6, 32, 32, 1)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    logs = model.train_step((images, labels))
    values = {k: float(v) for k, v in logs.items()}
    assert set(values) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(v) for v in values.values()), values
    after = [w.numpy() for w in model.generator.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(after, before, strict=True))


def test_config_roundtrip_and_errors():
    from mammosynth.models.cgan import StableCGAN, build_gan, upsampling_plan

    model = build_gan("stable-cgan", 64, 12, base_width=2, r1_gamma=0.5)
    clone = StableCGAN.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    assert upsampling_plan(64) == (4, 4) and upsampling_plan(96) == (6, 4)
    with pytest.raises(ValueError, match="unknown GAN kind"):
        build_gan("vae", 64, 8)
    with pytest.raises(ValueError, match="1 or 3 channels, got 4"):
        build_gan("seed-cgan", 64, 8, channels=4)
    with pytest.raises(ValueError, match="image_size 30"):
        build_gan("stable-cgan", 30, 8)


def test_r1_penalty_step_is_finite():
    from mammosynth.models.cgan import build_gan, default_optimizers

    model = build_gan("stable-cgan", 32, 8, r1_gamma=1.0, augment=False)
    model.compile(*default_optimizers("stable-cgan", 1e-3))
    images = np.random.default_rng(1).uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
    logs = model.train_step((images, np.array([0, 1, 0, 1])))
    assert np.isfinite(float(logs["d_loss"]))


def test_diff_augment_keeps_shape_and_gradient():
    import keras
    import tensorflow as tf

    from mammosynth.models.cgan import diff_augment

    x = tf.Variable(tf.random.uniform((4, 32, 32, 1), -1, 1))
    with tf.GradientTape() as tape:
        out = diff_augment(x, keras.random.SeedGenerator(0))
        total = tf.reduce_sum(out)
    assert out.shape == x.shape
    grad = tape.gradient(total, x)
    assert grad is not None and float(tf.reduce_sum(tf.abs(grad))) > 0
    # cutout zeroes a square per image, so some pixels are exactly 0 after augmentation
    assert float(tf.reduce_mean(tf.cast(tf.equal(out, 0.0), tf.float32))) > 0.05


def test_mixed_precision_step_and_float32_sampler():
    """The GPU path (mixed_float16 + LossScaleOptimizer) steps, and its sampler is float32."""
    import keras
    import tensorflow as tf

    from mammosynth.models.cgan import build_gan, default_optimizers

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = build_gan("stable-cgan", 32, 8)
        d_opt, g_opt = default_optimizers("stable-cgan", 1e-3)
        model.compile(keras.optimizers.LossScaleOptimizer(d_opt), keras.optimizers.LossScaleOptimizer(g_opt))
        images = np.random.default_rng(2).uniform(0, 1, (4, 32, 32, 1)).astype(np.float32)
        step = tf.function(model.train_step)
        for _ in range(2):
            logs = step((images, np.array([0, 1, 0, 1])))
        assert all(np.isfinite(float(v)) for v in logs.values())
        sampler = model.sampler()
    finally:
        keras.config.set_dtype_policy(previous)
    assert sampler.output.dtype == "float32"
    assert all(layer.dtype_policy.name == "float32" for layer in sampler.layers)


def test_conditional_vae_shapes_and_step():
    import keras

    from mammosynth.models.cgan import build_gan, default_optimizers

    keras.utils.set_random_seed(0)
    model = build_gan("cvae", 32, 8)
    model.compile(*default_optimizers("cvae", 2e-4))
    images = np.random.default_rng(3).uniform(0, 1, (6, 32, 32, 1)).astype(np.float32)
    labels = np.array([0, 1, 0, 1, 0, 1])
    assert model.discriminator([images, labels]).shape == (6, 16)  # (mu, logvar)
    first = {k: float(v) for k, v in model.train_step((images, labels)).items()}
    assert set(first) == {"loss", "recon", "kl"} and all(np.isfinite(v) for v in first.values())
    for m in model.metrics:
        m.reset_state()
    for _ in range(5):
        logs = model.train_step((images, labels))
    assert float(logs["recon"]) < first["recon"]  # reconstruction improves on a fixed batch
    out = np.asarray(model([np.zeros((2, 8), np.float32), np.array([0, 1], np.int32)]))
    assert out.shape == (2, 32, 32, 1) and 0 <= out.min() and out.max() <= 1
