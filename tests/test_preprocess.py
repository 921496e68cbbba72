"""The one preprocessing function training and serving share."""

import numpy as np
import pytest
from PIL import Image

from mammosynth.preprocess import prepare_image


def _reference(arr: np.ndarray, size: int) -> np.ndarray:
    lo, hi = np.percentile(arr.astype(np.float64), [0.5, 99.5])
    norm = np.clip((arr.astype(np.float64) - lo) / (hi - lo), 0, 1).astype(np.float32)
    return np.asarray(Image.fromarray(norm, mode="F").resize((size, size), Image.BOX), np.float32)


def test_resize_matches_a_plain_float32_box_resize():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 65535, size=(150, 170)).astype(np.uint16)
    out = prepare_image(img, 64)
    assert out.shape == (64, 64, 1) and out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[..., 0], _reference(img, 64), atol=1e-4)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32, np.float64])
def test_any_dtype_maps_to_unit_range(dtype):
    img = (np.linspace(0, 200, 100 * 80).reshape(100, 80)).astype(dtype)
    out = prepare_image(img, 32)
    assert out.min() >= 0.0 and out.max() <= 1.0 and out.max() > 0.9


def test_colour_and_single_channel_inputs_agree_with_gray():
    gray = np.tile(np.arange(64, dtype=np.uint8), (64, 1))
    rgb = np.stack([gray] * 3, axis=-1)
    np.testing.assert_allclose(prepare_image(rgb, 32), prepare_image(gray, 32), atol=1e-5)
    np.testing.assert_allclose(prepare_image(gray[..., None], 32), prepare_image(gray, 32))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros((4, 4, 4, 4)), "expected a 2-D image"),
        (np.zeros((1, 10)), "too small"),
        (np.full((8, 8), np.nan), "NaN"),
    ],
)
def test_bad_arrays_say_what_is_wrong(bad, match):
    with pytest.raises(ValueError, match=match):
        prepare_image(bad, 16)
