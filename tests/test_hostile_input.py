"""Hostile input (issue 15): no record kills a batch, no field escapes its folder, decoders keep a
pixel budget. Every input is generated here, small."""

from __future__ import annotations

import csv
import io
import random
import signal
import struct
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from mammosynth import ingest
from mammosynth.data import phantom
from mammosynth.data.dicom import MAX_SEQUENCE_DEPTH, DicomError, DicomTooLarge, decode_dicom
from mammosynth.data.images import PixelBudgetExceeded, decode_pil, max_pixels, sniff
from mammosynth.paths import UnsafePath, inside, safe_name

TRAIN_CSV = "mass_case_description_train_set.csv"
TEST_CSV = "mass_case_description_test_set.csv"
CROP = (26, 22)  # 572 px; the tests set a 5,000 px budget so "too large" stays small
BUDGET = 5_000
BAD_BYTE = "@@NOT-UTF8@@"


def _crop(seed: int, shape=CROP) -> np.ndarray:
    return np.random.default_rng(seed).integers(2000, 65535, shape).astype(np.uint16)


def _dcm(pixels: np.ndarray) -> bytes:
    return phantom.dicom_bytes(
        pixels,
        folder="Mass-Training_P_00001_LEFT_CC_1",
        series_description="cropped images",
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        laterality="LEFT",
        view="CC",
    )


def _patched(raw: bytes, placeholder: bytes, value: bytes, **attrs) -> bytes:
    """Re-save ``raw`` with ``attrs`` set, then swap a placeholder value's bytes (invalid DS values)."""
    ds = pydicom.dcmread(io.BytesIO(raw))
    for key, val in attrs.items():
        setattr(ds, key, val)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue().replace(placeholder, value) if placeholder else buf.getvalue()


def _deflate_bomb(side: int = 1000) -> bytes:
    """A Deflated-syntax DICOM whose header claims 10x10 but whose data inflates to side² × 2 bytes."""
    ds = pydicom.dcmread(io.BytesIO(_dcm(_crop(0))))
    ds.Rows = ds.Columns = 10
    ds.PixelData = bytes(side * side * 2)
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=False)
    return buf.getvalue()


def _nested(depth: int, explicit: bool = False) -> bytes:
    """A good crop whose ContentSequence nests ``depth`` levels deep (defined lengths, as pydicom writes).

    Kept modest: pydicom writes nested sequences recursively, 150 levels in 0.2 s but 300 not in 5 minutes.
    """
    ds = pydicom.dcmread(io.BytesIO(_dcm(_crop(1))))
    inner = Dataset()
    inner.CodeMeaning = "leaf"
    for _ in range(depth - 1):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner])
        inner = outer
    ds.ContentSequence = Sequence([inner])
    if explicit:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def _nested_undefined(depth: int) -> bytes:
    """``depth`` undefined-length ContentSequences spliced in as bytes (instant at any depth; implicit VR)."""
    raw = _dcm(_crop(1))
    seq, item, item_end, seq_end = (
        struct.pack("<HH", *tag)
        for tag in ((0x0040, 0xA730), (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD))
    )
    undefined, zero = b"\xff" * 4, b"\0" * 4
    nesting = (seq + undefined + item + undefined) * depth + (item_end + zero + seq_end + zero) * depth
    at = raw.index(struct.pack("<HH", 0x7FE0, 0x0010))  # before PixelData keeps the tags ascending
    return raw[:at] + nesting + raw[at:]


@contextmanager
def _time_limit(seconds: float):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""

    def expire(*_):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


DAMAGED_DICOMS = {
    "rescale slope nan": (_patched(_dcm(_crop(1)), b"9.5 ", b"nan ", RescaleSlope="9.5"), "RescaleSlope"),
    "rescale slope text": (_patched(_dcm(_crop(1)), b"9.5 ", b"abc ", RescaleSlope="9.5"), "RescaleSlope"),
    "rescale slope zero": (_patched(_dcm(_crop(1)), b"", b"", RescaleSlope="0"), "RescaleSlope"),
    "window width zero": (
        _patched(_dcm(_crop(1)), b"", b"", WindowCenter="3000", WindowWidth="0"),
        "WindowWidth",
    ),
    "over the pixel budget": (_dcm(_crop(2, (100, 100))), "pixel budget"),
    "deflate bomb": (_deflate_bomb(), "pixel budget"),
    "truncated": (_dcm(_crop(3))[:-300], "truncated"),
    "garbage": (b"\x00" * 128 + b"DICM" + b"\xff" * 64, "DICOM"),
    "sequences nested too deep": (_nested(MAX_SEQUENCE_DEPTH + 1), "nested more than"),
    "sequences nested 1000 deep, undefined lengths": (_nested_undefined(1000), "nested more than"),
}


