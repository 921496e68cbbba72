"""Patient-level split: official test kept, validation by patient, no overlap, reproducible."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mammosynth import ingest
from mammosynth.data import phantom, split


def _index(n_patients: int = 60, seed: int = 0, both_sides: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        official = "test" if p % 5 == 0 else "train"
        label = int(rng.random() < 0.45)
        for k in range(int(rng.integers(1, 4))):
            rows.append(
                {
                    "image_id": f"mass-{official}-P_{p:05d}-LEFT-CC-{k + 1}",
                    "patient_id": f"P_{p:05d}",
                    "label": ["benign", "malignant"][label],
                    "label_id": str(label),
                    "official_split": official,
                    "split": "",
                    "image_path": "",
                }
            )
    for p in range(1, 1 + both_sides):  # a pooled mass+calc patient seen on both official sides
        rows.append(
            {
                "image_id": f"calc-test-P_{p:05d}-LEFT-CC-1",
                "patient_id": f"P_{p:05d}",
                "label": "benign",
                "label_id": "0",
                "official_split": "test",
                "split": "",
                "image_path": "",
            }
        )
    return pd.DataFrame(rows)


def test_official_test_kept_and_val_carved_by_patient():
    index = _index()
    out = split.assign_splits(index, val_fraction=0.2, seed=1)
    assert (out.loc[index["official_split"] == "test", "split"] == "test").all()
    assert set(out.loc[index["official_split"] == "train", "split"]) == {"train", "val"}
    report = split.check_no_overlap(out)
    assert report["overlap"] == {"train&val": 0, "train&test": 0, "val&test": 0}
    val_patients = out.loc[out["split"] == "val", "patient_id"].unique()
    train_patients = index.loc[index["official_split"] == "train", "patient_id"].nunique()
    assert abs(len(val_patients) - 0.2 * train_patients) <= 2
    # Stratified by patient label: both classes in validation.
    assert set(split.patient_labels(out[out["split"] == "val"])) == {0, 1}
    assert out["patient_id"].equals(index["patient_id"]) and out.index.equals(index.index)


def test_reproducible_per_seed():
    index = _index()
    a = split.assign_splits(index, val_fraction=0.2, seed=5)
    b = split.assign_splits(index, val_fraction=0.2, seed=5)
    c = split.assign_splits(index, val_fraction=0.2, seed=6)
    assert a["split"].equals(b["split"])
    assert not a["split"].equals(c["split"])


def test_patients_on_both_official_sides_move_wholly_to_test():
    index = _index(both_sides=3)
    out = split.assign_splits(index, val_fraction=0.2, seed=0)
    assert out.attrs["moved_to_test"] == 3
    for pid in ("P_00001", "P_00002", "P_00003"):
        assert set(out.loc[out["patient_id"] == pid, "split"]) == {"test"}
    split.check_no_overlap(out)


def test_overlap_is_detected():
    index = _index()
    out = split.assign_splits(index, val_fraction=0.2, seed=0)
    victim = out.index[out["split"] == "train"][0]
    other = out.loc[(out["split"] == "test")].iloc[0]["patient_id"]
    out.loc[victim, "patient_id"] = other
    with pytest.raises(ValueError, match="overlap"):
        split.check_no_overlap(out)


def test_bad_arguments():
    with pytest.raises(ValueError, match="val_fraction"):
        split.assign_splits(_index(), val_fraction=1.5, seed=0)
    with pytest.raises(ValueError, match="lacks columns"):
        split.assign_splits(pd.DataFrame({"patient_id": ["P_1"]}), val_fraction=0.1, seed=0)
    bad = _index()
    bad.loc[0, "official_split"] = "holdout"
    with pytest.raises(ValueError, match="holdout"):
        split.assign_splits(bad, val_fraction=0.1, seed=0)


def test_kfold_is_patient_grouped():
    index = _index(n_patients=80)
    folds = split.kfold(index, 4, seed=0)
    assert len(folds) == 4
    seen_val = []
    for tr, va in folds:
        assert not set(index.iloc[tr]["patient_id"]) & set(index.iloc[va]["patient_id"])
        assert (index.iloc[np.concatenate([tr, va])]["official_split"] == "train").all()
        seen_val.extend(va.tolist())
    assert sorted(seen_val) == sorted(np.flatnonzero(index["official_split"] == "train").tolist())


def test_run_split_on_an_ingested_set(tmp_path):
    src = phantom.generate(tmp_path / "src", n_patients=20, seed=3, crop_size=32)
    ingest.run_ingest(src, tmp_path / "ing", eda=False)
    report = split.run_split(tmp_path / "ing", tmp_path / "split", val_fraction=0.2, seed=9)
    index = pd.read_csv(tmp_path / "split" / "index.csv", dtype=str, keep_default_na=False)
    assert set(index["split"]) == {"train", "val", "test"}
    assert all((tmp_path / "split" / p).is_file() for p in index["image_path"])
    saved = json.loads((tmp_path / "split" / "split_report.json").read_text())
    assert saved == report and all(v == 0 for v in report["overlap"].values())
    assert sum(report["images"].values()) == len(index)
    assert (tmp_path / "split" / "eda" / "split_balance.png").exists()
    assert "val" in (tmp_path / "split" / "eda" / "summary.md").read_text()
    again = split.run_split(tmp_path / "ing", tmp_path / "split2", val_fraction=0.2, seed=9)
    assert again == report
    assert (
        split.main(
            [
                "--input",
                str(tmp_path / "ing"),
                "--out",
                str(tmp_path / "s3"),
                "--seed",
                "9",
                "--val-fraction",
                "0.2",
            ]
        )
        == 0
    )


def test_run_split_needs_an_ingested_set(tmp_path):
    with pytest.raises(FileNotFoundError, match="run ingest first"):
        split.run_split(tmp_path, tmp_path / "out", val_fraction=0.1, seed=0)
