"""GAN training throughput: our compiled `StableCGAN.train_step` vs an eager keras-io-style loop.

The baseline is how the keras-io conditional-GAN example (and the student study) trains when run
step by step: ``tf.GradientTape`` per update, no ``tf.function``, a separate generator pass for
the discriminator step and for the generator step. It trains the *same* networks with the same
losses, DiffAugment and EMA, so the difference is the compiled graph and the shared forward pass
(simultaneous update) only. Both are measured in this process on the same batches; each prints
one JSON entry ``{name, ours, baseline, unit, ratio}``.
"""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from mammosynth.models.cgan import build_gan, default_optimizers, diff_augment  # noqa: E402

IMAGE_SIZE = 64
BATCH = 32
LATENT = 64
WARMUP = 2
STEPS = 12


def eager_reference_step(model, real, labels):
    """keras-io style: eager tapes, D update on fresh fakes, then G update on fresh fakes."""
    real = tf.cast(real, "float32") * 2.0 - 1.0
    labels = tf.cast(labels, "int32")
    batch = tf.shape(real)[0]
    z = tf.random.normal((batch, model.latent_dim))
    fake = model.generator([z, labels], training=True)
    with tf.GradientTape() as tape:
        both = diff_augment(tf.concat([real, fake], 0), model.seed_generator)
        logits = model.discriminator([both, tf.concat([labels, labels], 0)], training=True)
        d_real, d_fake = tf.split(logits, 2, axis=0)
        d_loss = tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
    grads = tape.gradient(d_loss, model.discriminator.trainable_variables)
    model.d_optimizer.apply_gradients(zip(grads, model.discriminator.trainable_variables, strict=True))
    z = tf.random.normal((batch, model.latent_dim))
    with tf.GradientTape() as tape:
        fake = model.generator([z, labels], training=True)
        logits = model.discriminator([diff_augment(fake, model.seed_generator), labels], training=True)
        g_loss = -tf.reduce_mean(logits)
    grads = tape.gradient(g_loss, model.generator.trainable_variables)
    model.g_optimizer.apply_gradients(zip(grads, model.generator.trainable_variables, strict=True))
    model._update_ema()
    return {"d_loss": d_loss, "g_loss": g_loss}


def _rate(step, batches) -> float:
    for images, labels in batches[:WARMUP]:
        out = step(images, labels)
    float(out["d_loss"])
    start = time.perf_counter()
    for images, labels in batches[WARMUP:]:
        out = step(images, labels)
    float(out["d_loss"])  # wait for the last step
    return (len(batches) - WARMUP) / (time.perf_counter() - start)


def main() -> int:
    rng = np.random.default_rng(0)
    batches = [
        (
            tf.constant(rng.uniform(0, 1, (BATCH, IMAGE_SIZE, IMAGE_SIZE, 1)).astype(np.float32)),
            tf.constant(rng.integers(0, 2, BATCH).astype(np.int32)),
        )
        for _ in range(WARMUP + STEPS)
    ]

    ours_model = build_gan("stable-cgan", IMAGE_SIZE, LATENT, seed=0)
    ours_model.compile(*default_optimizers("stable-cgan", 2e-4))
    compiled = tf.function(ours_model.train_step, jit_compile=False)
    ours = _rate(lambda x, y: compiled((x, y)), batches)

    ref_model = build_gan("stable-cgan", IMAGE_SIZE, LATENT, seed=0)
    ref_model.compile(*default_optimizers("stable-cgan", 2e-4))
    baseline = _rate(lambda x, y: eager_reference_step(ref_model, x, y), batches)

    print(
        json.dumps(
            {
                "name": f"gan_train_steps_per_s_stable_cgan_{IMAGE_SIZE}px_b{BATCH}",
                "ours": round(ours, 3),
                "baseline": round(baseline, 3),
                "unit": "steps/s",
                "ratio": round(ours / baseline, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