@pytest.fixture(autouse=True)
def _small_budget(monkeypatch):
    monkeypatch.setenv("MAMMOSYNTH_MAX_PIXELS", str(BUDGET))


# ------------------------------------------------------------------------------------------ #
# Helpers for paths and decoders
# ------------------------------------------------------------------------------------------ #
def test_safe_name_and_inside(tmp_path):
    for hostile in ("x/" + "../" * 4 + "ESCAPED", "..", ".", "/etc/passwd", "a\0b", "", "C:\\x"):
        name = safe_name(hostile)
        assert name and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
        assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    assert safe_name("mass-train-P_00001-LEFT-CC-1") == "mass-train-P_00001-LEFT-CC-1"
    assert safe_name("a/b") != safe_name("a_b")  # no two identifiers share a file
    assert inside(tmp_path, "a/b.dcm") == (tmp_path / "a" / "b.dcm").resolve()
    for bad in ("../x", "/etc/passwd", "a/../../x", "a\0b"):
        with pytest.raises(UnsafePath, match="outside the source folder"):
            inside(tmp_path, bad)
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(UnsafePath):
        inside(tmp_path, "link/x")


def test_pixel_budget_default_and_env(monkeypatch):
    monkeypatch.delenv("MAMMOSYNTH_MAX_PIXELS")
    assert max_pixels() == 40_000_000 >= 4000 * 6000  # a full-field mammogram fits
    monkeypatch.setenv("MAMMOSYNTH_MAX_PIXELS", "zero")
    with pytest.raises(ValueError, match="MAMMOSYNTH_MAX_PIXELS"):
        max_pixels()


def test_pil_budget_is_checked_before_decoding():
    buf = io.BytesIO()
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(buf, format="PNG")
    with pytest.raises(PixelBudgetExceeded, match="pixel budget"):
        decode_pil(buf.getvalue(), "big.png")
    assert Image.MAX_IMAGE_PIXELS == BUDGET  # PIL's own limit follows the budget
    small = io.BytesIO()
    Image.fromarray(np.full((20, 20), 7, np.uint8)).save(small, format="PNG")
    assert decode_pil(small.getvalue(), "small.png").shape == (20, 20)


def test_sniff_by_magic_bytes():
    assert sniff(_dcm(_crop(0))) == "dicom"
    for fmt, kind in (("PNG", "png"), ("JPEG", "jpeg"), ("TIFF", "tiff")):
        buf = io.BytesIO()
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(buf, format=fmt)
        assert sniff(buf.getvalue()) == kind
    assert sniff(b"hello") == ""


@pytest.mark.parametrize("case", sorted(DAMAGED_DICOMS))
def test_damaged_dicoms_raise_clear_errors_without_values(case):
    raw, needle = DAMAGED_DICOMS[case]
    with pytest.raises(DicomError, match=needle) as info:
        decode_dicom(raw)
    assert "abc" not in str(info.value)  # element values are never echoed
    if "budget" in needle:
        assert isinstance(info.value, DicomTooLarge) and isinstance(info.value, PixelBudgetExceeded)


@pytest.mark.parametrize("explicit", [False, True], ids=["implicit VR", "explicit VR"])
def test_nesting_guard_sits_at_its_limit(explicit):
    with _time_limit(5):
        start = time.monotonic()
        assert decode_dicom(_nested(MAX_SEQUENCE_DEPTH, explicit)).pixels.shape == CROP
        with pytest.raises(DicomError, match=f"nested more than {MAX_SEQUENCE_DEPTH} levels") as info:
            decode_dicom(_nested(MAX_SEQUENCE_DEPTH + 1, explicit))
        for depth in (500, 20_000):
            with pytest.raises(DicomError, match="nested more than"):
                decode_dicom(_nested_undefined(depth))
    assert "\n" not in str(info.value) and info.value.__cause__ is None
    assert time.monotonic() - start < 5


def test_rescale_nan_is_never_a_black_image():
    raw = DAMAGED_DICOMS["rescale slope nan"][0]
    assert pydicom.dcmread(io.BytesIO(raw)).RescaleSlope != pydicom.dcmread(io.BytesIO(raw)).RescaleSlope
    with pytest.raises(DicomError, match="not finite"):
        decode_dicom(raw)


