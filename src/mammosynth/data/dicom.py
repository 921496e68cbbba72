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
import zlib
from dataclasses import dataclass

import numpy as np

from mammosynth.data.images import ENV_MAX_PIXELS, PixelBudgetExceeded, check_budget, max_pixels

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


DEFLATED = "1.2.840.10008.1.2.1.99"
# Inflated dataset bytes allowed per budget pixel (up to 32-bit samples) plus room for the header.
INFLATE_BYTES_PER_PIXEL = 4
INFLATE_HEADER_ROOM = 1 << 20


class DicomTooLarge(DicomError, PixelBudgetExceeded):
    """The DICOM declares (or inflates to) more pixels than the pixel budget allows."""


# Deepest sequence nesting accepted (a top-level sequence is depth 1). Mammograms nest a few levels;
# pydicom parses nested sequences recursively, so a hostile file nested hundreds deep would otherwise
# end in a RecursionError (or, lazily parsed, in whatever code walks the dataset later).
MAX_SEQUENCE_DEPTH = 64


def _too_deep(name: str) -> DicomError:
    return DicomError(
        f"{name}: DICOM sequences nested more than {MAX_SEQUENCE_DEPTH} levels deep; refused as hostile or "
        "corrupt (mammograms nest a few levels); re-export the image without the nested sequences"
    )


def _check_nesting(ds, name: str) -> None:
    """Walk the sequences level by level (no recursion), refusing nesting over `MAX_SEQUENCE_DEPTH`.

    pydicom converts a defined-length sequence only when it is accessed, one level at a time, so the
    walk never recurses deeper than one level; an undefined-length one is parsed while reading, where
    too deep a nesting already ended in the RecursionError that the callers turn into the same error.

    Raises:
        DicomError: the nesting is deeper than `MAX_SEQUENCE_DEPTH`.
    """
    from pydicom.datadict import dictionary_has_tag, dictionary_VR

    pending = [(ds, 0)]
    while pending:
        item, depth = pending.pop()
        for elem in list(item.elements()):  # raw (unconverted) elements: nothing below is parsed yet
            vr = elem.VR
            if vr is None and dictionary_has_tag(elem.tag):  # implicit VR: the dictionary knows
                vr = dictionary_VR(elem.tag)
            if vr != "SQ":
                continue
            if depth + 1 > MAX_SEQUENCE_DEPTH:
                raise _too_deep(name)
            pending.extend((child, depth + 1) for child in item[elem.tag].value)


def _read_bytes(source: bytes | str | os.PathLike, name: str) -> bytes:
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        try:
            with open(source, "rb") as fh:
                data = fh.read()
        except FileNotFoundError as exc:
            raise DicomError(f"{name}: file not found") from exc
        except OSError as exc:
            raise DicomError(f"{name}: cannot read file ({exc.strerror or type(exc).__name__})") from exc
    if not data:
        raise DicomError(f"{name}: empty file (0 bytes); re-download it")
    return data


def _check_deflate(data: bytes, name: str, limit: int) -> None:
    """For a Deflated transfer syntax, inflate with a cap before pydicom inflates it unbounded."""
    from pydicom.filereader import _read_file_meta_info, read_preamble

    if DEFLATED.encode() not in data[:8192]:
        return
    fp = io.BytesIO(data)
    try:
        read_preamble(fp, False)
        meta = _read_file_meta_info(fp)
    except Exception:  # noqa: BLE001 - a broken meta header is reported by the full parse
        return
    if str(meta.get("TransferSyntaxUID", "")) != DEFLATED:
        return
    cap = limit * INFLATE_BYTES_PER_PIXEL + INFLATE_HEADER_ROOM
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        inflater.decompress(data[fp.tell() :], cap)
    except zlib.error as exc:
        raise DicomError(f"{name}: corrupt deflated DICOM data; re-download it") from exc
    if inflater.unconsumed_tail:
        raise DicomTooLarge(
            f"{name}: deflated DICOM inflates to more than {cap} bytes, over the pixel budget of {limit} "
            f"({ENV_MAX_PIXELS}); refused before inflating"
        )


