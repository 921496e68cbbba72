"""Patient-level train/val/test split of an ingested set.

The official CBIS-DDSM split is kept (test stays test). Validation is carved from the official
training patients *by patient*, stratified by patient label, so no patient's CC and MLO views (or
other lesions) sit on both sides of a split: the study this project reproduces split by image,
which leaks. When mass and calc are pooled, a few patients appear in both official splits; they
are moved wholly to test and counted in the report.

A set without an official split (a generic labels table with no ``split`` column,
`mammosynth.data.table`) gets its test split drawn here the same way: ``test_fraction`` of the
patients, by patient, stratified by patient label; the split report says ``test split: generated,
patient-level, stratified``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mammosynth.atomic import write_text as _atomic_text
from mammosynth.logs import setup_logging

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
OFFICIAL_TEST = "official"
GENERATED_TEST = "generated, patient-level, stratified"


def _draw_patients(labels: pd.Series, fraction: float, rng: np.random.Generator) -> set[str]:
    """``fraction`` of the patients of each label (at least one per label when the label has two or more)."""
    chosen: set[str] = set()
    for label in (0, 1):
        group = sorted(labels[labels == label].index)
        n = int(round(fraction * len(group)))
        if fraction > 0 and n == 0 and len(group) >= 2:
            n = 1  # keep both classes in the drawn split so AUC is defined
        chosen.update(rng.permutation(np.array(group, dtype=object))[:n].tolist())
    return chosen


def _official_sides(index: pd.DataFrame, test_fraction: float, rng: np.random.Generator) -> tuple[set, set]:
    """``(test patients, patients found in both official splits)``; drawn when the set has no official split.

    Raises:
        ValueError: some rows have an official split and others not, or a bad ``test_fraction``.
    """
    values = set(index["official_split"])
    if values == {""}:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        return _draw_patients(patient_labels(index), test_fraction, rng), set()
    bad = values - {"train", "test"}
    if bad:
        raise ValueError(
            f"official_split must be train or test; found {sorted(bad)} "
            "(a table gives every row a split, or none)"
        )
    sides = index.groupby("patient_id")["official_split"].nunique()
    both = set(sides[sides > 1].index)
    return set(index.loc[index["official_split"] == "test", "patient_id"]) | both, both


def patient_labels(index: pd.DataFrame) -> pd.Series:
    """Majority label_id per patient (ties → malignant, the class we must not under-sample)."""
    mean = index.assign(_y=index["label_id"].astype(int)).groupby("patient_id")["_y"].mean()
    return (mean >= 0.5).astype(int)


def assign_splits(
    index: pd.DataFrame, *, val_fraction: float, seed: int, test_fraction: float = 0.2
) -> pd.DataFrame:
    """Fill the ``split`` column: official test → ``test``; official train → ``train``/``val`` by patient.

    Args:
        index: an ingested set's index (needs ``patient_id``, ``label_id``, ``official_split``).
        val_fraction: share of official-train patients (per patient label) moved to validation.
        seed: fixes the choice; the same index and seed always give the same split.
        test_fraction: when no row has an official split (``official_split`` all empty), this share of the
            patients (per patient label) is drawn as the test split first.

    Returns:
        A copy with ``split`` filled. ``result.attrs["moved_to_test"]`` counts patients found in
        both official splits and moved wholly to test; ``result.attrs["test_split"]`` is `OFFICIAL_TEST`
        or `GENERATED_TEST`.

    Raises:
        ValueError: missing columns, unknown or partly missing ``official_split`` values, or a bad fraction.
    """
    missing = {"patient_id", "label_id", "official_split"} - set(index.columns)
    if missing:
        raise ValueError(f"index lacks columns {sorted(missing)}; is this an ingested set's index.csv?")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = index.copy()
    rng = np.random.default_rng(seed)
    test_patients, both = _official_sides(out, test_fraction, rng)
    train_patients = sorted(set(out["patient_id"]) - test_patients)
    train_labels = patient_labels(out[out["patient_id"].isin(train_patients)])
    val_patients = _draw_patients(train_labels, val_fraction, rng)
    split = np.where(
        out["patient_id"].isin(test_patients),
        "test",
        np.where(out["patient_id"].isin(val_patients), "val", "train"),
    )
    out["split"] = split
    out.attrs["moved_to_test"] = len(both)
    out.attrs["test_split"] = GENERATED_TEST if set(out["official_split"]) == {""} else OFFICIAL_TEST
    if both:
        log.info("split: %d patient(s) in both official splits moved wholly to test", len(both))
    return out


def check_no_overlap(index: pd.DataFrame) -> dict[str, Any]:
    """Count patients per split and per split pair.

    Returns:
        ``{"patients": {split: n}, "images": {split: n}, "overlap": {"train&val": 0, ...}}``.

    Raises:
        ValueError: some patient is in two splits (names how many per pair, never who).
    """
    groups = {s: set(index.loc[index["split"] == s, "patient_id"]) for s in SPLITS}
    overlap = {f"{a}&{b}": len(groups[a] & groups[b]) for a, b in combinations(SPLITS, 2)}
    report = {
        "patients": {s: len(p) for s, p in groups.items()},
        "images": {s: int((index["split"] == s).sum()) for s in SPLITS},
        "overlap": overlap,
    }
    if any(overlap.values()):
        raise ValueError(
            f"patient overlap between splits: {overlap}; a patient must sit in exactly one split"
        )
    return report


def kfold(index: pd.DataFrame, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Patient-grouped, label-stratified K folds over the non-test rows.

    Returns:
        ``k`` pairs of (train row positions, validation row positions) into ``index``.

    Raises:
        ValueError: ``k`` < 2 or fewer patients than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    pool = np.flatnonzero((index["official_split"] != "test").to_numpy())
    sub = index.iloc[pool]
    if k < 2 or sub["patient_id"].nunique() < k:
        raise ValueError(
            f"k-fold needs 2 ≤ k ≤ number of training patients ({sub['patient_id'].nunique()}), got {k}"
        )
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(pool[tr], pool[va]) for tr, va in cv.split(sub, sub["label_id"].astype(int), sub["patient_id"])]


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)  # same filesystem: no copy of the pixels
    except OSError:
        shutil.copy2(src, dst)


def run_split(
    ingested_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    val_fraction: float,
    seed: int,
    eda: bool = True,
    test_fraction: float = 0.2,
) -> dict[str, Any]:
    """Write the ingested set again with ``split`` filled, plus ``split_report.json`` and EDA.

    ``test_fraction`` is used only by a set without an official split (see `assign_splits`); the report's
    ``test_split`` says which kind of test split the set got.

    Images are hard-linked when possible (copied otherwise); ``index.csv`` gets the split column.

    Returns:
        The split report (patients/images per split, overlaps (all 0), label counts, moved patients).

    Raises:
        FileNotFoundError: ``ingested_dir`` has no ``index.csv``.
        ValueError: see `assign_splits` / `check_no_overlap`.
    """
    src, out = Path(ingested_dir), Path(out_dir)
    index_path = src / "index.csv"
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} missing: {src} is not an ingested set (run ingest first)")
    index = pd.read_csv(index_path, dtype=str, keep_default_na=False)
    if index.empty:
        raise ValueError(f"{index_path} has no rows; nothing to split (see {src / 'rejects.csv'})")
    result = assign_splits(index, val_fraction=val_fraction, seed=seed, test_fraction=test_fraction)
    report = check_no_overlap(result)
    report.update(
        seed=seed,
        val_fraction=val_fraction,
        moved_to_test=int(result.attrs.get("moved_to_test", 0)),
        labels={
            s: {
                lab: int(((result["split"] == s) & (result["label"] == lab)).sum())
                for lab in ("benign", "malignant")
            }
            for s in SPLITS
        },
        patient_level=True,
        test_split=result.attrs["test_split"],
        test_fraction=test_fraction if result.attrs["test_split"] == GENERATED_TEST else None,
    )
    for split in ("train", "val", "test"):
        if report["images"][split] == 0 and (split != "val" or val_fraction > 0):
            raise ValueError(
                f"split {split!r} is empty (images per split: {report['images']}); "
                "need more patients or another val_fraction"
            )
    out.mkdir(parents=True, exist_ok=True)
    if src.resolve() != out.resolve():
        for rel in sorted(set(result["image_path"])):
            _link_or_copy(src / rel, out / rel)
        for name in ("rejects.csv", "manifest.json"):
            if (src / name).exists():
                _link_or_copy(src / name, out / name)
    _atomic_text(out / "index.csv", result.to_csv(index=False, lineterminator="\n"))
    _atomic_text(out / "split_report.json", json.dumps(report, indent=2))
    if eda:
        from mammosynth.eda import write_eda

        write_eda(result, out / "eda")
    log.info(
        "split: images %s, patients %s, moved to test %d, test split: %s",
        report["images"],
        report["patients"],
        report["moved_to_test"],
        report["test_split"],
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.data.split``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    from mammosynth.config import load_config

    defaults = load_config("embedded")
    parser = argparse.ArgumentParser(
        prog="mammosynth split",
        description="Patient-level train/val/test split of an ingested set (official test kept).",
    )
    parser.add_argument("--input", required=True, help="ingested set directory")
    parser.add_argument("--out", required=True, help="directory for the split set")
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=defaults.val_fraction,
        help="share of training patients used for validation",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=defaults.test_fraction,
        help="share of patients drawn as the test split when the set has no official split",
    )
    args = parser.parse_args(argv)
    report = run_split(
        args.input, args.out, val_fraction=args.val_fraction, seed=args.seed, test_fraction=args.test_fraction
    )
    print(f"split set written to {args.out}: images {report['images']}, patients {report['patients']}")
    return 0


if __name__ == "__main__":
    import sys

    setup_logging()
    sys.exit(main())