# ------------------------------------------------------------------------------------------ #
# Ingest: a generated TCIA-old source with damaged records
# ------------------------------------------------------------------------------------------ #
HEADER_BASE = ["3", "LEFT", "CC", "1", "mass", "OVAL", "CIRCUMSCRIBED", "4", "BENIGN", "4"]


def _row(pid: str, crop_path: str, pathology: str = "BENIGN") -> list[str]:
    vals = list(HEADER_BASE)
    vals[8] = pathology
    folder = f"Mass-Training_{pid}_LEFT_CC_1"
    return [pid, *vals, f"{folder[:-2]}/1.1/1.2/000000.dcm", crop_path, crop_path.replace("000000", "000001")]


def _folder_path(n: int) -> str:
    return f"Mass-Training_P_{n:05d}_LEFT_CC_1/1.3.{n}/1.4.{n}/000000.dcm"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO(newline="")
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerow(phantom.CSV_HEADER)
    writer.writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8").replace(BAD_BYTE.encode(), b"\xff\xfe"))


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _ingest(src: Path, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    assert ingest.main(["--source", str(src), "--out", str(out), "--no-eda"]) == 0
    index = pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False)
    rejects = pd.read_csv(out / "rejects.csv", dtype=str, keep_default_na=False)
    import json

    return index, rejects, json.loads((out / "manifest.json").read_text())


