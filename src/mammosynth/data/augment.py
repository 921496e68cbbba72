"""Training-time augmentation as Keras layers (`mammosynth.models.layers`).

`build_augmenter(AugmentConfig(...))` returns a `keras.Sequential` applied to batches of
(N,S,S,1) float [0,1] images in the tf.data input pipeline (`mammosynth.data.shards.dataset`),
never inside the saved classifier, so serving sees unaugmented images. Every layer is the identity
when called with ``training=False``.

The defaults follow the study's augmentation (rotation, shift, shear, zoom, horizontal flip) plus
intensity changes that mammograms vary by between scanners (brightness, contrast, blur, histogram
equalisation). Geometric transforms are fused into one warp per batch (`RandomAffine`): Keras'
separate Random* layers warp once each and were 2× slower than the study's ImageDataGenerator.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import keras

from mammosynth.models.layers import RandomAffine, RandomEqualization, RandomGaussianBlur, RandomIntensity

VALUE_RANGE = (0.0, 1.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Which augmentations run and how strongly; 0 / False switches one off.

    Attributes:
        rotation: max rotation as a fraction of a full turn (0.05 = ±18°).
        shift: max translation as a fraction of the image side.
        shear: max shear factor.
        zoom: max zoom in/out fraction.
        flip_horizontal: mirror left/right (laterality is not a label, so mirroring is safe).
        flip_vertical: mirror top/bottom.
        brightness: max brightness change as a fraction of the value range.
        contrast: max contrast factor change.
        blur_sigma: max Gaussian blur sigma in pixels (0 = off).
        blur_rate: share of images blurred when blur is on (strength random per image).
        equalize_rate: share of images histogram-equalised (0 = off).
        equalize_clip: CLAHE-like clip limit for equalisation; None = plain global equalisation.
        fill_mode: how geometric transforms fill uncovered pixels.
    """

    rotation: float = 0.05
    shift: float = 0.1
    shear: float = 0.1
    zoom: float = 0.1
    flip_horizontal: bool = True
    flip_vertical: bool = False
    brightness: float = 0.1
    contrast: float = 0.1
    blur_sigma: float = 0.0
    blur_rate: float = 0.5
    equalize_rate: float = 0.0
    equalize_clip: float | None = 2.0
    fill_mode: str = "reflect"

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AugmentConfig:
        """Build from a dict (e.g. JSON overrides), naming any unknown key.

        Raises:
            ValueError: an unknown field.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data or {}) - known
        if unknown:
            raise ValueError(f"unknown augmentation option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**(data or {}))

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-serialisable; `from_dict` reads it back)."""
        return dataclasses.asdict(self)


# The study's augmentation (ImageDataGenerator rotation/shift/shear/zoom/flip), no intensity changes:
# what the bench compares against.
STUDY_AUGMENT = AugmentConfig(brightness=0.0, contrast=0.0)


def build_augmenter(config: AugmentConfig | None = None, seed: int | None = None) -> keras.Sequential:
    """The augmentation pipeline for ``config`` (defaults: `AugmentConfig()`).

    Args:
        config: which augmentations to apply.
        seed: base seed; each random layer gets its own derived seed so runs repeat.

    Returns:
        A `keras.Sequential` over (N,S,S,C) float [0,1] batches; identity unless ``training=True``.
    """
    cfg = config or AugmentConfig()
    base = 0 if seed is None else int(seed) * 10

    def s(k: int) -> int | None:
        return None if seed is None else base + k

    layers: list[keras.layers.Layer] = []
    if cfg.rotation or cfg.shift or cfg.shear or cfg.zoom or cfg.flip_horizontal or cfg.flip_vertical:
        layers.append(
            RandomAffine(
                cfg.rotation,
                cfg.shift,
                cfg.shear,
                cfg.zoom,
                cfg.flip_horizontal,
                cfg.flip_vertical,
                cfg.fill_mode,
                seed=s(1),
                name="affine",
            )
        )
    if cfg.brightness or cfg.contrast:
        layers.append(RandomIntensity(cfg.brightness, cfg.contrast, seed=s(2), name="intensity"))
    if cfg.blur_sigma:
        layers.append(RandomGaussianBlur(cfg.blur_sigma, cfg.blur_rate, seed=s(3), name="blur"))
    if cfg.equalize_rate:
        layers.append(RandomEqualization(cfg.equalize_rate, cfg.equalize_clip, seed=s(4), name="equalize"))
    # Geometric transforms interpolate and intensity ones can overshoot: keep the [0,1] contract.
    layers.append(keras.layers.Lambda(lambda x: keras.ops.clip(x, 0.0, 1.0), name="clip01"))
    return keras.Sequential(layers, name="augment")
