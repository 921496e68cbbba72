"""Typed study configuration and its named presets.

One `StudyConfig` travels from pipeline parameter (``preset`` + JSON ``overrides``) to component
parameter to core-function keyword. Loading a config has no side effects and reads no globals.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, field_validator

from mammosynth.registry import CLASSIFIER_NAMES, GAN_KINDS

CLASS_NAMES = ("benign", "malignant")  # label_id 0, 1; malignant is the positive class
# Said wherever users read labels (model.json, report, README): the student study used malignant = 0.
LABEL_CONVENTION = "malignant = 1 is the positive class (the original study used malignant = 0)"


Pos = Annotated[StrictInt, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PhantomConfig(_Section):
    """Embedded dataset size (see `mammosynth.data.phantom`)."""

    n_patients: Annotated[StrictInt, Field(ge=8)] = 260
    crop_size: Annotated[StrictInt, Field(ge=16)] = 160  # stored crop side before preprocessing


class ClassifierConfig(_Section):
    """The classifier every arm trains (`mammosynth.train.train_classifier`)."""

    model: Literal[CLASSIFIER_NAMES] = "simple_cnn"
    epochs: Pos = 14
    batch_size: Pos = 32
    learning_rate: Annotated[float, Field(gt=0, lt=1, strict=True)] = 1e-3
    dropout: Annotated[float, Field(ge=0, lt=1, strict=True)] = 0.3
    patience: Pos = 4  # early stopping on validation AUC (never before half of the epochs)
    # Extra keyword arguments of the builder (`mammosynth.models.classifiers.build_<model>`).
    hparams: dict[str, Any] = Field(default_factory=dict)


class TuneConfig(_Section):
    """Hyperparameter search (`mammosynth.tune`)."""

    backend: Literal["optuna", "katib"] = "optuna"  # "optuna" locally, "katib" in the cluster
    n_trials: Pos = 3
    epochs_per_trial: Pos = 6
    algorithm: StrictStr = "tpe"
    timeout_s: Pos = 3600


class GanConfig(_Section):
    """Conditional generator training (`mammosynth.gan`)."""

    kind: Literal[GAN_KINDS] = "stable-cgan"  # or "seed-cgan" (the study's architecture)
    steps: Pos = 1500
    batch_size: Pos = 32
    latent_dim: Pos = 64
    learning_rate: Annotated[float, Field(gt=0, lt=1, strict=True)] = 2e-4
    checkpoint_every: Pos = 250
    seeds: Pos = 1  # generators trained (one per GAN seed); classifier seed k uses generator k mod seeds


class StudyConfig(_Section):
    """The whole study's configuration; load it with `load_config`."""

    preset: StrictStr = "embedded"
    seed: Annotated[StrictInt, Field(ge=0)] = 2026  # fixes the split and the embedded dataset
    seeds: Annotated[tuple[Annotated[StrictInt, Field(ge=0)], ...], Field(min_length=1)] = (0, 1, 2, 3, 4)
    image_size: Annotated[StrictInt, Field(ge=16, le=2048)] = 64
    abnormality: StrictStr = "mass"
    image_kind: StrictStr = "crop"
    val_fraction: Annotated[float, Field(gt=0, lt=0.5, strict=True)] = 0.15
    # Test share drawn (patient-level, label-stratified) when the data has no official split (a table).
    test_fraction: Annotated[float, Field(gt=0, lt=0.5, strict=True)] = 0.2
    arms: Annotated[tuple[StrictStr, ...], Field(min_length=1)] = ("real", "real+aug", "real+synthetic")
    # synthetic:real ratio for arms without an explicit ratio
    synthetic_ratio: Annotated[float, Field(ge=0, le=10, strict=True)] = 0.5
    n_bootstrap: Annotated[StrictInt, Field(ge=100)] = 2000
    phantom: PhantomConfig = Field(default_factory=PhantomConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    gan: GanConfig = Field(default_factory=GanConfig)

    @field_validator("seeds", "arms")
    @classmethod
    def _unique(cls, value: tuple) -> tuple:
        if len(set(value)) != len(value):
            raise ValueError(f"repeated entries in {list(value)}; list each once")
        return value

    @field_validator("arms")
    @classmethod
    def _known_arms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        try:  # one parser for arm names (mammosynth.arms once it exists)
            from mammosynth.arms import parse_arm as parse
        except ImportError:
            parse = parse_arm
        for name in value:
            parse(name)
        return value

    def to_dict(self) -> dict[str, Any]:
        """The config as plain data (tuples for the sequence fields)."""
        return self.model_dump()

    def to_json(self) -> str:
        """The config as a JSON object with sorted keys."""
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
    # A narrow simple CNN trained 10 epochs without early stop (at 5 epochs most seeds of this small
    # CNN were still at chance: measured val AUC ~0.5), two 500-step generators; <= 10 min on 2 cores
    # (run.json of `make run` records the measured stage times).
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
            "epochs": 10,
            "batch_size": 16,
            "patience": 10,
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


def _merge(base: dict[str, Any], overrides: dict[str, Any], model: type[BaseModel], where: str) -> dict:
    """Deep-merge ``overrides`` into ``base`` (plain dicts), refusing fields ``model`` does not have."""
    if not isinstance(overrides, dict):
        raise ValueError(f"config field {where.rstrip('.') or '(root)'} expects an object, got {overrides!r}")
    merged = dict(base)
    for key, value in overrides.items():
        if key not in model.model_fields:
            known = ", ".join(sorted(model.model_fields))
            raise ValueError(f"unknown config field {where}{key}; known fields: {known}")
        sub = model.model_fields[key].annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            merged[key] = _merge(merged.get(key, {}), value, sub, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def _one_line(exc: ValidationError) -> str:
    """The first validation error as ``config field F: problem (got V)``; allowed values in the message."""
    err = exc.errors(include_url=False)[0]
    loc = ".".join(str(part) for part in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"config field {loc}: {msg}; got {err.get('input')!r}{more}"


def load_config(preset: str = "embedded", overrides: dict[str, Any] | str | None = None) -> StudyConfig:
    """Build the config of a named preset, then apply overrides (a dict or a JSON object string).

    Args:
        preset: a key of `PRESETS`.
        overrides: nested fields to change, e.g. ``{"gan": {"steps": 100}}``.

    Returns:
        The validated, frozen config.

    Raises:
        ValueError: unknown preset or field (naming the known ones), or a value of the wrong type, out
            of range or not among the allowed values (one line: field, value, what is allowed).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides) if overrides.strip() else {}
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"overrides {overrides!r} are not valid JSON ({exc.msg} at character {exc.pos}); "
                "pass a JSON object, e.g. '{\"seeds\": [0, 1]}' (double quotes, inside single quotes)"
            ) from None
    if overrides is not None and not isinstance(overrides, dict):
        raise ValueError(
            f"overrides must be a JSON object of config fields, got {overrides!r}; e.g. '{{\"seeds\": [0]}}'"
        )
    data = _merge({}, {**PRESETS[preset], "preset": preset}, StudyConfig, "")
    data = _merge(data, overrides or {}, StudyConfig, "")
    try:
        return StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(_one_line(exc)) from None


def from_dict(data: dict[str, Any]) -> StudyConfig:
    """Rebuild a config written by `StudyConfig.to_dict` (e.g. from a report)."""
    data = dict(data)
    preset = data.pop("preset", "embedded")
    return load_config(preset, data)


# The arm concept lives in `mammosynth.arms`; re-exported here for existing imports.
from mammosynth.arms import ArmSpec, parse_arm  # noqa: E402, F401