def test_path_traversal_in_ids_and_csv_paths_stays_inside(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    outside = tmp_path / "secret" / "1.3" / "1.4" / "000000.dcm"
    _write(outside, _dcm(_crop(9)))
    rows = [
        _row("P_00001", _folder_path(1)),
        _row("x/" + "../" * 4 + "ESCAPED", _folder_path(2)),  # id with ../ → a safe file name
        _row("P_00003", "../secret/1.3/1.4/000000.dcm"),  # relative escape
        _row("P_00004", str(outside)),  # absolute path
    ]
    for n in (1, 2):
        _write(src / _folder_path(n), _dcm(_crop(n)))
    _write_csv(src / TRAIN_CSV, rows)
    before = _files(tmp_path)
    index, rejects, _ = _ingest(src, out)
    assert {p for p in _files(tmp_path) - before if out not in p.parents} == set()
    assert len(index) == 2 and len(rejects) == 2
    assert set(rejects["reason"]) == {"path outside the source folder: the path leaves src/"}
    for rel in index["image_path"]:
        assert (out / rel).resolve().parent == (out / "images").resolve()
    assert not any("secret" in p for p in index["source_path"])


def test_damaged_csv_rows_are_rejects_not_aborts(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    rows = [_row(f"P_{n:05d}", _folder_path(n)) for n in range(1, 7)]
    rows[1][0] = f"P_00002{BAD_BYTE}"  # non-UTF-8 bytes
    rows[2][6] = "OV\0AL"  # NUL byte
    rows[3][6] = "x" * 200_000  # over the csv module's field limit
    rows[4][6] = "y" * 5_000  # over our own field limit
    for n in range(1, 7):
        _write(src / _folder_path(n), _dcm(_crop(n)))
    _write_csv(src / TRAIN_CSV, rows)
    (src / TEST_CSV).write_bytes(b"")  # an empty CSV is a warning, not an abort
    index, rejects, manifest = _ingest(src, out)
    assert list(index["patient_id"]) == ["P_00001", "P_00006"]
    reasons = dict(zip(rejects["row"].astype(int), rejects["reason"], strict=True))
    assert "undecodable" in reasons[2] and "NUL" in reasons[3]
    assert "field larger than field limit" in reasons[4] and "over 4096" in reasons[5]
    assert manifest["counts"]["rows_in"] == 6 == len(index) + len(rejects)


def test_damaged_dicoms_are_rejected_with_reasons(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    cases = sorted(DAMAGED_DICOMS)
    rows = [_row("P_00001", _folder_path(1))]
    _write(src / _folder_path(1), _dcm(_crop(1)))
    for n, case in enumerate(cases, start=2):
        rows.append(_row(f"P_{n:05d}", _folder_path(n)))
        _write(src / _folder_path(n), DAMAGED_DICOMS[case][0])
    _write_csv(src / TRAIN_CSV, rows)
    index, rejects, _ = _ingest(src, out)
    assert list(index["patient_id"]) == ["P_00001"]
    reasons = dict(zip(rejects["row"].astype(int), rejects["reason"], strict=True))
    for n, case in enumerate(cases, start=2):
        assert reasons[n].startswith("unreadable DICOM") and DAMAGED_DICOMS[case][1] in reasons[n], case


def test_conflicting_duplicates_are_both_rejected(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    rows = [
        _row("P_00001", _folder_path(1), "BENIGN"),
        _row("P_00001", _folder_path(1), "MALIGNANT"),
        _row("P_00002", _folder_path(2)),
        _row("P_00002", _folder_path(2)),  # an exact duplicate keeps its first row
    ]
    for n in (1, 2):
        _write(src / _folder_path(n), _dcm(_crop(n)))
    _write_csv(src / TRAIN_CSV, rows)
    index, rejects, _ = _ingest(src, out)
    assert list(index["patient_id"]) == ["P_00002"]
    reasons = dict(zip(rejects["row"].astype(int), rejects["reason"], strict=True))
    assert reasons[1].startswith("conflicting duplicate") and reasons[2].startswith("conflicting duplicate")
    assert reasons[4].startswith("duplicate row")


def _damage(rng: random.Random, n: int, src: Path, tmp: Path) -> list[list[str]]:
    """One damaged record (its CSV rows) of a random kind; writes whatever files it needs."""
    kind = rng.choice(
        [
            "dicom",
            "traversal-id",
            "escape",
            "absolute",
            "bad-byte",
            "nul",
            "huge-field",
            "extra-field",
            "conflict",
            "missing",
            "empty-file",
        ]
    )
    row = _row(f"P_{n:05d}", _folder_path(n))
    if kind == "dicom":
        _write(src / _folder_path(n), DAMAGED_DICOMS[rng.choice(sorted(DAMAGED_DICOMS))][0])
        return [row]
    if kind != "missing":
        _write(src / _folder_path(n), b"" if kind == "empty-file" else _dcm(_crop(n)))
    if kind == "traversal-id":
        row[0] = f"../../{n}/../../OUT"
    elif kind == "escape":
        row[12] = "../" * rng.randint(1, 4) + "elsewhere/1.3/1.4/000000.dcm"
    elif kind == "absolute":
        row[12] = str(tmp / "elsewhere" / "1.3" / "1.4" / "000000.dcm")
    elif kind == "bad-byte":
        row[rng.randrange(len(row))] += BAD_BYTE
    elif kind == "nul":
        row[rng.randrange(len(row))] += "\0"
    elif kind == "huge-field":
        row[rng.randrange(len(row))] = "z" * rng.choice([5_000, 150_000])
    elif kind == "extra-field":
        row = [*row, "extra"]
    elif kind == "conflict":
        return [row, _row(f"P_{n:05d}", _folder_path(n), "MALIGNANT")]
    return [row]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_property_random_damage_never_kills_the_batch(tmp_path, seed):
    rng = random.Random(seed)
    src, out = tmp_path / "src", tmp_path / "out"
    _write(tmp_path / "elsewhere" / "1.3" / "1.4" / "000000.dcm", _dcm(_crop(99)))
    rows, good = [], []
    for n in range(1, 25):
        if rng.random() < 0.5:
            rows += _damage(rng, n, src, tmp_path)
        else:
            _write(src / _folder_path(n), _dcm(_crop(n)))
            rows.append(_row(f"P_{n:05d}", _folder_path(n)))
            good.append(f"P_{n:05d}")
    rng.shuffle(rows)
    _write_csv(src / TRAIN_CSV, rows)
    before = _files(tmp_path)
    index, rejects, manifest = _ingest(src, out)
    assert manifest["counts"]["rows_in"] == len(rows) == len(index) + len(rejects)
    assert set(good) <= set(index["patient_id"])  # every good record made it
    assert {p for p in _files(tmp_path) - before if out not in p.parents} == set()
    assert all(r for r in rejects["reason"])


@pytest.mark.parametrize("first_dim", [-1, None, 3])
def test_v2_fp32_limit_holds_for_every_shape_form(first_dim):
    pytest.importorskip("kserve")
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferInput, InferRequest

    from mammosynth.serving.inputs import Limits, v2_inputs

    s, n = 4, 3
    inp = InferInput("tensor", [first_dim, s, s, 1], "FP32", data=[0.5] * (n * s * s))
    request = InferRequest(model_name="m", infer_inputs=[inp])
    with pytest.raises(InvalidInput, match="the limit is 2"):
        v2_inputs(request, s, Limits(max_instances=2))
    ok = InferInput("tensor", [first_dim, s, s, 1], "FP32", data=[0.5] * (n * s * s))
    assert v2_inputs(InferRequest(model_name="m", infer_inputs=[ok]), s, Limits(max_instances=3)).shape == (
        3,
        s,
        s,
        1,
    )