def _read_dataset(source: bytes | str | os.PathLike, name: str, limit: int):
    import pydicom
    from pydicom.errors import InvalidDicomError

    data = _read_bytes(source, name)
    _check_deflate(data, name, limit)
    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        _check_nesting(ds, name)
        return ds
    except InvalidDicomError:
        pass
    except RecursionError:
        raise _too_deep(name) from None  # the thousand-frame traceback helps nobody
    except DicomError:
        raise
    except MemoryError as exc:
        raise DicomTooLarge(f"{name}: DICOM too large to parse in memory") from exc
    except Exception as exc:  # noqa: BLE001 - any parser failure: name its kind, never its content
        raise DicomError(
            f"{name}: truncated or corrupt DICOM ({type(exc).__name__}); re-download it"
        ) from exc
    # Some exporters omit the 128-byte preamble; accept those only if real elements parse.
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        has_image = "PixelData" in ds or "Rows" in ds or "SOPClassUID" in ds
        _check_nesting(ds, name)
    except RecursionError:
        raise _too_deep(name) from None
    except DicomError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser failure here means "not DICOM"
        raise DicomError(f"{name}: not a DICOM file (no 'DICM' marker and no parsable elements)") from exc
    if not has_image:
        raise DicomError(f"{name}: not a DICOM file (no 'DICM' marker and no image elements)")
    return ds


def _int_attr(ds, keyword: str, default: int, label: str) -> int:
    value = ds.get(keyword, default)
    try:
        number = int(default if value in (None, "") else value)
    except (TypeError, ValueError) as exc:
        raise DicomError(f"{label}: {keyword} is not an integer") from exc
    return number


def _check_header(ds, label: str, limit: int) -> None:
    """Rows × Columns × frames × samples from the header, against the budget, before any decode."""
    dims = [_int_attr(ds, k, d, label) for k, d in (("Rows", 0), ("Columns", 0))]
    dims += [
        max(_int_attr(ds, "NumberOfFrames", 1, label), 1),
        max(_int_attr(ds, "SamplesPerPixel", 1, label), 1),
    ]
    if dims[0] <= 0 or dims[1] <= 0:
        raise DicomError(f"{label}: Rows/Columns missing or zero in the header; not a usable image")
    try:
        check_budget(label, *dims, limit=limit)
    except PixelBudgetExceeded as exc:
        raise DicomTooLarge(str(exc)) from exc


def decode_dicom(
    source: bytes | str | os.PathLike, *, name: str | None = None, limit: int | None = None
) -> DicomImage:
    """Decode one single-frame grayscale DICOM image.

    Args:
        source: the file's bytes, or a path to it.
        name: how to refer to the source in errors (default: the path, or "<bytes>").
        limit: pixel budget (default `mammosynth.data.images.max_pixels`), checked from the header
            (and, for the Deflated syntax, on the inflated size) before pixel data is decoded.

    Returns:
        A `DicomImage` whose ``pixels`` are 2-D: native integers (16-bit kept) when no rescale or
        VOI LUT applies, float32 otherwise; MONOCHROME1 is inverted so bright = dense everywhere.

    Raises:
        DicomTooLarge: over the pixel budget (a `DicomError` and a `PixelBudgetExceeded`).
        DicomError: not DICOM, empty, truncated, no pixel data, a compressed transfer syntax with
            no installed decoder, not a single 2-D grayscale frame, non-finite or degenerate
            rescale/window values. Messages never echo element values.
    """
    label = name or (str(source) if isinstance(source, str | os.PathLike) else "<bytes>")
    limit = max_pixels() if limit is None else limit
    try:
        return _decode(source, label, limit)
    except DicomError:
        raise
    except MemoryError as exc:
        raise DicomTooLarge(f"{label}: image too large to decode in memory") from exc
    except Exception as exc:  # noqa: BLE001 - one bad file is one clear error, never a crash
        raise DicomError(
            f"{label}: invalid DICOM ({type(exc).__name__} while decoding); re-download it"
        ) from exc


