"""Turn request payloads (v1 instances, v2 tensors) into the classifier's input batch.

Every image, whatever its encoding, goes through `mammosynth.preprocess.prepare_image`, the same
function the preprocess stage used to build the training shards. Every way a payload can be wrong
raises `kserve.errors.InvalidInput` (HTTP 400) with a message naming the field, what was received and
what to send instead.
"""

from __future__ import annotations

import base64
import binascii
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import HTTPException
from kserve.errors import InvalidInput

from mammosynth.data.images import ImageDecodeError, PixelBudgetExceeded, decode_pil, sniff
from mammosynth.preprocess import prepare_image

# Pre-processed tensors are model input already; allow float rounding slack around [0, 1].
RANGE_SLACK = 1e-3


class PayloadTooLarge(HTTPException):
    """An image over the pixel budget (`mammosynth.data.images.max_pixels`): HTTP 413 with the reason."""

    def __init__(self, detail: str) -> None:
        super().__init__(status_code=413, detail=detail)


@dataclass(frozen=True)
class Limits:
    """Request bounds enforced per request.

    Attributes:
        max_instances: most images one request may carry.
        max_payload_bytes: largest request body accepted (enforced by the HTTP middleware).
    """

    max_instances: int = 64
    max_payload_bytes: int = 64 * 1024 * 1024


def b64decode(text: Any, where: str) -> bytes:
    """Strictly decode base64 (standard alphabet, padding required), naming ``where`` on failure."""
    if isinstance(text, bytes):
        data = text
    elif isinstance(text, str):
        try:
            data = text.encode("ascii")
        except UnicodeEncodeError as exc:
            raise InvalidInput(
                f"{where}: base64 text has non-ASCII characters; send standard "
                "base64 (A-Z a-z 0-9 + /, with = padding)"
            ) from exc
    else:
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInput(f"{where}: not valid base64 ({exc}); send standard base64 with = padding") from exc
    if not raw:
        raise InvalidInput(f"{where}: base64 decodes to zero bytes; send the encoded image or DICOM file")
    return raw


def is_dicom(raw: bytes) -> bool:
    """True for a DICOM Part 10 file (``DICM`` magic after the 128-byte preamble)."""
    return sniff(raw) == "dicom"


def decode_image_bytes(raw: bytes, where: str) -> np.ndarray:
    """Decode PNG/JPEG/TIFF bytes within the pixel budget (`mammosynth.data.images.decode_pil`)."""
    try:
        return decode_pil(raw, where)
    except PixelBudgetExceeded as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except ImageDecodeError as exc:
        raise InvalidInput(str(exc)) from exc


def decode_dicom_bytes(raw: bytes, where: str) -> np.ndarray:
    """Decode DICOM bytes with the project's one DICOM reader (`mammosynth.data.dicom`)."""
    # Imported here: the reader pulls in pydicom and its pixel handlers, which only DICOM requests need.
    from mammosynth.data.dicom import DicomError, decode_dicom

    try:
        return np.asarray(decode_dicom(raw, name=where).pixels)
    except PixelBudgetExceeded as exc:
        raise PayloadTooLarge(str(exc)) from exc
    except (DicomError, ImageDecodeError) as exc:
        raise InvalidInput(str(exc)) from exc


def encoded_to_input(raw: bytes, image_size: int, where: str, kind: str = "auto") -> np.ndarray:
    """Decode one encoded image or DICOM and prepare it as a (S,S,1) float32 model input.

    Args:
        raw: file bytes.
        image_size: model input side S.
        where: request location for error messages (``instances[3].image``).
        kind: ``"dicom"`` forces the DICOM reader (the deprecated v1 ``dicom`` field); ``"auto"``
            detects DICOM/PNG/JPEG/TIFF by content (`mammosynth.data.images.sniff`).

    Returns:
        The (S,S,1) float32 input, made by `mammosynth.preprocess.prepare_image`.

    Raises:
        InvalidInput: unknown format or corrupt (HTTP 400).
        HTTPException: 413, the header declares more pixels than ``MAMMOSYNTH_MAX_PIXELS`` allows.
    """
    found = "dicom" if kind == "dicom" else sniff(raw)
    if found == "dicom":
        pixels = decode_dicom_bytes(raw, where)
    elif found in ("png", "jpeg", "tiff"):
        pixels = decode_image_bytes(raw, where)
    else:
        raise InvalidInput(
            f"{where}: bytes are not a PNG/JPEG/TIFF image or a DICOM file (format detected by content); "
            "send the base64 of the file itself, or a preprocessed array as 'tensor'"
        )
    try:
        return prepare_image(pixels, image_size)
    except ValueError as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def tensor_to_input(value: Any, image_size: int, where: str) -> np.ndarray:
    """Validate one pre-processed image given as a nested list/array of shape (S,S,1) or (S,S)."""
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise InvalidInput(
            f"{where}: expected a numeric (S,S,1) or (S,S) nested list with S={image_size}, "
            f"got something that is not a rectangular array of numbers ({exc})"
        ) from exc
    return check_tensor(arr, image_size, where, batched=False)[0]


