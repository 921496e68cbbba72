"""The experimental arm: one home for its name, its directory format and the rules that pick arms.

An **arm** is what one classifier is trained on; every arm is tested on the same test split. Names:
``real``, ``real+aug``, ``real+synthetic[@ratio]``, ``real+aug+synthetic[@ratio]`` and ``tstr`` (train on
synthetic only, test on real). An **arm dir** (written by `mammosynth.train.train_arm`) holds::

    <arm dir>/arm.json                      {"arm", "seeds", "spec", "metrics": {seed: {...}}, ...}
    <arm dir>/seed-<s>/predictions.csv      image_id,label_id,prob   (label_id 1 = malignant)
    <arm dir>/seed-<s>/external_predictions.csv   same columns, on the external test set (when one is given)
    <arm dir>/seed-<s>/train_metrics.json   train_accuracy, val_auc, ... (optional)
    <arm dir>/seed-<s>/model/               the classifier (first seed(s) only)

Rules kept here: the **matched control** of each synthetic arm (what it is judged against), the
**final arm** (best mean validation AUC: the test set never picks the model) and the pairing of
classifier seeds with generators (seed k uses generator k mod G).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammosynth.atomic import write_text as write_text_atomic

ARM_FILE = "arm.json"
PREDICTIONS_FILE = "predictions.csv"
EXTERNAL_PREDICTIONS_FILE = "external_predictions.csv"  # the same seed's model on the external test set
TRAIN_METRICS_FILE = "train_metrics.json"
MODEL_DIR = "model"
PREDICTION_COLUMNS = ("image_id", "label_id", "prob")
BASELINES = ("real", "real+aug")  # arms without synthetic data, the controls of the synthetic arms
QUESTION_HELPS = "does adding synthetic data help?"
QUESTION_REPLACES = "can synthetic data replace real data?"
MAX_SYNTHETIC_RATIO = 10.0  # synthetic images per real training image, at most


@dataclass(frozen=True)
class ArmSpec:
    """What one experimental arm trains on. All arms are tested on the same real test set."""

    name: str
    use_real: bool
    augment: bool
    synthetic_ratio: float  # synthetic images per real training image (0 = none)

    @property
    def uses_synthetic(self) -> bool:
        """Whether this arm trains on synthetic images."""
        return self.synthetic_ratio > 0

    @property
    def is_tstr(self) -> bool:
        """Train on synthetic only, test on real."""
        return not self.use_real


def parse_arm(name: str, default_ratio: float = 0.5) -> ArmSpec:
    """Parse an arm name.

    The forms are ``real``, ``real+aug``, ``real+synthetic[@ratio]``, ``real+aug+synthetic[@ratio]`` and
    ``tstr`` (train on synthetic only, test on real).

    Args:
        name: the arm name, as listed in the config's ``arms``.
        default_ratio: the synthetic:real ratio of a synthetic arm written without ``@ratio``.

    Returns:
        The parsed arm.

    Raises:
        ValueError: the name is not one of these forms.
    """
    base, _, ratio_text = name.partition("@")
    parts = base.split("+")
    if base == "tstr":
        return ArmSpec(name, use_real=False, augment=False, synthetic_ratio=1.0)
    valid = parts[0] == "real" and set(parts[1:]) <= {"aug", "synthetic"} and len(set(parts)) == len(parts)
    if not valid or (ratio_text and "synthetic" not in parts):
        raise ValueError(
            f"unknown arm {name!r}; use real, real+aug, real+synthetic[@ratio], "
            "real+aug+synthetic[@ratio] or tstr"
        )
    try:
        ratio = float(ratio_text) if ratio_text else default_ratio
    except ValueError as exc:
        raise ValueError(f"arm {name!r}: ratio {ratio_text!r} is not a number") from exc
    if ratio_text and not 0 < ratio <= MAX_SYNTHETIC_RATIO:
        raise ValueError(
            f"arm {name!r}: ratio {ratio_text} is out of range; use a synthetic:real ratio in "
            f"(0, {MAX_SYNTHETIC_RATIO:g}], e.g. real+synthetic@0.5"
        )
    return ArmSpec(name, True, "aug" in parts, ratio if "synthetic" in parts else 0.0)


def matched_control(arm: str | ArmSpec) -> str | None:
    """The arm a synthetic arm is judged against: the same recipe without the synthetic images.

    ``real+synthetic@r`` → ``real``, ``real+aug+synthetic@r`` → ``real+aug``, ``tstr`` → ``real``
    (a different question: can synthetic replace real?). Arms without synthetic data have none.

    Args:
        arm: an arm name or its parsed spec.

    Returns:
        The control arm's name, or None for ``real`` and ``real+aug``.
    """
    spec = parse_arm(arm) if isinstance(arm, str) else arm
    if not spec.uses_synthetic:
        return None
    if spec.is_tstr:
        return "real"
    return "real+aug" if spec.augment else "real"


def question(arm: str | ArmSpec) -> str | None:
    """Which question an arm's matched comparison answers (`QUESTION_HELPS` / `QUESTION_REPLACES`)."""
    spec = parse_arm(arm) if isinstance(arm, str) else arm
    if not spec.uses_synthetic:
        return None
    return QUESTION_REPLACES if spec.is_tstr else QUESTION_HELPS


