"""The generic table layout (labels.csv + images): every image format and bit depth, malformed tables,
de-identification, and the generated patient-level test split."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammosynth import ingest, provenance
from mammosynth.data import phantom, split, table

HEADER = ["image_path", "patient_id", "label", "view", "laterality"]


def _gray(seed: int, dtype=np.uint8, shape=(40, 36)) -> np.ndarray:
    hi = 255 if dtype == np.uint8 else 65535
    return np.random.default_rng(seed).integers(hi // 8, hi, shape).astype(dtype)


def _pnm16(arr: np.ndarray) -> bytes:
    """A binary 16-bit PGM (P5, maxval 65535, big-endian samples) written by hand."""
    return f"P5\n{arr.shape[1]} {arr.shape[0]}\n65535\n".encode() + arr.astype(">u2").tobytes()


def _save(img: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _files() -> dict[str, tuple[bytes, tuple[int, int], int]]:
    """name → (bytes, shape, bits) for every supported format and bit depth."""
    g8, g16 = _gray(1), _gray(2, np.uint16)
    rgb = np.stack([_gray(3), _gray(4), _gray(5)], axis=-1)
    dicom = phantom.dicom_bytes(
        _gray(6, np.uint16),
        folder="X",
        series_description="cropped images",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        laterality="LEFT",
        view="CC",
    )
    return {
        "png8.png": (_save(g8, "PNG"), g8.shape, 8),
        "png16.png": (_save(g16, "PNG"), g16.shape, 16),
        "rgb.png": (_save(rgb, "PNG"), g8.shape, 8),
        "gray.jpg": (_save(g8, "JPEG", quality=95), g8.shape, 8),
        "rgb.jpg": (_save(rgb, "JPEG", quality=95), g8.shape, 8),
        "tiff8.tif": (_save(g8, "TIFF"), g8.shape, 8),
        "tiff16.tif": (_save(g16, "TIFF"), g16.shape, 16),
        "pgm8.pgm": (_save(g8, "PPM"), g8.shape, 8),
        "pgm16.pgm": (_pnm16(g16), g16.shape, 16),
        "rgb.ppm": (_save(rgb, "PPM"), g8.shape, 8),
        "scan.dcm": (dicom, g8.shape, 16),
    }


def _write_table(root: Path, rows: list[dict], header=HEADER, name: str = "labels.csv") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=header, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    (root / name).write_text(buf.getvalue())
    return root / name


def _read(out: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(out / name, dtype=str, keep_default_na=False)


def test_every_format_and_bit_depth_is_ingested(tmp_path):
    files = _files()
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    rows = []
    for i, (name, (data, _, _)) in enumerate(files.items()):
        (src / "img" / name).write_bytes(data)
        rows.append(
            {
                "image_path": f"img/{name}",
                "patient_id": f"MRN{i:04d}",
                "label": ["benign", "1"][i % 2],
                "view": "CC",
            }
        )
    _write_table(src, rows)
    manifest = ingest.run_ingest(src, tmp_path / "out", eda=False)
    assert manifest["source_layout"] == "table" and manifest["data_source"] == "table"
    c = manifest["counts"]
    assert (c["rows_in"], c["rows_out"], c["rejected"]) == (len(files), len(files), 0), _read(
        tmp_path / "out", "rejects.csv"
    )
    index = _read(tmp_path / "out", "index.csv")
    by_row = {int(r.source_path.rsplit(" ", 1)[1]): r for r in index.itertuples()}
    for i, (name, (_, shape, bits)) in enumerate(files.items(), start=1):
        r = by_row[i]
        assert (int(r.height), int(r.width)) == shape, name
        assert int(r.bits_stored) == bits, name
        with Image.open(tmp_path / "out" / r.image_path) as img:
            assert img.mode.startswith("I") and img.size == (shape[1], shape[0]), name  # 16-bit gray PNG
    # 1 = malignant: "1" rows are malignant with label_id 1, "benign" rows label_id 0.
    assert set(zip(index["label"], index["label_id"], strict=True)) == {("benign", "0"), ("malignant", "1")}
    # De-identified: no raw patient id or file name reaches the index; ids are stable pseudonyms.
    text = (tmp_path / "out" / "index.csv").read_text()
    assert "MRN" not in text and "png8" not in text
    assert set(index["patient_id"]) == {table.pseudonym(f"MRN{i:04d}") for i in range(len(files))}
    assert set(index["official_split"]) == {""}
    # Checksummed manifest: every image's sha256 listed.
    assert len([k for k in manifest["files"] if k.startswith("images/")]) == len(files)


def test_16bit_values_survive(tmp_path):
    g16 = _gray(7, np.uint16)
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.pgm").write_bytes(_pnm16(g16))
    (src / "b.tif").write_bytes(_save(g16, "TIFF"))
    rows = [{"image_path": n, "patient_id": "p", "label": "0"} for n in ("a.pgm", "b.tif")]
    _write_table(src, rows)
    ingest.run_ingest(src, tmp_path / "out", eda=False)
    for r in _read(tmp_path / "out", "index.csv").itertuples():
        with Image.open(tmp_path / "out" / r.image_path) as img:
            assert np.array_equal(np.asarray(img).astype(np.uint16), g16)


def test_malformed_rows_are_rejected_with_reasons_and_counts_add_up(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for n in range(4):
        (src / f"ok{n}.png").write_bytes(_save(_gray(n), "PNG"))
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (src / "notes.txt").write_text("not an image")
    (tmp_path / "outside.png").write_bytes(_save(_gray(9), "PNG"))
    header = ["image_path", "patient_id", "label", "pathology", "split"]
    rows = [
        {"image_path": "ok0.png", "patient_id": "a", "label": "malignant", "split": "train"},
        {"image_path": "ok1.png", "patient_id": "b", "pathology": "BENIGN_WITHOUT_CALLBACK", "split": "test"},
        {"image_path": "ok2.png", "patient_id": "c", "label": "maybe", "split": "train"},  # unknown label
        {
            "image_path": "ok3.png",
            "patient_id": "d",
            "pathology": "CANCER",
            "split": "train",
        },  # unknown pathology
        {"image_path": "missing.png", "patient_id": "e", "label": "0", "split": "train"},  # missing file
        {"image_path": "./ok0.png", "patient_id": "a", "label": "malignant", "split": "train"},  # duplicate
        {"image_path": "broken.png", "patient_id": "f", "label": "1", "split": "train"},  # undecodable
        {"image_path": "notes.txt", "patient_id": "g", "label": "1", "split": "train"},  # not an image
        {
            "image_path": "../outside.png",
            "patient_id": "h",
            "label": "1",
            "split": "train",
        },  # leaves the folder
        {"image_path": "ok1.png", "patient_id": "b", "label": "0", "split": "validation"},  # unknown split
        {"image_path": "", "patient_id": "i", "label": "1", "split": "train"},  # empty path
    ]
    _write_table(src, rows, header)
    manifest = ingest.run_ingest(src, tmp_path / "out", eda=False)
    c = manifest["counts"]
    assert c["rows_in"] == len(rows) == c["rows_out"] + c["rejected"]
    assert c["rows_out"] == 2
    rejects = _read(tmp_path / "out", "rejects.csv")
    reasons = {int(r.row): r.reason for r in rejects.itertuples()}
    assert reasons[3].startswith("unknown label: 'maybe'")
    assert reasons[4].startswith("unknown pathology: 'CANCER'")
    assert reasons[5] == "missing file"
    assert reasons[6].startswith("duplicate image") and "row 1" in reasons[6]
    assert reasons[7].startswith("unreadable image")
    assert reasons[8].startswith("unreadable image") and "not a PNG" in reasons[8]
    assert reasons[9].startswith("path outside the source folder")
    assert reasons[10].startswith("unknown split")
    assert reasons[11] == "missing field: image_path"
    index = _read(tmp_path / "out", "index.csv")
    assert sorted(index["official_split"]) == ["test", "train"]
    assert sorted(index["pathology"]) == ["BENIGN_WITHOUT_CALLBACK", "MALIGNANT"]


def test_conflicting_duplicate_rejects_both_rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(_save(_gray(1), "PNG"))
    _write_table(src, [{"image_path": "a.png", "patient_id": "p", "label": lab} for lab in ("0", "1")])
    manifest = ingest.run_ingest(src, tmp_path / "out", eda=False)
    assert (manifest["counts"]["rows_out"], manifest["counts"]["rejected"]) == (0, 2)
    assert set(r.split(":")[0] for r in _read(tmp_path / "out", "rejects.csv")["reason"]) == {
        "conflicting duplicate"
    }


@pytest.mark.parametrize(
    ("header", "column"),
    [
        (["patient_id", "label"], "image_path"),
        (["image_path", "label"], "patient_id"),
        (["image_path", "patient_id", "view"], "label"),
    ],
)
def test_missing_required_column_is_one_clear_line(tmp_path, header, column):
    _write_table(tmp_path / "src", [], header)
    with pytest.raises(ValueError) as err:
        ingest.run_ingest(tmp_path / "src", tmp_path / "out", eda=False)
    message = str(err.value)
    assert "\n" not in message and f"'{column}'" in message and "labels.csv" in message and "add" in message


def test_table_flag_and_labels_csv_win_over_cbis_csvs(tmp_path):
    src = tmp_path / "src"
    phantom.generate(src, n_patients=4, seed=0, crop_size=32)  # CBIS CSVs present too
    (src / "mine").mkdir()
    (src / "mine" / "a.png").write_bytes(_save(_gray(1), "PNG"))
    table_file = _write_table(
        src / "mine", [{"image_path": "a.png", "patient_id": "p", "label": "1"}], name="t.csv"
    )
    # --table FILE: paths relative to the table's folder.
    manifest = ingest.run_ingest("", tmp_path / "out1", eda=False, table=table_file)
    assert manifest["source_layout"] == "table" and manifest["counts"]["rows_out"] == 1
    # labels.csv at the source root is looked for before the CBIS CSVs.
    _write_table(src, [{"image_path": "mine/a.png", "patient_id": "p", "label": "1"}])
    manifest = ingest.run_ingest(src, tmp_path / "out2", eda=False)
    assert manifest["source_layout"] == "table"
    assert ingest.main(["--table", str(table_file), "--out", str(tmp_path / "out3"), "--no-eda"]) == 0


def test_data_source_comes_from_the_phantom_marker_not_the_source_name(tmp_path):
    src = tmp_path / "looks-like-s3-cbis-upload"
    phantom.generate(src, n_patients=4, seed=0, crop_size=32)
    assert json.loads((src / phantom.PHANTOM_MARKER).read_text())["kind"] == "mammosynth-phantom"
    assert ingest.run_ingest(src, tmp_path / "out", eda=False)["data_source"] == "phantom"
    (src / phantom.PHANTOM_MARKER).unlink()  # the same files without the marker: real CBIS-DDSM layout
    assert ingest.run_ingest(src, tmp_path / "out2", eda=False)["data_source"] == "cbis-ddsm"


def test_no_split_column_gives_a_patient_level_stratified_test_split(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for p in range(40):
        malignant = p % 2
        for view in ("CC", "MLO"):
            name = f"p{p}-{view}.png"
            (src / name).write_bytes(_save(rng.integers(20, 250, (24, 24)).astype(np.uint8), "PNG"))
            rows.append({"image_path": name, "patient_id": f"P{p}", "label": str(malignant), "view": view})
    _write_table(src, rows)
    ingest.run_ingest(src, tmp_path / "ing", eda=False)
    report = split.run_split(
        tmp_path / "ing", tmp_path / "split", val_fraction=0.15, seed=3, test_fraction=0.25
    )
    assert report["test_split"] == split.GENERATED_TEST == "generated, patient-level, stratified"
    assert report["test_fraction"] == 0.25
    assert all(v == 0 for v in report["overlap"].values())
    assert report["patients"]["test"] == 10  # 25% of 20 benign + 25% of 20 malignant patients
    assert report["labels"]["test"] == {
        "benign": 10,
        "malignant": 10,
    }  # stratified: 5 patients x 2 views each
    index = _read(tmp_path / "split", "index.csv")
    assert index.groupby("patient_id")["split"].nunique().max() == 1  # a patient's views never straddle
    saved = json.loads((tmp_path / "split" / "split_report.json").read_text())
    assert saved["test_split"] == "generated, patient-level, stratified"


def test_partly_missing_split_is_refused(tmp_path):
    index = pd.DataFrame(
        {"patient_id": ["a", "b", "c"], "label_id": ["0", "1", "0"], "official_split": ["train", "", "test"]}
    )
    with pytest.raises(ValueError, match="every row a split, or none"):
        split.assign_splits(index, val_fraction=0.2, seed=0)


def test_recorded_data_source_travels_to_the_prepared_set_and_model(tmp_path):
    from mammosynth.preprocess import run_preprocess

    src = tmp_path / "uploaded-as-cbis"
    phantom.generate(src, n_patients=12, seed=1, crop_size=32)
    ingest.run_ingest(src, tmp_path / "ing", eda=False)
    split.run_split(tmp_path / "ing", tmp_path / "split", val_fraction=0.2, seed=0, eda=False)
    meta = run_preprocess(tmp_path / "split", tmp_path / "prep", image_size=16)
    assert provenance.data_source(None, tmp_path / "split") == meta["data_source"] == "phantom"
    assert provenance.data_source(None, tmp_path / "prep") == "phantom"
    assert provenance.data_source(None, tmp_path) is None


def test_file_names_never_reach_the_ingested_set(tmp_path):
    """File names of an in-house export may carry identifiers: index, rejects and manifest name table rows."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "Doe_Jane_MRN123.png").write_bytes(_save(_gray(1), "PNG"))
    (src / "Roe_Rich_MRN456.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    rows = [
        {"image_path": "Doe_Jane_MRN123.png", "patient_id": "MRN123", "label": "1"},
        {"image_path": "Roe_Rich_MRN456.png", "patient_id": "MRN456", "label": "0"},
        {"image_path": "Poe_Ed_MRN789.png", "patient_id": "MRN789", "label": "0"},
        {"image_path": "Doe_Jane_MRN123.png", "patient_id": "MRN123", "label": "1"},
    ]
    _write_table(src, rows)
    ingest.run_ingest(src, tmp_path / "out", eda=False)
    for name in ("index.csv", "rejects.csv", "manifest.json"):
        text = (tmp_path / "out" / name).read_text()
        assert "MRN" not in text and "Doe" not in text and "Roe" not in text and "Poe" not in text, name
    rejects = _read(tmp_path / "out", "rejects.csv")
    assert list(rejects["row"]) == ["2", "3", "4"]
    assert rejects["reason"][0].startswith("unreadable image: labels.csv row 2")
    assert list(rejects["reason"][1:]) == [
        "missing file",
        "duplicate image: same image file or image_id as labels.csv row 1",
    ]
