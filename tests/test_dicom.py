"""DICOM decoding: the three real CBIS-DDSM crops, crop/mask recognition, and every bad-input kind."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from mammosynth.data import phantom
from mammosynth.data.dicom import DicomError, DicomImage, decode_dicom, is_roi_mask

# Real CBIS-DDSM crops vendored in the repository (tests/fixtures/cbis-ddsm, with citation).
REAL_DIR = Path(__file__).resolve().parent / "fixtures" / "cbis-ddsm" / "dicom"
# (folder, rows, cols) from the fixtures README.
REAL = [
    ("Mass-Test_P_00016_LEFT_CC_1", 384, 385),
    ("Mass-Test_P_00116_RIGHT_MLO_1", 483, 286),
    ("Mass-Test_P_00116_RIGHT_MLO_2", 486, 497),
]


def _real_file(folder: str) -> Path:
    (path,) = sorted((REAL_DIR / folder).glob("*/*/*.dcm"))
    return path


def _encode(pixels: np.ndarray, description: str = "cropped images", **attrs) -> bytes:
    data = phantom.dicom_bytes(
        pixels,
        folder="Mass-Test_P_00001_LEFT_CC_1",
        series_description=description,
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_uid="1.2.3.4.5",
        laterality="LEFT",
        view="CC",
    )
    if not attrs:
        return data
    ds = pydicom.dcmread(io.BytesIO(data))
    for key, value in attrs.items():
        setattr(ds, key, value)
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.mark.parametrize(("folder", "rows", "cols"), REAL)
def test_real_crops_decode_as_sensible_crops(folder, rows, cols):
    path = _real_file(folder)
    img = decode_dicom(path)
    assert isinstance(img, DicomImage)
    assert img.pixels.shape == (rows, cols) == (img.rows, img.cols)
    assert img.pixels.dtype == np.uint16 and img.bits_stored == 16
    assert img.pixels.max() == 65535 and img.pixels.min() < 30000
    assert np.unique(img.pixels[::4, ::4]).size > 1000  # a grey-level texture, not a mask
    assert img.photometric == "MONOCHROME2" and img.modality == "MG"
    assert img.series_description == "cropped images"
    # Two of them sit in "ROI mask images" folders; content and description say crop.
    assert not is_roi_mask(img)
    assert np.array_equal(decode_dicom(path.read_bytes()).pixels, img.pixels)


def test_masks_are_recognised_by_content_not_name():
    mask = np.zeros((40, 50), np.uint8)
    mask[10:20, 15:30] = 255
    assert is_roi_mask(decode_dicom(_encode(mask, "ROI mask images")))
    # A mislabelled binary 8-bit image is still a mask; a textured image labelled mask is a crop.
    assert is_roi_mask(decode_dicom(_encode(mask, "cropped images")))
    crop = np.random.default_rng(0).integers(1000, 60000, (40, 50)).astype(np.uint16)
    assert not is_roi_mask(decode_dicom(_encode(crop, "ROI mask images")))
    # A constant image can only be told apart by its description.
    flat = np.full((8, 8), 7, np.uint16)
    assert not is_roi_mask(decode_dicom(_encode(flat, "cropped images")))
    assert is_roi_mask(decode_dicom(_encode(np.zeros((8, 8), np.uint8), "ROI mask images")))


def test_monochrome1_is_inverted_and_rescale_applied():
    px = np.array([[0, 100], [4000, 4095]], np.uint16)
    inv = decode_dicom(_encode(px, PhotometricInterpretation="MONOCHROME1", BitsStored=12, HighBit=11))
    assert inv.photometric == "MONOCHROME1"
    assert inv.pixels.tolist() == [[4095, 3995], [95, 0]]
    scaled = decode_dicom(_encode(px, RescaleSlope=2, RescaleIntercept=-10))
    assert scaled.pixels.dtype == np.float32
    assert scaled.pixels.tolist() == [[-10.0, 190.0], [7990.0, 8180.0]]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[object, str]]:
    real = _real_file(REAL[0][0]).read_bytes()
    no_pixels = pydicom.dcmread(io.BytesIO(real))
    del no_pixels.PixelData
    buf_np = io.BytesIO()
    no_pixels.save_as(buf_np)
    mpeg = pydicom.dcmread(io.BytesIO(real))
    mpeg.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG-2: no decoder plugin exists
    mpeg.PixelData = encapsulate([b"\x00" * 64])
    buf_mpeg = io.BytesIO()
    mpeg.save_as(buf_mpeg)
    (tmp_path / "empty.dcm").write_bytes(b"")
    return {
        "empty": (tmp_path / "empty.dcm", "empty file"),
        "empty-bytes": (b"", "empty file"),
        "missing": (tmp_path / "nope.dcm", "file not found"),
        "not-dicom": (b"%PDF-1.4 this is not a mammogram" * 20, "not a DICOM file"),
        "truncated-pixels": (real[: len(real) // 2], "truncated"),
        "truncated-header": (real[:200], "truncated"),
        "no-pixel-data": (buf_np.getvalue(), "no pixel data"),
        "compressed-no-handler": (buf_mpeg.getvalue(), "no installed handler"),
    }


@pytest.mark.parametrize(
    "kind",
    [
        "empty",
        "empty-bytes",
        "missing",
        "not-dicom",
        "truncated-pixels",
        "truncated-header",
        "no-pixel-data",
        "compressed-no-handler",
    ],
)
def test_bad_inputs_raise_clear_dicom_errors(tmp_path, kind):
    source, expected = _bad_inputs(tmp_path)[kind]
    with pytest.raises(DicomError, match=expected) as info:
        decode_dicom(source)
    assert isinstance(info.value, ValueError)


def test_error_names_the_source(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"garbage" * 10)
    with pytest.raises(DicomError, match="broken.dcm"):
        decode_dicom(path)