def generator_index(seed: int, n_generators: int) -> int:
    """The generator classifier seed ``seed`` trains with: seed k pairs with generator k mod G.

    Raises:
        ValueError: ``n_generators`` < 1.
    """
    if n_generators < 1:
        raise ValueError(f"n_generators must be >= 1, got {n_generators}")
    return int(seed) % n_generators


def seed_dir(arm_dir: str | os.PathLike, seed: int) -> Path:
    """``<arm dir>/seed-<seed>``."""
    return Path(arm_dir) / f"seed-{seed}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return str(obj)


def write_arm(
    arm_dir: str | os.PathLike,
    spec: ArmSpec,
    seeds: Sequence[int],
    metrics: dict[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """Write ``arm.json`` (atomically) once every seed's folder is complete.

    Args:
        arm_dir: the arm dir.
        spec: the arm's parsed spec.
        seeds: the classifier seeds run.
        metrics: ``{str(seed): train metrics}``.
        **extra: more fields (e.g. ``generators``: which generator each seed used).

    Returns:
        The record written.
    """
    record = {
        "arm": spec.name,
        "seeds": [int(s) for s in seeds],
        "spec": dataclasses.asdict(spec),
        "metrics": metrics,
        **extra,
    }
    text = json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n"
    write_text_atomic(Path(arm_dir) / ARM_FILE, text)
    return record


def read_arm_record(arm_dir: str | os.PathLike) -> dict[str, Any]:
    """Read and check ``arm.json`` of an arm dir (without the predictions).

    Raises:
        FileNotFoundError: arm.json is missing.
        ValueError: it is not JSON, or its ``arm`` field is not a valid arm name.
    """
    root = Path(arm_dir)
    arm_path = root / ARM_FILE
    if not arm_path.exists():
        raise FileNotFoundError(f"{arm_path} missing: {root} is not an arm dir (written by train_arm)")
    try:
        record = json.loads(arm_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{arm_path}: not valid JSON ({exc})") from exc
    name = record.get("arm")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{arm_path}: field 'arm' must be the arm name (e.g. 'real'), got {name!r}")
    parse_arm(name)  # raises with the list of valid arm forms
    return record


def _external_predictions(root: Path, seeds: Sequence[Any]) -> tuple[dict[Any, pd.DataFrame], dict[str, str]]:
    """Every seed's ``external_predictions.csv`` (and its sha256), or ``({}, {})`` when no seed has one.

    Raises:
        ValueError: some seeds have external predictions and others not (a partial arm dir).
    """
    paths = {seed: seed_dir(root, seed) / EXTERNAL_PREDICTIONS_FILE for seed in seeds}
    present = [seed for seed, path in paths.items() if path.exists()]
    if not present:
        return {}, {}
    if len(present) != len(paths):
        missing = [str(s) for s in paths if s not in present]
        raise ValueError(
            f"{root}: seed(s) {', '.join(missing)} lack {EXTERNAL_PREDICTIONS_FILE} while others have it; "
            "re-run train_arm with the external set for every seed"
        )
    frames = {seed: _read_predictions(path) for seed, path in paths.items()}
    return frames, {str(s): hashlib.sha256(p.read_bytes()).hexdigest() for s, p in paths.items()}


def _read_predictions(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: every seed of an arm needs its test predictions")
    df = pd.read_csv(path, dtype={"image_id": str})
    missing = [c for c in PREDICTION_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; expected columns {list(PREDICTION_COLUMNS)}")
    if df.empty:
        raise ValueError(f"{path}: no predictions")
    if df["image_id"].duplicated().any():
        raise ValueError(
            f"{path}: {int(df['image_id'].duplicated().sum())} duplicated image_id rows; "
            "write one prediction per test image"
        )
    bad_label = ~df["label_id"].isin([0, 1])
    if bad_label.any():
        raise ValueError(
            f"{path}: label_id must be 0 (benign) or 1 (malignant), found "
            f"{sorted(set(df.loc[bad_label, 'label_id'].astype(str)))[:5]}"
        )
    prob = pd.to_numeric(df["prob"], errors="coerce")
    bad_prob = ~(np.isfinite(prob) & (prob >= 0) & (prob <= 1))
    if bad_prob.any():
        raise ValueError(
            f"{path}: column prob must hold probabilities in [0, 1]; "
            f"{int(bad_prob.sum())} row(s) do not (e.g. {df.loc[bad_prob, 'prob'].iloc[0]!r})"
        )
    df = df.assign(prob=prob.astype(np.float64), label_id=df["label_id"].astype(int))
    # Sorting by id aligns cases across arms and seeds whatever order training wrote them in.
    return df.sort_values("image_id", kind="stable").reset_index(drop=True)


def load_arm(arm_dir: str | os.PathLike) -> dict[str, Any]:
    """Read one arm dir.

    Returns:
        ``{"arm", "dir", "spec", "seeds": [seed...], "predictions": {seed: DataFrame},
        "train_metrics": {seed: dict}, "external_predictions": {seed: DataFrame} (empty without an
        external test set), ...}`` with predictions sorted by ``image_id``.

    Raises:
        FileNotFoundError: arm.json or a seed's predictions.csv is missing.
        ValueError: malformed arm.json or predictions, or an unknown arm name.
    """
    root = Path(arm_dir)
    arm_path = root / ARM_FILE
    arm_meta = read_arm_record(root)
    name = arm_meta["arm"]
    seeds = arm_meta.get("seeds")
    if seeds is None:
        seeds = sorted(int(p.name.split("-", 1)[1]) for p in root.glob("seed-*") if p.is_dir())
    if not isinstance(seeds, list) or not seeds:
        raise ValueError(f"{arm_path}: field 'seeds' must be a non-empty list of seeds, got {seeds!r}")
    recorded = arm_meta.get("metrics") or {}
    predictions: dict[Any, pd.DataFrame] = {}
    train_metrics: dict[Any, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for seed in seeds:
        sdir = seed_dir(root, seed)
        predictions[seed] = _read_predictions(sdir / PREDICTIONS_FILE)
        hashes[str(seed)] = hashlib.sha256((sdir / PREDICTIONS_FILE).read_bytes()).hexdigest()
        tm_path = sdir / TRAIN_METRICS_FILE
        if tm_path.exists():
            try:
                train_metrics[seed] = json.loads(tm_path.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{tm_path}: not valid JSON ({exc})") from exc
        else:
            train_metrics[seed] = dict(recorded.get(str(seed)) or recorded.get(seed) or {})
    external, external_hashes = _external_predictions(root, seeds)
    return {
        "arm": name,
        "dir": str(root),
        "spec": arm_meta.get("spec") or {},
        "seeds": list(seeds),
        "predictions": predictions,
        "train_metrics": train_metrics,
        "predictions_sha256": hashes,
        "generators": arm_meta.get("generators") or {},
        "external_predictions": external,
        "external_predictions_sha256": external_hashes,
    }


def final_arm(arm_dirs: Sequence[str | os.PathLike]) -> str:
    """The arm dir with the best mean *validation* AUC over its seeds: the test set never picks the model.

    TSTR arms are selected on a synthetic validation split, so their validation AUC is not comparable
    with the real-validation arms: they are candidates only when no other arm is given.

    Raises:
        ValueError: no arm dirs given.
    """
    records = [(d, read_arm_record(d)) for d in arm_dirs]
    real_val = [(d, r) for d, r in records if parse_arm(r["arm"]).use_real]
    best, best_auc = None, -1.0
    for d, record in real_val or records:
        vals = [float(m["val_auc"]) for m in record["metrics"].values() if m.get("val_auc") is not None]
        auc = sum(vals) / len(vals) if vals else -1.0
        if auc > best_auc:
            best, best_auc = d, auc
    if best is None:
        raise ValueError("no arm results to choose a final model from")
    return str(best)


def ensemble_predictions(arm: dict[str, Any]) -> pd.DataFrame:
    """The seed ensemble of a loaded arm (`load_arm`): each case's probability averaged over seeds.

    Returns:
        ``image_id, label_id, prob`` sorted by ``image_id``.
    """
    frames = list(arm["predictions"].values())
    ref = frames[0]
    prob = np.mean([df["prob"].to_numpy() for df in frames], axis=0)
    return pd.DataFrame({"image_id": ref["image_id"], "label_id": ref["label_id"], "prob": prob})