def check_tensor(arr: np.ndarray, image_size: int, where: str, batched: bool) -> np.ndarray:
    """Validate a float tensor's shape and range; return it as (N,S,S,1) float32."""
    want = (image_size, image_size)
    lead = 1 if batched else 0
    shape = arr.shape
    if shape[lead:] == want:
        arr = arr[..., None]
    elif shape[lead:] != (*want, 1):
        expect = f"[N,{image_size},{image_size},1]" if batched else f"({image_size},{image_size},1)"
        raise InvalidInput(
            f"{where}: tensor has shape {list(shape)}, expected {expect}; resize with "
            "mammosynth.preprocess.prepare_image or send an encoded image instead"
        )
    arr = arr.astype(np.float32, copy=False)
    # One pass each for min and max: a NaN propagates into both, so the finite check only runs when
    # they are out of range (this runs per request on the event loop).
    lo, hi = float(arr.min(initial=0.0)), float(arr.max(initial=0.0))
    if not (-RANGE_SLACK <= lo and hi <= 1 + RANGE_SLACK):
        if not np.isfinite(arr).all():
            raise InvalidInput(f"{where}: tensor contains NaN or infinite values")
        raise InvalidInput(
            f"{where}: tensor values span [{lo:g}, {hi:g}] but the model takes intensities "
            "in [0, 1]; apply mammosynth.preprocess.prepare_image first"
        )
    if lo < 0.0 or hi > 1.0:  # within the rounding slack: clip (a copy only then)
        arr = np.clip(arr, 0.0, 1.0)
    return arr if batched else arr[None]


def _check_count(n: int, limits: Limits, where: str) -> None:
    if n == 0:
        raise InvalidInput(f"{where}: no images in the request; send at least one")
    if n > limits.max_instances:
        raise InvalidInput(
            f"{where}: {n} images in one request, the limit is {limits.max_instances}; split the request"
        )


def v1_instances(payload: Any, image_size: int, limits: Limits) -> np.ndarray:
    """Decode a v1 body ``{"instances": [...]}`` into an (N,S,S,1) float32 batch.

    Each instance is ``{"image": <base64 PNG/JPEG/TIFF/DICOM>}`` (format detected by content) or
    ``{"tensor": <(S,S,1) or (S,S) nested list>}`` (preprocessed, values in [0, 1]); the same two names
    as the v2 inputs. Also accepted: a bare nested list (a tensor), ``{"b64": ...}`` (KServe's alias of
    ``image``) and ``{"dicom": ...}`` (deprecated alias of ``image`` that insists on DICOM).

    Raises:
        InvalidInput: anything malformed, naming the instance index.
    """
    if not isinstance(payload, dict):
        raise InvalidInput(
            f'request body must be a JSON object {{"instances": [...]}}, got {type(payload).__name__}'
        )
    if "instances" not in payload:
        keys = sorted(payload)[:5]
        raise InvalidInput(
            f'request body lacks "instances" (got keys {keys}); v1 requests send '
            '{"instances": [{"image": <base64 file>} | {"tensor": [[...]]}]}'
        )
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, got {type(instances).__name__}')
    _check_count(len(instances), limits, "instances")
    batch = np.empty((len(instances), image_size, image_size, 1), np.float32)
    for i, inst in enumerate(instances):
        batch[i] = _v1_instance(inst, image_size, f"instances[{i}]")
    return batch


# v1 instance keys: "image" (content-detected), "b64" (KServe's alias), "dicom" (deprecated alias).
V1_ENCODED = ("image", "b64", "dicom")


