"""Typed study configuration and its named presets.

One `StudyConfig` travels from pipeline parameter (``preset`` + JSON ``overrides``) to component
parameter to core-function keyword. Loading a config has no side effects and reads no globals.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

CLASS_NAMES = ("benign", "malignant")  # label_id 0, 1; malignant is the positive class


@dataclass(frozen=True)
class PhantomConfig:
    """Embedded dataset size (see `mammosynth.data.phantom`)."""

    n_patients: int = 260
    crop_size: int = 160  # stored crop side before preprocessing (real crops are hundreds of px)


@dataclass(frozen=True)
class ClassifierConfig:
    model: str = "simple_cnn"
    epochs: int = 14
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.3
    patience: int = 4  # early stopping on validation AUC (never before half of the epochs)
    # Extra keyword arguments of the builder (`mammosynth.models.classifiers.build_<model>`).
    hparams: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TuneConfig:
    backend: str = "optuna"  # "optuna" locally, "katib" in the cluster
    n_trials: int = 3
    epochs_per_trial: int = 6
    algorithm: str = "tpe"
    timeout_s: int = 3600


@dataclass(frozen=True)
class GanConfig:
    kind: str = "stable-cgan"  # or "seed-cgan" (the study's architecture)
    steps: int = 1500
    batch_size: int = 32
    latent_dim: int = 64
    learning_rate: float = 2e-4
    checkpoint_every: int = 250
    seeds: int = 1  # generators trained (one per GAN seed); classifier seed k uses generator k mod seeds


@dataclass(frozen=True)
class StudyConfig:
    preset: str = "embedded"
    seed: int = 2026  # fixes the split and the embedded dataset
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # repeats per arm
    image_size: int = 64
    abnormality: str = "mass"
    image_kind: str = "crop"
    val_fraction: float = 0.15
    arms: tuple[str, ...] = ("real", "real+aug", "real+synthetic")
    synthetic_ratio: float = 0.5  # synthetic:real ratio for arms without an explicit ratio
    n_bootstrap: int = 2000
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    gan: GanConfig = field(default_factory=GanConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


PRESETS: dict[str, dict[str, Any]] = {
    # Seconds-scale: unit/pipeline tests.
    "tiny": {
        "image_size": 32,
        "seeds": [0, 1],
        "arms": ["real", "real+synthetic"],
        "n_bootstrap": 200,
        "phantom": {"n_patients": 48, "crop_size": 64},
        "classifier": {"epochs": 2, "batch_size": 16, "patience": 2},
        "tune": {"n_trials": 2, "epochs_per_trial": 1},
        "gan": {"steps": 20, "batch_size": 16, "latent_dim": 16, "checkpoint_every": 10, "seeds": 1},
    },
    # `make run`: the whole study design on 2 CPU cores: 6 arms x 5 classifier seeds, 2 GAN seeds.
    # Sized for <= 10 minutes on 2 cores (estimate; the previous 3-arm, 10-epoch, 800-step preset took
    # ~7.5 min): a narrow simple CNN trained for 5 epochs without early stop, two 500-step generators.
    "embedded": {
        "arms": [
            "real",
            "real+aug",
            "real+synthetic@0.5",
            "real+synthetic@1.0",
            "real+aug+synthetic",
            "tstr",
        ],
        "classifier": {
            "epochs": 5,
            "batch_size": 16,
            "patience": 5,
            "hparams": {"filters": [8, 16, 32], "dense_units": 64},
        },
        "tune": {"n_trials": 2, "epochs_per_trial": 4},
        # A short run needs a faster learning rate: at 2e-4 the generator is still noise at 600 steps.
        "gan": {"steps": 500, "learning_rate": 1e-3, "checkpoint_every": 250, "seeds": 2},
    },
    # The cluster configuration: real CBIS-DDSM masses, 224², transfer learning on GPUs.
    "cbis-ddsm": {
        "image_size": 224,
        "seeds": [0, 1, 2, 3, 4],
        "arms": [
            "real",
            "real+aug",
            "real+synthetic@0.25",
            "real+synthetic@0.5",
            "real+synthetic@1.0",
            "real+aug+synthetic",
            "tstr",
        ],
        "classifier": {
            "model": "inception_resnet_v2",
            "epochs": 40,
            "batch_size": 32,
            "learning_rate": 1e-4,
            "patience": 8,
        },
        "tune": {"backend": "katib", "n_trials": 24, "epochs_per_trial": 10},
        "gan": {"steps": 40000, "batch_size": 64, "latent_dim": 128, "checkpoint_every": 1000, "seeds": 3},
    },
}


def _merge(base: Any, overrides: dict[str, Any], where: str) -> Any:
    if not dataclasses.is_dataclass(base):
        raise TypeError(f"{where}: cannot apply overrides to {type(base).__name__}")
    known = {f.name: f for f in dataclasses.fields(base)}
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown config field {where}{key}; known fields: {', '.join(sorted(known))}")
        current = getattr(base, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config field {where}{key} expects an object, got {value!r}")
            changes[key] = _merge(current, value, f"{where}{key}.")
        elif isinstance(current, tuple):
            changes[key] = tuple(value)
        else:
            changes[key] = type(current)(value) if current is not None else value
    return dataclasses.replace(base, **changes)


def load_config(preset: str = "embedded", overrides: dict[str, Any] | str | None = None) -> StudyConfig:
    """Build the config of a named preset, then apply overrides (a dict or a JSON object string).

    Raises:
        ValueError: unknown preset or field, naming the known ones.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    cfg = _merge(StudyConfig(), {**PRESETS[preset], "preset": preset}, "")
    if isinstance(overrides, str):
        overrides = json.loads(overrides) if overrides.strip() else {}
    return _merge(cfg, overrides or {}, "") if overrides else cfg


def from_dict(data: dict[str, Any]) -> StudyConfig:
    """Rebuild a config written by `StudyConfig.to_dict` (e.g. from a report)."""
    data = dict(data)
    preset = data.pop("preset", "embedded")
    return load_config(preset, data)


# The arm concept lives in `mammosynth.arms`; re-exported here for existing imports.
from mammosynth.arms import ArmSpec, parse_arm  # noqa: E402, F401
