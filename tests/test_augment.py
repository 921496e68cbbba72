"""Augmentation layers (training-only) and the tf.data input pipeline of mammosynth.data.shards."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from mammosynth.data import shards
from mammosynth.data.augment import AugmentConfig, build_augmenter
from mammosynth.models.layers import RandomEqualization, equalize_histogram

OFF = AugmentConfig(rotation=0, shift=0, shear=0, zoom=0, flip_horizontal=False, brightness=0, contrast=0)
SINGLE = {
    "rotation": {"rotation": 0.1},
    "shift": {"shift": 0.2},
    "shear": {"shear": 0.3},
    "zoom": {"zoom": 0.3},
    "flip": {"flip_horizontal": True, "flip_vertical": True},
    "brightness": {"brightness": 0.3},
    "contrast": {"contrast": 0.5},
    "blur": {"blur_sigma": 2.0, "blur_rate": 1.0},
    "equalize": {"equalize_rate": 1.0},
}


def _images(n=8, size=24, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = np.empty((n, size, size, 1), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(6, 12, 2)  # off-centre so flips and shifts move it
        out[i, ..., 0] = (
            0.2 + 0.5 * (((yy - cy) ** 2 + (xx - cx) ** 2) < 16) + rng.normal(0, 0.03, (size, size))
        )
    return np.clip(out, 0, 1)


@pytest.mark.parametrize("which", sorted(SINGLE))
def test_each_augmentation_changes_images_only_in_training(which):
    x = _images()
    aug = build_augmenter(dataclasses.replace(OFF, **SINGLE[which]), seed=1)
    trained = np.asarray(aug(x, training=True))
    assert trained.shape == x.shape and trained.min() >= 0.0 and trained.max() <= 1.0
    assert np.abs(trained - x).mean() > 1e-3, f"{which} did not change the images"
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)


def test_full_default_pipeline_is_identity_at_inference():
    x = _images()
    aug = build_augmenter(AugmentConfig(blur_sigma=1.0, equalize_rate=0.5), seed=0)
    np.testing.assert_array_equal(np.asarray(aug(x, training=False)), x)
    assert not np.allclose(np.asarray(aug(x, training=True)), x)


def test_switched_off_config_is_identity_even_in_training():
    x = _images()
    np.testing.assert_allclose(np.asarray(build_augmenter(OFF)(x, training=True)), x)


def test_equalisation_flattens_the_histogram_and_clip_limits_it():
    rng = np.random.default_rng(0)
    x = np.clip(rng.normal(0.3, 0.05, (1, 32, 32, 1)), 0, 1).astype(np.float32)  # low-contrast image
    full = np.asarray(equalize_histogram(x, clip_limit=None))
    limited = np.asarray(equalize_histogram(x, clip_limit=1.5))
    assert full.min() == pytest.approx(0.0, abs=0.01) and full.max() == pytest.approx(1.0)
    assert np.std(full) > np.std(limited) > np.std(x)  # contrast limiting stretches less
    assert np.all(np.diff(full.ravel()[np.argsort(x.ravel())]) >= -1e-6)  # monotone mapping
    layer = RandomEqualization(rate=0.0)
    np.testing.assert_array_equal(np.asarray(layer(x, training=True)), x)


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="rotate"):
        AugmentConfig.from_dict({"rotate": 0.1})


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    real, syn = root / "real", root / "syn"
    x = _images(30)
    labels = np.r_[np.zeros(20), np.ones(10)].astype(int)  # imbalanced on purpose
    for split in ("train", "val", "test"):
        shards.write_split(real, split, x, labels, [f"{split}-{i}" for i in range(30)], shard_size=7)
    shards.write_meta(real, 24)
    shards.write_split(syn, "train", _images(12, seed=5), np.arange(12) % 2, [f"s{i}" for i in range(12)])
    shards.write_meta(syn, 24, {"lineage": {"generator": "test"}})
    return real, syn


def _collect(ds):
    xs, ys, ws = [], [], []
    for batch in ds:
        xs.append(batch[0].numpy())
        ys.append(batch[1].numpy())
        if len(batch) == 3:
            ws.append(batch[2].numpy())
    return np.concatenate(xs), np.concatenate(ys), (np.concatenate(ws) if ws else None)


def test_dataset_streams_all_rows_in_order_without_shuffle(sets):
    real, _ = sets
    x, y, w = _collect(shards.dataset(real, "test", batch_size=8))
    ref_x, ref_y, _ = shards.read_split(real, "test")
    np.testing.assert_allclose(x, ref_x, atol=1e-6)
    np.testing.assert_array_equal(y, ref_y)
    assert w is None and x.dtype == np.float32


def test_shuffle_and_augment_repeat_per_seed(sets):
    """With op determinism (what `mammosynth.train.configure_devices` turns on for CPU)."""
    real, _ = sets
    tf.config.experimental.enable_op_determinism()

    def run(seed):
        tf.keras.utils.set_random_seed(seed)
        return _collect(
            shards.dataset(
                real,
                "train",
                batch_size=8,
                shuffle=True,
                seed=seed,
                augment=build_augmenter(AugmentConfig(), seed=seed),
            )
        )[0]

    a, b = run(3), run(3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, shards.read_split(real, "train")[0])


def test_class_balance_weights_and_oversampling(sets):
    real, _ = sets
    _, y, w = _collect(shards.dataset(real, "train", batch_size=8, class_balance="weights"))
    assert w[y == 0].sum() == pytest.approx(w[y == 1].sum())  # 20 × 0.75 == 10 × 1.5
    _, y, w = _collect(shards.dataset(real, "train", batch_size=8, class_balance="oversample", shuffle=True))
    assert (y == 0).sum() == (y == 1).sum() == 20 and w is None
    with pytest.raises(ValueError, match="class_balance"):
        shards.dataset(real, "train", class_balance="smote")


def test_mixed_dataset_ratio_and_synthetic_only(sets):
    real, syn = sets
    ds, counts = shards.mixed_dataset(real, syn, 0.25, batch_size=8, seed=0)
    assert counts == {"n_real": 30, "n_synthetic": 8, "n_requested_synthetic": 8}
    assert len(_collect(ds)[1]) == 38
    _, capped = shards.mixed_dataset(real, syn, 1.0, batch_size=8)
    assert capped["n_synthetic"] == 12 and capped["n_requested_synthetic"] == 30
    ds, only = shards.mixed_dataset(real, syn, 0.2, use_real=False, batch_size=8)
    assert only["n_real"] == 0 and len(_collect(ds)[1]) == 6
    with pytest.raises(ValueError, match="needs a synthetic set"):
        shards.mixed_dataset(real, None, 0.5)


def test_sets_of_different_size_do_not_mix(sets, tmp_path):
    real, _ = sets
    shards.write_split(tmp_path, "train", np.zeros((4, 16, 16, 1)), np.arange(4) % 2, list("abcd"))
    shards.write_meta(tmp_path, 16)
    with pytest.raises(ValueError, match="image_size 16 differs from 24"):
        shards.mixed_dataset(real, tmp_path, 0.1)


def test_affine_flip_mirrors_exactly_and_zero_ranges_are_identity():
    from mammosynth.models.layers import RandomAffine

    x = _images(16)
    out = np.asarray(RandomAffine(flip_horizontal=True, seed=0)(x, training=True))
    mirrored = [np.allclose(o, xi[:, ::-1], atol=1e-5) for o, xi in zip(out, x, strict=True)]
    same = [np.allclose(o, xi, atol=1e-5) for o, xi in zip(out, x, strict=True)]
    assert all(m or s for m, s in zip(mirrored, same, strict=True)) and any(mirrored) and any(same)
    np.testing.assert_allclose(np.asarray(RandomAffine(seed=0)(x, training=True)), x, atol=1e-5)