def _v1_instance(inst: Any, image_size: int, where: str) -> np.ndarray:
    """One v1 instance: ``{"image": b64}``, ``{"tensor": [[...]]}``, a bare nested list, or an alias."""
    if isinstance(inst, list):
        return tensor_to_input(inst, image_size, where)
    if not isinstance(inst, dict):
        raise InvalidInput(
            f"{where}: expected an object with 'image' (base64 file) or 'tensor' (nested list), "
            f"got {type(inst).__name__}"
        )
    fields = [k for k in (*V1_ENCODED, "tensor") if k in inst]
    if len(fields) != 1:
        raise InvalidInput(
            f"{where}: expected exactly one of 'image' (base64 PNG/JPEG/TIFF/DICOM) or 'tensor' "
            f"(preprocessed array), got keys {sorted(inst)[:5]}"
        )
    field = fields[0]
    if field == "tensor":
        return tensor_to_input(inst["tensor"], image_size, f"{where}.tensor")
    raw = b64decode(inst[field], f"{where}.{field}")
    return encoded_to_input(raw, image_size, f"{where}.{field}", kind="dicom" if field == "dicom" else "auto")


def v2_inputs(request: Any, image_size: int, limits: Limits) -> np.ndarray:
    """Decode an Open Inference Protocol request into an (N,S,S,1) float32 batch.

    Exactly one input: ``image``, BYTES ``[N]`` of base64 PNG/JPEG/TIFF/DICOM files (format detected
    by content; an input named ``dicom`` insists on DICOM), or ``tensor``, FP32 ``[N,S,S,1]`` / ``[N,S,S]``.
    The datatype decides; the name is informational.

    Raises:
        InvalidInput: wrong input count, datatype, shape or content.
    """
    inputs = list(request.inputs or [])
    if len(inputs) != 1:
        names = [i.name for i in inputs]
        raise InvalidInput(
            f"expected exactly one input tensor (BYTES images or FP32 [N,{image_size},"
            f"{image_size},1]), got {len(inputs)}: {names}"
        )
    inp = inputs[0]
    where = f"input '{inp.name}'"
    shape = list(inp.shape or [])
    if inp.datatype == "BYTES":
        if len(shape) != 1:
            raise InvalidInput(f"{where}: BYTES input must have shape [N], got {shape}")
        _check_count(shape[0], limits, where)
        items = _flat_bytes(inp, where)
        if len(items) != shape[0]:
            raise InvalidInput(f"{where}: shape says {shape[0]} elements but {len(items)} were sent")
        kind = "dicom" if inp.name.lower() == "dicom" else "auto"
        batch = np.empty((len(items), image_size, image_size, 1), np.float32)
        for i, item in enumerate(items):
            raw = b64decode(item, f"{where}[{i}]")
            batch[i] = encoded_to_input(raw, image_size, f"{where}[{i}]", kind=kind)
        return batch
    if inp.datatype == "FP32":
        if len(shape) not in (3, 4):
            raise InvalidInput(
                f"{where}: FP32 input must have shape [N,{image_size},{image_size},1], got {shape}"
            )
        if not isinstance(shape[0], int) or shape[0] < 0:
            inp.shape = [-1, *shape[1:]]  # a free batch dimension counts as the data's real size
        elif shape[0] > limits.max_instances:
            _check_count(shape[0], limits, where)
        try:
            arr = fp32_array(inp)
        except (ValueError, TypeError) as exc:
            raise InvalidInput(f"{where}: data does not fill shape {shape} as FP32 ({exc})") from exc
        _check_count(int(arr.shape[0]) if arr.ndim else 0, limits, where)
        return check_tensor(arr.astype(np.float32, copy=False), image_size, where, batched=True)
    raise InvalidInput(
        f"{where}: datatype {inp.datatype} is not accepted; send BYTES (base64 images or "
        f"DICOMs) or FP32 [N,{image_size},{image_size},1]"
    )


def fp32_array(inp: Any) -> np.ndarray:
    """An FP32 input's data as a float32 array of its shape.

    JSON data arrives as a flat list of Python numbers; `np.fromiter` with a known count fills the
    array about twice as fast as KServe's ``np.array(list)`` (``InferInput.as_numpy``), which is kept
    for everything else (binary data, nested lists, a free batch dimension) and for its errors.

    Raises:
        ValueError, TypeError: the data does not fill the shape with numbers.
    """
    data, shape = inp.data, inp.shape
    if type(data) is list and all(type(d) is int and d >= 0 for d in shape) and len(data) == math.prod(shape):
        try:
            return np.fromiter(data, np.float32, len(data)).reshape(shape)
        except (TypeError, ValueError):
            pass  # not flat numbers (nested lists, strings, None): as_numpy decides and words the error
    return inp.as_numpy()


def _flat_bytes(inp: Any, where: str) -> list:
    data = inp.data
    if isinstance(data, np.ndarray):
        return list(data.reshape(-1))
    if not isinstance(data, list):
        raise InvalidInput(f"{where}: BYTES data must be a list of base64 strings")
    flat: list = []
    for item in data:
        flat.extend(item if isinstance(item, list) else [item])
    return flat
