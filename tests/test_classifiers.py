"""Classifier builders: every one builds, trains a step, honours its minimum size and reloads."""

from __future__ import annotations

import numpy as np
import pytest

from mammosynth.models import classifiers


def _one_step(model, size, channels=1, eager=False):
    rng = np.random.default_rng(0)
    x = rng.random((2, size, size, channels), dtype=np.float32)
    y = np.array([0.0, 1.0], np.float32)
    model.compile(optimizer="adam", loss="binary_crossentropy", run_eagerly=eager)
    before = [w.copy() for w in model.get_weights()]
    loss = model.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    probs = model.predict(x, verbose=0)
    assert probs.shape == (2, 1) and np.all((probs >= 0) & (probs <= 1))


@pytest.mark.parametrize(
    "name, size, hp",
    [
        ("simple_cnn", 16, {}),
        ("tuned_cnn", 16, {"n_conv_layers": 2, "filters": [4, 8], "dense_units": 8}),
    ],
)
def test_small_cnns_build_train_and_accept_3_channels(name, size, hp):
    _one_step(classifiers.build_classifier(name, (size, size, 1), **hp), size, eager=True)
    _one_step(
        classifiers.build_classifier(name, (size + 8, size + 8, 3), **hp), size + 8, channels=3, eager=True
    )


# Transfer models at their minimum size, no downloads; eager avoids tracing a 50M-parameter graph for one step.
@pytest.mark.parametrize("name", ["vgg16", "efficientnet_b0", "inception_resnet_v2"])
def test_transfer_models_at_minimum_size(name):
    size = classifiers.MIN_SIZES[name]
    model = classifiers.build_classifier(name, (size, size, 1), weights=None, dense_units=8)
    base = classifiers.backbone(model)
    assert base is not None and not base.trainable  # frozen for the warm-up phase
    _one_step(model, size, eager=True)
    with pytest.raises(ValueError, match=f"minimum of {size}x{size}"):
        classifiers.build_classifier(name, (size - 1, size - 1, 1), weights=None)


def test_fine_tune_schedule_unfreezes_top_of_backbone():
    model = classifiers.build_vgg16((32, 32, 1), weights=None)
    phases = classifiers.fine_tune_schedule(model, 10, 1e-3, unfreeze_fraction=0.25)
    assert [p.epochs for p in phases] == [4, 6] and phases[0].trainable_layers == 0
    assert phases[1].learning_rate == pytest.approx(1e-4)
    classifiers.set_trainable(model, phases[1].trainable_layers)
    flags = [layer.trainable for layer in classifiers.backbone(model).layers]
    assert flags[-1] and not flags[0] and sum(flags) <= phases[1].trainable_layers
    classifiers.set_trainable(model, 0)
    assert not classifiers.backbone(model).trainable
    assert len(classifiers.fine_tune_schedule(classifiers.build_simple_cnn((16, 16, 1)), 10, 1e-3)) == 1


def test_bad_requests_fail_clearly():
    with pytest.raises(ValueError, match="unknown classifier 'resnet50'.*simple_cnn"):
        classifiers.build_classifier("resnet50")
    with pytest.raises(ValueError, match="expected 1 or 3 channels, got 4"):
        classifiers.build_classifier("simple_cnn", (32, 32, 4))
    with pytest.raises(ValueError, match="minimum of 16x16"):
        classifiers.build_classifier("tuned_cnn", (8, 8, 1), n_conv_layers=4)
    with pytest.raises(TypeError, match="simple_cnn"):
        classifiers.build_classifier("simple_cnn", (32, 32, 1), n_conv_layers=3)


def test_transfer_model_saves_and_reloads_identically(tmp_path):
    from mammosynth.models.io import load_classifier, save_classifier

    model = classifiers.build_vgg16((32, 32, 1), weights=None, dense_units=8)
    x = np.random.default_rng(1).random((3, 32, 32, 1), dtype=np.float32)
    expected = model.predict(x, verbose=0)
    save_classifier(model, tmp_path / "model", {"image_size": 32, "arch": "vgg16"}, export_saved_model=False)
    loaded, meta = load_classifier(tmp_path / "model")  # needs the custom layers registered
    assert meta["arch"] == "vgg16"
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


def test_mixed_precision_keeps_a_float32_probability():
    import keras

    from mammosynth.train import configure_devices

    try:
        configure_devices(mixed_precision=True, deterministic=False)
        model = classifiers.build_classifier(
            "tuned_cnn", (16, 16, 1), n_conv_layers=2, filters=4, dense_units=4
        )
        assert model.get_layer("conv1").compute_dtype == "float16"
        assert model.output.dtype == "float32"
        _one_step(model, 16, eager=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
