"""Ingest: the phantom, the four real CSVs against stand-ins in all three layouts, real DICOMs,
and every bad-input kind landing in rejects.csv."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from mammosynth import ingest
from mammosynth.data import cbis, phantom
from mammosynth.data.dicom import decode_dicom

# Real CBIS-DDSM material vendored in the repository (tests/fixtures/cbis-ddsm, with citation).
SHARED = Path(__file__).resolve().parent / "fixtures" / "cbis-ddsm"
CSV_FILES = {  # rows, MALIGNANT / BENIGN / BENIGN_WITHOUT_CALLBACK (fixtures README)
    "mass_case_description_train_set.csv": (1318, 637, 577, 104),
    "mass_case_description_test_set.csv": (378, 147, 194, 37),
    "calc_case_description_train_set.csv": (1546, 544, 528, 474),
    "calc_case_description_test_set.csv": (326, 129, 130, 67),
}
CROP_SHAPE, MASK_SHAPE = (26, 22), (60, 50)


def _crop(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(2000, 65535, CROP_SHAPE).astype(np.uint16)


def _mask() -> np.ndarray:
    m = np.zeros(MASK_SHAPE, np.uint8)
    m[20:30, 10:25] = 255
    return m


def _dcm(pixels: np.ndarray, description: str, folder: str = "Mass-Training_P_00001_LEFT_CC_1") -> bytes:
    return phantom.dicom_bytes(
        pixels,
        folder=folder,
        series_description=description,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        laterality="LEFT",
        view="CC",
    )


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _copy_csvs(dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in CSV_FILES:
        shutil.copy(SHARED / "csv" / name, dst / name)


def _subset(per_file: int = 3) -> list[cbis.CaseRecord]:
    records = []
    for name in CSV_FILES:
        kind, split = name.split("_")[0], name.split("_")[3]
        for number, raw in cbis.iter_case_rows(SHARED / "csv" / name):
            if number > per_file:
                break
            records.append(
                cbis.clean_row(raw, csv_file=name, row=number, abnormality=kind, official_split=split)
            )
    return records


def _png_chunks(data: bytes) -> list[bytes]:
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunks.append(kind)
        pos += 12 + length
    return chunks


# ------------------------------------------------------------------------------------------ #
def test_real_csvs_parse_with_quirks_handled():
    total = 0
    for name, (rows, mal, ben, bwc) in CSV_FILES.items():
        parsed = list(cbis.iter_case_rows(SHARED / "csv" / name))
        total += len(parsed)
        assert len(parsed) == rows
        counts = Counter(r["pathology"] for _, r in parsed)
        assert counts == {"MALIGNANT": mal, "BENIGN": ben, "BENIGN_WITHOUT_CALLBACK": bwc}
        for _, r in parsed:
            assert "breast_density" in r and "roi_mask_file_path" in r  # names normalised once
            assert not any("\n" in r[c] for c in ("cropped_image_file_path", "roi_mask_file_path"))
        if name.startswith("mass"):
            assert any(r["mass_margins"] == "N/A" for _, r in parsed)  # N/A is a category
        frame = cbis.read_case_csv(SHARED / "csv" / name)
        assert len(frame) == rows and not frame.isna().any().any()
    assert total == 3568
    flags = Counter()
    for name in CSV_FILES:
        kind, split = name.split("_")[0], name.split("_")[3]
        for number, raw in cbis.iter_case_rows(SHARED / "csv" / name):
            rec = cbis.clean_row(raw, csv_file=name, row=number, abnormality=kind, official_split=split)
            flags.update((name, f) for f in rec.qc_flags)
    assert flags == {
        ("mass_case_description_train_set.csv", "subtlety_out_of_range"): 2,
        ("calc_case_description_test_set.csv", "breast_density_out_of_range"): 2,
    }


# ------------------------------------------------------------------------------------------ #
@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    src = phantom.generate(tmp_path_factory.mktemp("src"), n_patients=10, seed=11, crop_size=40)
    out = tmp_path_factory.mktemp("ingested")
    manifest = ingest.run_ingest(src, out)
    return src, out, manifest


def test_phantom_ingest_writes_the_ingested_set(phantom_set):
    src, out, manifest = phantom_set
    index = pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False)
    n_rows = sum(1 for s in ("train", "test") for _ in cbis.iter_case_rows(src / phantom.CSV_NAMES[s]))
    assert len(index) == n_rows == manifest["counts"]["rows_in"] and manifest["counts"]["rejected"] == 0
    for col in [
        "image_id",
        "patient_id",
        "label",
        "label_id",
        "pathology",
        "official_split",
        "split",
        "abnormality_type",
        "abnormality_id",
        "view",
        "laterality",
        "breast_density",
        "subtlety",
        "mass_shape",
        "mass_margins",
        "height",
        "width",
        "image_path",
        "source_path",
        "sha256",
    ]:
        assert col in index.columns
    assert (index["split"] == "").all()
    assert set(index["official_split"]) == {"train", "test"}
    assert ((index["label"] == "malignant") == (index["label_id"] == "1")).all()
    assert ((index["label"] == "malignant") == (index["pathology"] == "MALIGNANT")).all()
    assert index["image_id"].str.fullmatch(r"mass-(train|test)-P_\d{5}-(LEFT|RIGHT)-(CC|MLO)-\d+").all()
    assert manifest["source_layout"] == "tcia-old"
    assert manifest["counts"]["label"] == dict(Counter(index["label"]))
    for _, row in index.head(8).iterrows():
        data = (out / row["image_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"] == manifest["files"][row["image_path"]]
        png = Image.open(io.BytesIO(data))
        assert png.mode == "I;16" and png.size == (int(row["width"]), int(row["height"]))
        # The crop was chosen (never the mask), pixel for pixel.
        assert np.array_equal(np.asarray(png), decode_dicom(src / row["source_path"]).pixels)
    assert (out / "eda" / "summary.md").exists() and (out / "eda" / "pathology_counts.png").exists()


def test_written_images_carry_no_identifiers(phantom_set):
    _, out, _ = phantom_set
    for path in sorted((out / "images").glob("*.png"))[:20]:
        data = path.read_bytes()
        assert set(_png_chunks(data)) <= {b"IHDR", b"IDAT", b"IEND"}
        assert b"P_0" not in data and b"Mass-" not in data and b"DDSM" not in data


def test_parallel_workers_give_the_same_set(phantom_set, tmp_path):
    src, out, manifest = phantom_set
    again = ingest.run_ingest(src, tmp_path / "par", workers=2, eda=False)
    assert again["files"] == manifest["files"]


# ------------------------------------------------------------------------------------------ #
def _check_layout_run(src: Path, out: Path, layout: str, records: list[cbis.CaseRecord]) -> pd.DataFrame:
    manifest = ingest.run_ingest(src, out, abnormality="both", eda=False)
    index = pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False)
    rejects = pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False)
    assert manifest["source_layout"] == layout
    assert manifest["counts"]["rows_in"] == 3568 == len(index) + len(rejects)
    assert sorted(index["image_id"]) == sorted(r.image_id for r in records)
    assert set(rejects["reason"]) == {"missing file"}
    assert set(index["abnormality_type"]) == {"mass", "calc"}
    assert (index["height"] == str(CROP_SHAPE[0])).all() and (index["width"] == str(CROP_SHAPE[1])).all()
    # Every CSV row is accounted for with its pathology: index rows + rejected rows per file.
    for name, (rows, *_rest) in CSV_FILES.items():
        kind, split = name.split("_")[0], name.split("_")[3]
        n_in = ((index["abnormality_type"] == kind) & (index["official_split"] == split)).sum()
        assert n_in + (rejects["source"] == name).sum() == rows
    return index


def test_tcia_old_layout_from_real_csvs(tmp_path):
    src = tmp_path / "src"
    _copy_csvs(src)
    records = _subset()
    for i, rec in enumerate(records):
        # Crop and mask swapped against the CSV's file numbers: content must decide.
        _write(src / rec.roi_mask_file_path, _dcm(_crop(i), "cropped images"))
        _write(src / rec.cropped_image_file_path, _dcm(_mask(), "ROI mask images"))
    index = _check_layout_run(src, tmp_path / "out", "tcia-old", records)
    assert set(index["calc_type"][index["abnormality_type"] == "calc"]) != {""}


def test_tcia_current_layout_from_real_csvs(tmp_path):
    src = tmp_path / "src"
    _copy_csvs(src / "csv")
    records = _subset()
    for i, rec in enumerate(records):
        study = src / "CBIS-DDSM" / rec.folder / f"07-20-2016-DDSM-{10000 + i}"
        if i % 2:
            _write(
                study / f"1.000000-cropped images-{20000 + i}" / "1-1.dcm", _dcm(_crop(i), "cropped images")
            )
            _write(
                study / f"1.000000-ROI mask images-{30000 + i}" / "1-1.dcm", _dcm(_mask(), "ROI mask images")
            )
        else:  # both in one "ROI mask images" series, as in the shared fixtures
            _write(study / f"1-ROI mask images-{30000 + i}" / "000000.dcm", _dcm(_mask(), "ROI mask images"))
            _write(study / f"1-ROI mask images-{30000 + i}" / "000001.dcm", _dcm(_crop(i), "cropped images"))
    _check_layout_run(src, tmp_path / "out", "tcia-current", records)


def test_kaggle_jpeg_layout_from_real_csvs(tmp_path):
    src = tmp_path / "src"
    _copy_csvs(src / "csv")
    records = _subset()
    header = (SHARED / "csv" / "dicom_info.sample.csv").read_text().splitlines()[0].split(",")
    rows = []
    for i, rec in enumerate(records):
        crop_uid = Path(rec.cropped_image_file_path).parts[2]
        mask_uid = Path(rec.roi_mask_file_path).parts[2]
        for uid, desc, number, pixels in (
            (crop_uid, "cropped images" if i % 3 else "", 2, _crop(i) // 257),
            (mask_uid, "ROI mask images", 1, _mask()),
        ):
            rel = f"CBIS-DDSM/jpeg/{uid}/{number}-{100 + i:03d}.jpg"
            path = src / rel.removeprefix("CBIS-DDSM/")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels.astype(np.uint8)).save(path, quality=90)
            rows.append(
                {
                    "image_path": rel,
                    "SeriesDescription": desc,
                    "SeriesInstanceUID": uid,
                    "PatientID": rec.folder,
                    "PatientName": rec.folder,
                }
            )
    with open(src / "csv" / "dicom_info.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, restval="")
        writer.writeheader()
        writer.writerows(rows)
    _check_layout_run(src, tmp_path / "out", "kaggle-jpeg", records)


def test_real_dicoms_in_the_nbia_layout(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(SHARED / "dicom", src)
    shutil.copy(SHARED / "csv" / "mass_case_description_test_set.csv", src)
    ingest.run_ingest(src, tmp_path / "out", eda=False)
    index = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str, keep_default_na=False).set_index(
        "image_id"
    )
    assert len(index) == 3
    sizes = {k: (int(v["height"]), int(v["width"])) for k, v in index.iterrows()}
    assert sizes == {
        "mass-test-P_00016-LEFT-CC-1": (384, 385),
        "mass-test-P_00116-RIGHT-MLO-1": (483, 286),
        "mass-test-P_00116-RIGHT-MLO-2": (486, 497),
    }
    assert set(index["pathology"]) == {"MALIGNANT"} and (index["bits_stored"] == "16").all()
    png = np.asarray(Image.open(tmp_path / "out" / index.loc["mass-test-P_00016-LEFT-CC-1", "image_path"]))
    assert png.dtype == np.uint16 and png.max() == 65535
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv", keep_default_na=False)
    assert len(rejects) == 375 and set(rejects["reason"]) == {"missing file"}


# ------------------------------------------------------------------------------------------ #
def test_every_bad_input_kind_lands_in_rejects(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    base = ["3", "LEFT", "CC", "1", "mass", "OVAL", "CIRCUMSCRIBED", "4", "BENIGN", "4"]

    def row(pid: str, *, patho="BENIGN", view="CC", density="3", subtlety="4"):
        folder = f"Mass-Training_{pid}_LEFT_{view or 'CC'}_1"
        vals = list(base)
        vals[0], vals[2], vals[8], vals[9] = density, view, patho, subtlety
        return [
            pid,
            *vals,
            f"{folder[:-2]}/1.1/1.2/000000.dcm",
            f"{folder}/1.3/1.4/000000.dcm",
            f"{folder}/1.3/1.4/000001.dcm\n",
        ]

    rows = [
        row("P_00001"),
        row("P_00002"),
        row("P_00003"),
        row("P_00004"),
        row("P_00005"),
        row("P_00001"),
        row("P_00007", patho="MAYBE"),
        row("P_00008", view=""),
        row("P_00009", density="0", subtlety="0"),
        [*row("P_00010"), "an extra field"],
    ]
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(phantom.CSV_HEADER)
    writer.writerows(rows)
    (src / "mass_case_description_train_set.csv").write_text(buf.getvalue(), newline="")

    def series(pid):
        return src / f"Mass-Training_{pid}_LEFT_CC_1" / "1.3" / "1.4"

    _write(series("P_00001") / "000000.dcm", _dcm(_crop(1), "cropped images"))
    # P_00002: missing file.
    _write(series("P_00003") / "000000.dcm", _dcm(_crop(3), "cropped images")[:-500])  # truncated
    _write(series("P_00004") / "000000.dcm", b"")  # empty
    _write(series("P_00005") / "000001.dcm", _dcm(_mask(), "ROI mask images"))  # mask only
    _write(series("P_00009") / "000001.dcm", _dcm(_crop(9), "cropped images"))

    manifest = ingest.run_ingest(src, tmp_path / "out", eda=False)
    rejects = pd.read_csv(tmp_path / "out" / "rejects.csv", dtype=str, keep_default_na=False)
    reasons = dict(zip(rejects["row"].astype(int), rejects["reason"], strict=True))
    assert set(reasons) == {2, 3, 4, 5, 6, 7, 8, 10}
    assert reasons[10].startswith("malformed row")
    assert reasons[2] == "missing file"
    assert reasons[3].startswith("unreadable DICOM") and "truncated" in reasons[3]
    assert reasons[4].startswith("unreadable DICOM") and "empty file" in reasons[4]
    assert reasons[5].startswith("mask-only")
    assert reasons[6].startswith("duplicate row") and "row 1" in reasons[6]
    assert reasons[7].startswith("unknown pathology") and "MAYBE" in reasons[7]
    assert reasons[8].startswith("missing field") and "image_view" in reasons[8]
    assert set(rejects["source"]) == {"mass_case_description_train_set.csv"}
    index = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str, keep_default_na=False)
    assert list(index["patient_id"]) == ["P_00001", "P_00009"]
    flagged = index.set_index("patient_id").loc["P_00009", "qc_flags"]
    assert flagged == "breast_density_out_of_range;subtlety_out_of_range"  # flagged, not dropped
    assert (
        manifest["counts"]["rows_in"] == 10 == manifest["counts"]["rows_out"] + manifest["counts"]["rejected"]
    )
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["counts"]["reject_reasons"][
            "missing file"
        ]
        == 1
    )


def test_full_mammograms_are_shared_by_their_rows(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    name = "mass_case_description_test_set.csv"
    with open(SHARED / "csv" / name, newline="") as fh:
        header, *all_rows = list(csv.reader(fh))
    # Two abnormalities seen in the same view share one full mammogram.
    views = Counter((r[0], r[2], r[3]) for r in all_rows)
    shared = next(k for k, n in views.items() if n >= 2)
    picked = [r for r in all_rows if (r[0], r[2], r[3]) == shared] + [all_rows[0]]
    buf = io.StringIO(newline="")
    csv.writer(buf, lineterminator="\r\n").writerows([header, *picked])
    (src / name).write_text(buf.getvalue(), newline="")
    rows = [
        cbis.clean_row(raw, csv_file=name, row=n, abnormality="mass", official_split="test")
        for n, raw in cbis.iter_case_rows(src / name)
    ]
    full = np.random.default_rng(0).integers(0, 4096, (90, 70)).astype(np.uint16)
    for rec in rows:
        _write(src / rec.image_file_path, _dcm(full, "full mammogram images"))
    ingest.run_ingest(src, tmp_path / "out", image_kind="full", eda=False)
    index = pd.read_csv(tmp_path / "out" / "index.csv", dtype=str, keep_default_na=False)
    assert len(index) == len(rows) == len(picked)
    assert index["image_path"].nunique() == len({r.full_image_key for r in rows}) < len(rows)
    assert (index["height"] == "90").all()


def test_source_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ingest.run_ingest(tmp_path / "absent", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no CBIS-DDSM case-description CSVs"):
        ingest.run_ingest(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(ValueError, match="s3://"):
        ingest.run_ingest("s3://bucket/cbis", tmp_path / "out")
    _copy_csvs(tmp_path / "csvonly")
    with pytest.raises(ValueError, match="no CBIS-DDSM image layout"):
        ingest.run_ingest(tmp_path / "csvonly", tmp_path / "out")
    with pytest.raises(ValueError, match="abnormality"):
        ingest.run_ingest(tmp_path / "csvonly", tmp_path / "out", abnormality="tumour")


def test_main_cli(phantom_set, tmp_path, capsys):
    src, _, _ = phantom_set
    assert ingest.main(["--source", str(src), "--out", str(tmp_path / "o"), "--no-eda"]) == 0
    assert "ingested set written" in capsys.readouterr().out


def test_data_source_reads_ingests_record_first_then_the_source_name(tmp_path):
    """The one reader of ingest's data_source: record (manifest, meta, model.json), else the name, else None."""
    from mammosynth.provenance import data_source

    def write(folder, name, doc):
        folder.mkdir(exist_ok=True)
        (folder / name).write_text(json.dumps(doc))

    split_set, prepared, model, old = (tmp_path / n for n in ("split", "prep", "model", "old"))
    write(split_set, "manifest.json", {"data_source": "phantom"})
    write(prepared, "meta.json", {"data_source": "table"})
    write(model, "model.json", {"training": {"data_source": "phantom"}})
    write(old, "manifest.json", {"source": "x"})  # an older set: records no data_source
    # 1. The record wins over any source name (a phantom uploaded to S3 stays a phantom).
    assert data_source("s3://bucket/cbis-ddsm", split_set) == "phantom"
    assert data_source("embedded", prepared) == "table"
    assert data_source("s3://bucket/cbis-ddsm", model) == "phantom"
    assert data_source("s3://bucket/cbis-ddsm", {"training": {"data_source": "phantom"}}) == "phantom"
    assert data_source("embedded", {"data_source": "cbis-ddsm"}) == "cbis-ddsm"
    # manifest.json before meta.json before model.json, when a folder holds several.
    write(split_set, "meta.json", {"data_source": "table"})
    write(split_set, "model.json", {"training": {"data_source": "cbis-ddsm"}})
    assert data_source(None, split_set) == "phantom"
    write(old, "meta.json", {"data_source": "table"})
    assert data_source(None, old) == "table"  # a record-less manifest falls through to meta.json
    # 2. No record (none given, an older set, a missing or broken folder): the source name decides.
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    for record in (None, tmp_path / "nowhere", tmp_path / "broken", {"training": {}}, {}):
        assert data_source("embedded", record) == "phantom"
        assert data_source("phantom", record) == "phantom"
        assert data_source("s3://bucket/cbis-ddsm", record) == "cbis-ddsm"
        assert data_source("/data/cbis", record) == "cbis-ddsm"
        # 3. Neither a record nor a source name: unknown.
        assert data_source(None, record) is None
        assert data_source("", record) is None