def _decode(source, label: str, limit: int) -> DicomImage:
    ds = _read_dataset(source, label, limit)
    if "PixelData" not in ds:
        if len(ds) == 0:
            raise DicomError(f"{label}: truncated DICOM (nothing after the file meta header); re-download it")
        raise DicomError(
            f"{label}: no pixel data (PixelData element absent: not an image object, or the file is "
            "truncated before its pixels)"
        )
    _check_header(ds, label, limit)
    arr = _pixel_array(ds, label)
    if arr.ndim != 2:
        raise DicomError(
            f"{label}: expected one 2-D grayscale frame, got pixel array of shape {arr.shape} "
            f"(SamplesPerPixel={ds.get('SamplesPerPixel', '?')}, NumberOfFrames={ds.get('NumberOfFrames', 1)})"
        )
    if arr.size == 0:
        raise DicomError(f"{label}: pixel data has zero size ({arr.shape})")
    raw_constant = float(arr.min()) == float(arr.max())
    arr = _apply_luts(arr, ds, label)
    if not np.isfinite(arr).all():
        raise DicomError(f"{label}: rescale/VOI LUT produced non-finite pixels; the file's LUT is invalid")
    if not raw_constant and float(arr.min()) == float(arr.max()):
        raise DicomError(
            f"{label}: rescale/VOI LUT maps the image to one constant value; the LUT is degenerate"
        )
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "MONOCHROME1":
        arr = _invert(arr, ds)
    return DicomImage(
        pixels=arr,
        series_description=str(ds.get("SeriesDescription", "") or "").strip(),
        bits_stored=_int_attr(ds, "BitsStored", arr.dtype.itemsize * 8, label),
        rows=int(arr.shape[0]),
        cols=int(arr.shape[1]),
        photometric=photometric,
        modality=str(ds.get("Modality", "") or ""),
    )


def _pixel_array(ds, label: str) -> np.ndarray:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        # Frames beyond NumberOfFrames would be decoded past the header's budget check: never.
        ds.pixel_array_options(allow_excess_frames=False)
        return np.asarray(ds.pixel_array)
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
            "the file is probably truncated or corrupt"
        ) from exc
    except (ValueError, EOFError, struct.error, AttributeError, KeyError, TypeError) as exc:
        raise DicomError(
            f"{label}: truncated or inconsistent pixel data ({type(exc).__name__}); re-download it"
        ) from exc


def _invert(arr: np.ndarray, ds) -> np.ndarray:
    """MONOCHROME1: low values are bright; invert within the stored range."""
    if np.issubdtype(arr.dtype, np.integer):
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
        top = (1 << bits) - 1 if not np.issubdtype(arr.dtype, np.signedinteger) else int(arr.max())
        low = 0 if not np.issubdtype(arr.dtype, np.signedinteger) else int(arr.min())
        return (top + low - arr.astype(np.int64)).astype(arr.dtype)
    return (float(arr.max()) + float(arr.min()) - arr).astype(np.float32)


def _finite_number(ds, keyword: str, default: float, label: str) -> float:
    """The first value of a numeric attribute, required finite (names the keyword, never the value)."""
    value = ds.get(keyword, default)
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return default
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise DicomError(
            f"{label}: {keyword} is not a number; the file's LUT attributes are invalid"
        ) from exc
    if not np.isfinite(number):
        raise DicomError(f"{label}: {keyword} is not finite; the file's LUT attributes are invalid")
    return number


def _apply_luts(arr: np.ndarray, ds, label: str) -> np.ndarray:
    """Modality LUT (rescale) then VOI LUT, only when the file defines a non-identity one.

    Raises:
        DicomError: RescaleSlope/Intercept/WindowCenter/WindowWidth non-numeric or non-finite, a zero
            slope, or a window width below 1.
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    slope = _finite_number(ds, "RescaleSlope", 1.0, label)
    intercept = _finite_number(ds, "RescaleIntercept", 0.0, label)
    if slope == 0.0:
        raise DicomError(f"{label}: RescaleSlope is 0 (every pixel would be the same); the LUT is invalid")
    if "ModalityLUTSequence" in ds or slope != 1.0 or intercept != 0.0:
        arr = np.asarray(apply_modality_lut(arr, ds), np.float32)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        if "VOILUTSequence" not in ds:
            _finite_number(ds, "WindowCenter", 0.0, label)
            if "WindowWidth" not in ds or _finite_number(ds, "WindowWidth", 0.0, label) < 1.0:
                raise DicomError(f"{label}: WindowWidth is missing or below 1; the VOI window is invalid")
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
