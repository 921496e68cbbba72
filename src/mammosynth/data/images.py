"""One pixel budget for every decoder, and the PNG/JPEG/TIFF decoder that honours it.

Every decoder (DICOM of any transfer syntax, PIL images) checks rows × columns × frames × samples
from the *header* against `max_pixels` before pixel data is read or inflated; over it the file is
refused with `PixelBudgetExceeded` (ingest: a reject; serving: HTTP 413). The default (40 Mpx) fits
a full-field mammogram (~4000 × 6000 = 24 Mpx) with room; set ``MAMMOSYNTH_MAX_PIXELS`` to change it.
PIL's own ``Image.MAX_IMAGE_PIXELS`` is set to the same number so no other PIL call in the process
can decode a larger image either.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np

DEFAULT_MAX_PIXELS = 40_000_000
ENV_MAX_PIXELS = "MAMMOSYNTH_MAX_PIXELS"


class ImageDecodeError(ValueError):
    """An image file cannot be decoded; the message says why (never echoing file content)."""


class PixelBudgetExceeded(ImageDecodeError):
    """The header declares more pixels than the budget allows (refused before any allocation)."""


def max_pixels() -> int:
    """The pixel budget: ``MAMMOSYNTH_MAX_PIXELS`` if set to a positive integer, else 40 Mpx.

    Raises:
        ValueError: the environment variable is set but not a positive integer.
    """
    text = os.environ.get(ENV_MAX_PIXELS, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(
            f"{ENV_MAX_PIXELS}={text!r} is not a positive integer; unset it or give e.g. 40000000"
        )
    return value


def check_budget(name: str, *dims: int, limit: int | None = None) -> None:
    """Refuse an image whose declared dimensions multiply to more than the budget.

    Args:
        name: how to refer to the file in the error.
        dims: declared sizes (rows, columns, frames, samples...).
        limit: the budget (default `max_pixels`).

    Raises:
        PixelBudgetExceeded: over the budget, or a dimension is negative.
    """
    limit = max_pixels() if limit is None else limit
    total = 1
    for d in dims:
        if d < 0:
            raise PixelBudgetExceeded(f"{name}: negative image dimension in header")
        total *= int(d)
    if total > limit:
        shape = " x ".join(str(int(d)) for d in dims)
        raise PixelBudgetExceeded(
            f"{name}: image header declares {shape} = {total} pixels, over the pixel budget of {limit} "
            f"({ENV_MAX_PIXELS}); send or ingest a smaller image"
        )


def _set_pil_limit(limit: int) -> None:
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = limit


def decode_pil(raw: bytes, name: str, *, limit: int | None = None) -> np.ndarray:
    """Decode PNG/JPEG/TIFF bytes to a 2-D grayscale (or native-mode) array within the budget.

    Args:
        raw: file bytes.
        name: how to refer to the file in errors.
        limit: pixel budget (default `max_pixels`).

    Returns:
        The pixel array (uint8 for 8-bit images, uint16/int32 for 16-bit ones).

    Raises:
        PixelBudgetExceeded: the header declares more pixels (× frames) than the budget.
        ImageDecodeError: not an image, truncated or corrupt.
    """
    from PIL import Image, UnidentifiedImageError

    limit = max_pixels() if limit is None else limit
    _set_pil_limit(limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as img:
                check_budget(name, img.height, img.width, getattr(img, "n_frames", 1), limit=limit)
                img.load()
                if img.mode not in ("L", "I;16", "I;16B", "I", "F"):
                    img = img.convert("L")
                pixels = np.asarray(img)
    except PixelBudgetExceeded:
        raise
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a PNG/JPEG/TIFF image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PixelBudgetExceeded(f"{name}: image is over the pixel budget of {limit}") from exc
    except MemoryError as exc:
        raise PixelBudgetExceeded(f"{name}: image too large to decode in memory") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "this file is unusable"
        raise ImageDecodeError(
            f"{name}: image could not be decoded ({type(exc).__name__}); the file may be truncated or corrupt"
        ) from exc
    if pixels.size == 0:
        raise ImageDecodeError(f"{name}: image has zero size")
    return pixels


def sniff(raw: bytes) -> str:
    """Detect an encoded file's kind by its magic bytes.

    Returns:
        ``"dicom"`` (``DICM`` at offset 128), ``"png"``, ``"jpeg"``, ``"tiff"`` or ``""`` (unknown).
    """
    if len(raw) >= 132 and raw[128:132] == b"DICM":
        return "dicom"
    if raw.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if raw.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if raw[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    return ""
