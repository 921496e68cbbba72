"""External test set: prepared like the internal one (same ingest, image size), its patients checked."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from mammosynth import external, ingest, study
from mammosynth.data import phantom, shards, split
from mammosynth.preprocess import run_preprocess


def _png(value: int, seed: int) -> bytes:
    arr = np.clip(np.random.default_rng(seed).normal(value, 20, (30, 30)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def table_folder(root, n_patients: int = 8, prefix: str = "B", bad_row: bool = True):
    """A small labels.csv folder (site B), one malformed row when ``bad_row``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["image_path,patient_id,label"]
    for p in range(n_patients):
        (root / f"{p}.png").write_bytes(_png(100 + 60 * (p % 2), p))
        lines.append(f"{p}.png,{prefix}{p},{'malignant' if p % 2 else 'benign'}")
    if bad_row:
        lines.append("missing.png,X,benign")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def internal(tmp_path_factory):
    root = tmp_path_factory.mktemp("internal")
    phantom.generate(root / "src", n_patients=12, seed=0, crop_size=32)
    ingest.run_ingest(root / "src", root / "ing", eda=False)
    split.run_split(root / "ing", root / "split", val_fraction=0.2, seed=0, eda=False)
    run_preprocess(root / "split", root / "prep", image_size=16)
    return root / "prep"


def test_prepare_external_from_a_table(internal, tmp_path):
    src = table_folder(tmp_path / "siteB")
    meta = external.prepare_external(src, tmp_path / "ext", prepared_dir=internal, label="site-b")
    assert meta["image_size"] == 16 and shards.splits(tmp_path / "ext") == ["test"]
    assert meta["counts"]["test"] == {"benign": 4, "malignant": 4}
    rec = meta[external.EXTERNAL_KEY]
    assert rec["source"] == "site-b" and rec["source_layout"] == "table" and rec["data_source"] == "table"
    assert (rec["rows_in"], rec["rows_out"], rec["rejected"]) == (9, 8, 1)
    assert rec["patients_also_internal"] == 0
    assert "missing file" in (tmp_path / "ext" / "rejects.csv").read_text()
    images, labels, _ = shards.read_split(tmp_path / "ext", "test")
    assert images.shape == (8, 16, 16, 1) and sorted(labels.tolist()) == [0] * 4 + [1] * 4
    assert external.external_dir_or_none(tmp_path / "ext") == str(tmp_path / "ext")
    assert external.external_dir_or_none(internal) is None  # the internal prepared set is not external


def test_external_patients_shared_with_the_internal_set_are_counted(internal, tmp_path):
    # The internal phantom's own folder as the "external" set: every patient is shared.
    src = tmp_path / "same"
    phantom.generate(src, n_patients=12, seed=0, crop_size=32)
    meta = external.prepare_external(src, tmp_path / "ext", prepared_dir=internal)
    assert (
        meta[external.EXTERNAL_KEY]["patients_also_internal"] == meta[external.EXTERNAL_KEY]["patients"] > 0
    )


def test_one_class_external_set_is_refused(internal, tmp_path):
    src = tmp_path / "benign-only"
    src.mkdir()
    (src / "a.png").write_bytes(_png(100, 0))
    (src / "labels.csv").write_text("image_path,patient_id,label\na.png,p,0\n")
    with pytest.raises(ValueError, match="needs benign and malignant"):
        external.prepare_external(src, tmp_path / "ext", prepared_dir=internal)


def test_external_step_without_a_source_marks_none(internal, tmp_path):
    assert study.external_step("", str(internal), str(tmp_path / "none"), preset="tiny") == {
        "external": False
    }
    assert json.loads((tmp_path / "none" / external.NONE_FILE).read_text()) == {"external_source": ""}
    assert external.external_dir_or_none(tmp_path / "none") is None
    result = study.external_step(
        str(table_folder(tmp_path / "b")), str(internal), str(tmp_path / "e"), preset="tiny"
    )
    assert result == {"external": True, "n_test": 8, "rejected": 1}
