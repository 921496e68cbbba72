"""Typed study configuration, its named presets and the per-stage views of it.

One `StudyConfig` is resolved from the pipeline's parameters (``preset``, the typed run-form
parameters of `TYPED_PARAMETERS`, then the JSON ``overrides``: `resolve`). Each stage then receives
only the settings it reads (`STAGE_FIELDS`, `stage_view`, `from_stage_view`), so a change to one
stage's settings leaves the other stages' KFP cache keys alone. Loading a config has no side effects
and reads no globals.
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
    msg = err["msg"].removeprefix("Value error, ").replace("a valid tuple", "a list (JSON array)")
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
        overrides = load_config_overrides(overrides)
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


# Typed run-form parameters ----------------------------------------------------------------------------
# Pipeline parameter -> the config field it sets. Its "use the preset's value" value is the empty one
# (empty list, 0 or ""). `synthetic_ratios` is not a field: it rewrites the arms (`with_synthetic_ratios`).
TYPED_PARAMETERS: dict[str, str] = {
    "seeds": "seeds",
    "arms": "arms",
    "image_size": "image_size",
    "classifier": "classifier.model",
    "classifier_epochs": "classifier.epochs",
    "tune_trials": "tune.n_trials",
    "gan_kind": "gan.kind",
    "gan_steps": "gan.steps",
    "gan_seeds": "gan.seeds",
}


def with_synthetic_ratios(arms: tuple[str, ...] | list[str], ratios: list[float]) -> list[str]:
    """The arm list with its ``real+synthetic[@r]`` arms replaced by one ``real+synthetic@r`` per ratio.

    The other arms (``real``, ``real+aug``, ``real+aug+synthetic[@r]``, ``tstr``) are kept in their order;
    the generated arms take the place of the first ``real+synthetic`` arm, or follow the others when
    there is none. Each generated arm is judged against ``real`` (its matched control).

    Args:
        arms: arm names (the ``arms`` parameter, else the preset's).
        ratios: synthetic:real ratios, each in (0, 10].

    Returns:
        The new arm names (no duplicates).
    """
    from mammosynth.arms import parse_arm

    generated = [f"real+synthetic@{float(r)}" for r in ratios]
    out: list[str] = []
    for name in arms:
        base = name.partition("@")[0]
        if base == "real+synthetic":
            out += [g for g in generated if g not in out]
        elif name not in out:
            out.append(name)
    out += [g for g in generated if g not in out]
    for name in out:
        parse_arm(name)  # a ratio out of range is refused here, naming the arm
    return out


def _typed_overrides(params: dict[str, Any]) -> dict[str, Any]:
    """Nested config overrides from the typed parameters that are set (not empty / 0 / "")."""
    unknown = sorted(set(params) - set(TYPED_PARAMETERS) - {"synthetic_ratios"})
    if unknown:
        known = ", ".join(sorted([*TYPED_PARAMETERS, "synthetic_ratios"]))
        raise ValueError(f"unknown run parameter(s) {', '.join(unknown)}; known: {known}")
    nested: dict[str, Any] = {}
    for name, value in params.items():
        if name == "synthetic_ratios" or value in (None, "", 0, [], ()) or value is False:
            continue
        if name == "seeds" and isinstance(value, list | tuple):
            # KFP hands list items over as JSON numbers: 1.0 is the seed 1, 1.5 stays refused.
            value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
        section, _, leaf = TYPED_PARAMETERS[name].rpartition(".")
        (nested.setdefault(section, {}) if section else nested)[leaf] = value
    return nested


def _parameter_hint(message: str) -> str:
    """Name the run parameter next to the config field it sets: ``gan.steps (run parameter gan_steps)``."""
    head, sep, rest = message.partition(":")
    loc = head.removeprefix("config field ")
    for param, field in TYPED_PARAMETERS.items():
        if head.startswith("config field ") and (loc == field or loc.startswith(field + ".")):
            return f"{head} (run parameter {param}){sep}{rest}"
    return message


def resolve(
    preset: str = "embedded", overrides: dict[str, Any] | str | None = None, **params: Any
) -> StudyConfig:
    """The study config of a run: the preset, then the typed parameters that are set, then ``overrides``.

    Args:
        preset: a key of `PRESETS`.
        overrides: JSON object (or dict) of config fields, applied last (the advanced escape hatch).
        **params: typed run parameters (`TYPED_PARAMETERS` and ``synthetic_ratios``); an empty list,
            0 or "" keeps the preset's value.

    Returns:
        The validated, frozen config.

    Raises:
        ValueError: one line naming the field (and the run parameter that set it), the value and what
            is allowed.
    """
    base = load_config(preset)
    typed = _typed_overrides(params)
    ratios = params.get("synthetic_ratios") or []
    if ratios:
        where = "config field arms (run parameter synthetic_ratios)"
        if not isinstance(ratios, list | tuple) or not all(
            isinstance(r, int | float) and not isinstance(r, bool) for r in ratios
        ):
            raise ValueError(
                f"{where}: expects a list of numbers in (0, 10], e.g. [0.5, 1.0]; got {ratios!r}"
            )
        try:
            typed["arms"] = with_synthetic_ratios(typed.get("arms") or base.arms, list(ratios))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    try:
        with_typed = load_config(preset, typed)
    except ValueError as exc:
        raise ValueError(_parameter_hint(str(exc))) from None
    if isinstance(overrides, str):
        overrides = load_config_overrides(overrides)
    return load_config(preset, _merge(with_typed.to_dict(), overrides or {}, StudyConfig, ""))


def load_config_overrides(text: str) -> dict[str, Any]:
    """Parse a JSON ``overrides`` string (empty = none); a clear one-line error otherwise.

    Raises:
        ValueError: not JSON, or not a JSON object.
    """
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"overrides {text!r} are not valid JSON ({exc.msg} at character {exc.pos}); "
            "pass a JSON object, e.g. '{\"seeds\": [0, 1]}' (double quotes, inside single quotes)"
        ) from None
    if not isinstance(value, dict):
        raise ValueError(
            f"overrides must be a JSON object of config fields, got {value!r}; e.g. '{{\"seeds\": [0]}}'"
        )
    return value


def preset_diff(cfg: StudyConfig | StageConfig) -> dict[str, Any]:
    """The fields of a full config that differ from its preset, nested: ``overrides`` that rebuild it."""

    def diff(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in a.items():
            if isinstance(value, dict) and isinstance(b.get(key), dict) and key != "hparams":
                sub = diff(value, b[key])
                if sub:
                    out[key] = sub
            elif value != b.get(key):
                out[key] = list(value) if isinstance(value, tuple) else value
        return out

    data = cfg.to_dict()
    return diff({k: v for k, v in data.items() if k != "preset"}, load_config(data["preset"]).to_dict())


# Per-stage views ------------------------------------------------------------------------------------
# THE table of what each stage reads: a top-level field, a whole section ("gan") or one field of a
# section ("classifier.model"). A stage receives `stage_view(cfg, stage)` and nothing else, so its KFP
# cache key changes only when one of these settings does; reading any other field raises (StageConfig).
_ALL = tuple(StudyConfig.model_fields)
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "ingest": ("seed", "phantom", "abnormality", "image_kind"),  # seed + phantom: the embedded phantom
    "split": ("seed", "val_fraction", "test_fraction"),
    "preprocess": ("image_size",),
    # The external test set: ingested like the internal source (image size from the prepared set).
    "external": ("seed", "phantom", "abnormality", "image_kind"),
    "tune": (
        "seed",
        "tune",
        "classifier.model",
        "classifier.batch_size",
        "classifier.learning_rate",
        "classifier.dropout",
        "classifier.hparams",
    ),
    "gan": ("seed", "gan"),
    "synthesize": ("seed", "val_fraction", "image_size", "arms", "synthetic_ratio"),
    "card": ("seed",),
    "plan": ("arms", "synthetic_ratio"),
    "train_arm": ("seeds", "synthetic_ratio", "classifier"),
    "evaluate": ("preset", "seed", "n_bootstrap"),
    "select": ("preset", "seed"),
    "report": _ALL,  # the report records the whole config (run.json, re-run command)
}


def _check_stage(stage: str) -> tuple[str, ...]:
    if stage not in STAGE_FIELDS:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGE_FIELDS)}")
    return STAGE_FIELDS[stage]


def _settings(cfg: StudyConfig, fields: tuple[str, ...]) -> dict[str, Any]:
    data = cfg.to_dict()
    out: dict[str, Any] = {}
    for path in fields:
        section, _, leaf = path.partition(".")
        if leaf:
            out.setdefault(section, {})[leaf] = data[section][leaf]
        else:
            out[section] = data[section]
    return out


def stage_view(cfg: StudyConfig, stage: str) -> str:
    """The JSON text one stage receives: ``{"stage", "settings"}`` with only its `STAGE_FIELDS`.

    Args:
        cfg: the resolved config.
        stage: a key of `STAGE_FIELDS`.

    Returns:
        Compact JSON with sorted keys (the same config always gives the same text: a stable cache key).
    """
    settings = _settings(cfg, _check_stage(stage))
    return json.dumps({"stage": stage, "settings": settings}, sort_keys=True, separators=(",", ":"))


def from_stage_view(text: str, stage: str) -> StageConfig:
    """Rebuild (and re-validate) a stage's config from its `stage_view` text.

    Args:
        text: the view's JSON text.
        stage: the stage reading it; a view made for another stage is refused.

    Returns:
        A `StageConfig`: the stage's fields read as on `StudyConfig`, any other raises AttributeError.

    Raises:
        ValueError: not a view, a view of another stage, or a field not allowed for the stage.
    """
    fields = _check_stage(stage)
    try:
        view = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        view = None
    if not isinstance(view, dict) or not isinstance(view.get("settings"), dict):
        raise ValueError(
            f"stage {stage}: config {str(text)[:80]!r} is not a stage view (from config.stage_view)"
        )
    if view.get("stage") != stage:
        raise ValueError(
            f"stage {stage}: got the config view of stage {view.get('stage')!r}; pass its own view"
        )
    settings = view["settings"]
    extra = set(_settings(StudyConfig(), fields)) ^ set(settings)
    if extra:
        raise ValueError(f"stage {stage}: view fields {sorted(extra)} do not match STAGE_FIELDS[{stage!r}]")
    data = _merge({}, settings, StudyConfig, "")
    try:
        return StageConfig(StudyConfig.model_validate(data), stage, fields)
    except ValidationError as exc:
        raise ValueError(f"stage {stage}: {_one_line(exc)}") from None


class StageConfig:
    """A stage's read-only window on the config: its `STAGE_FIELDS` read like `StudyConfig` attributes.

    Reading a field outside the stage's view raises AttributeError naming the stage and the field, so
    a stage that needs a setting its view lacks fails loudly instead of silently using a default.
    """

    def __init__(self, cfg: BaseModel, stage: str, fields: tuple[str, ...], prefix: str = ""):
        object.__setattr__(self, "_cfg", cfg)
        object.__setattr__(self, "_where", (stage, fields, prefix))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # internals and protocols (copy, pickle): never config fields
            raise AttributeError(name)
        stage, fields, prefix = self._where
        path = prefix + name
        if any(path == f or path.startswith(f + ".") for f in fields):
            return getattr(self._cfg, name)
        if any(f.startswith(path + ".") for f in fields):
            return StageConfig(getattr(self._cfg, name), stage, fields, path + ".")
        raise AttributeError(
            f"stage {stage!r} read config field {path!r}, which is not in its view "
            f"(config.STAGE_FIELDS[{stage!r}] = {list(fields)}); add the field there"
        )

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("a stage's config is read-only")

    def __repr__(self) -> str:
        stage, fields, prefix = self._where
        return f"StageConfig(stage={stage!r}, fields={list(fields)}{', at ' + prefix if prefix else ''})"

    def to_dict(self) -> dict[str, Any]:
        """The stage's settings as plain data (only its fields)."""
        stage, fields, prefix = self._where
        if prefix:
            raise AttributeError(
                f"stage {stage!r}: to_dict() is for the whole view, not {prefix.rstrip('.')}"
            )
        return _settings(self._cfg, fields)


# The arm concept lives in `mammosynth.arms`; re-exported here for existing imports.
from mammosynth.arms import ArmSpec, parse_arm  # noqa: E402, F401
