"""DICOM decoding for mammograms, shared by ingest and the model server.

`decode_dicom` turns DICOM bytes or a file into display-ready pixels (modality LUT, VOI LUT when
the file carries one, MONOCHROME1 inverted) and says clearly why a file cannot be used.
`is_roi_mask` tells a CBIS-DDSM ROI mask from a cropped image by content and SeriesDescription,
because the CSVs' file numbers and the folder names are both unreliable (see the fixtures README).
"""

from __future__ import annotations

import io
import os
import struct
from dataclasses import dataclass

import numpy as np

MASK_DESCRIPTION = "roi mask images"
CROP_DESCRIPTION = "cropped images"
FULL_DESCRIPTION = "full mammogram images"


class DicomError(ValueError):
    """A DICOM file cannot be decoded into an image; the message says why and what to do."""


@dataclass
class DicomImage:
    """Decoded pixels plus the few attributes ingest needs. No patient attributes are kept."""

    pixels: np.ndarray  # 2-D; native unsigned/signed int unless a LUT produced floats (float32)
    series_description: str
    bits_stored: int
    rows: int
    cols: int
    photometric: str
    modality: str


def _read_dataset(source: bytes | str | os.PathLike, name: str):
    import pydicom
    from pydicom.errors import InvalidDicomError

    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            raise DicomError(f"{name}: file not found") from exc
        except OSError as exc:
            raise DicomError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise DicomError(f"{name}: empty file (0 bytes); re-download it")
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except InvalidDicomError:
        pass
    except (EOFError, OSError, ValueError, struct.error) as exc:
        raise DicomError(f"{name}: truncated or corrupt DICOM ({exc}); re-download it") from exc
    # Some exporters omit the 128-byte preamble; accept those only if real elements parse.
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as exc:  # noqa: BLE001 - any parser failure here means "not DICOM"
        raise DicomError(f"{name}: not a DICOM file (no 'DICM' marker and no parsable elements)") from exc
    if "PixelData" not in ds and "Rows" not in ds and "SOPClassUID" not in ds:
        raise DicomError(f"{name}: not a DICOM file (no 'DICM' marker and no image elements)")
    return ds


def decode_dicom(source: bytes | str | os.PathLike, *, name: str | None = None) -> DicomImage:
    """Decode one single-frame grayscale DICOM image.

    Args:
        source: the file's bytes, or a path to it.
        name: how to refer to the source in errors (default: the path, or "<bytes>").

    Returns:
        A `DicomImage` whose ``pixels`` are 2-D: native integers (16-bit kept) when no rescale or
        VOI LUT applies, float32 otherwise; MONOCHROME1 is inverted so bright = dense everywhere.

    Raises:
        DicomError: not DICOM, empty, truncated, no pixel data, a compressed transfer syntax with
            no installed decoder, or not a single 2-D grayscale frame.
    """
    label = name or (str(source) if isinstance(source, str | os.PathLike) else "<bytes>")
    ds = _read_dataset(source, label)
    if "PixelData" not in ds:
        if len(ds) == 0:
            raise DicomError(f"{label}: truncated DICOM (nothing after the file meta header); re-download it")
        raise DicomError(
            f"{label}: no pixel data (PixelData element absent: not an image object, or the file is "
            "truncated before its pixels)"
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        text = str(exc)
        if isinstance(exc, NotImplementedError) or "missing dependencies" in text or "no plugins" in text:
            raise DicomError(
                f"{label}: cannot decode pixel data in transfer syntax {syntax!s} "
                f"({getattr(syntax, 'name', 'unknown')}): no installed handler; install "
                "pylibjpeg with pylibjpeg-libjpeg / pylibjpeg-openjpeg, or decompress the file first"
            ) from exc
        raise DicomError(
            f"{label}: compressed pixel data ({getattr(syntax, 'name', syntax)}) failed to decode; "
            f"the file is probably truncated or corrupt: {text.splitlines()[0]}"
        ) from exc
    except (ValueError, EOFError, struct.error, AttributeError, KeyError) as exc:
        raise DicomError(f"{label}: truncated or inconsistent pixel data ({exc}); re-download it") from exc
    arr = np.asarray(arr)
    if arr.ndim != 2:
        raise DicomError(
            f"{label}: expected one 2-D grayscale frame, got pixel array of shape {arr.shape} "
            f"(SamplesPerPixel={ds.get('SamplesPerPixel', '?')}, NumberOfFrames={ds.get('NumberOfFrames', 1)})"
        )
    if arr.size == 0:
        raise DicomError(f"{label}: pixel data has zero size ({arr.shape})")
    arr = _apply_luts(arr, ds)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "MONOCHROME1":
        # Low values are bright in MONOCHROME1; invert within the stored range.
        if np.issubdtype(arr.dtype, np.integer):
            bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
            top = (1 << bits) - 1 if not np.issubdtype(arr.dtype, np.signedinteger) else int(arr.max())
            low = 0 if not np.issubdtype(arr.dtype, np.signedinteger) else int(arr.min())
            arr = (top + low - arr.astype(np.int64)).astype(arr.dtype)
        else:
            arr = (float(arr.max()) + float(arr.min()) - arr).astype(np.float32)
    return DicomImage(
        pixels=arr,
        series_description=str(ds.get("SeriesDescription", "") or "").strip(),
        bits_stored=int(ds.get("BitsStored", arr.dtype.itemsize * 8)),
        rows=int(arr.shape[0]),
        cols=int(arr.shape[1]),
        photometric=photometric,
        modality=str(ds.get("Modality", "") or ""),
    )


def _apply_luts(arr: np.ndarray, ds) -> np.ndarray:
    """Modality LUT (rescale) then VOI LUT, only when the file defines a non-identity one."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if "ModalityLUTSequence" in ds or slope != 1.0 or intercept != 0.0:
        arr = np.asarray(apply_modality_lut(arr, ds), np.float32)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        arr = np.asarray(apply_voi_lut(arr, ds, prefer_lut=True), np.float32)
    return arr


def is_binary(pixels: np.ndarray) -> bool:
    """True when an image holds at most two distinct values (without a full np.unique)."""
    lo, hi = pixels.min(), pixels.max()
    return not bool(np.any((pixels != lo) & (pixels != hi)))


def is_roi_mask(img: DicomImage) -> bool:
    """Decide whether a decoded CBIS-DDSM image is an ROI mask (True) or a crop/full image (False).

    Content decides: masks are binary (two values, 0 and the maximum, typically 8-bit 0/255) while
    crops carry a grey-level texture. The SeriesDescription only breaks the tie for a degenerate
    image that is constant. File numbers and folder names are never used: both are wrong in real
    CBIS-DDSM downloads.
    """
    pixels = img.pixels
    desc = img.series_description.strip().lower()
    if float(pixels.min()) == float(pixels.max()):
        return desc == MASK_DESCRIPTION
    if not is_binary(pixels):
        return False
    # Two values: a mask uses 0 as background; an 8-bit store or the description confirms it.
    return float(pixels.min()) == 0.0 and (
        img.bits_stored <= 8 or desc == MASK_DESCRIPTION or float(pixels.max()) in (1.0, 255.0, 65535.0)
    )
