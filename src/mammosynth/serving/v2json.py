"""Plain-JSON v2 FP32 inference bodies parsed by KServe's orjson path instead of the stdlib's.

KServe's v2 REST route takes its body as ``InferenceRequest | bytes``. A JSON body is parsed by
FastAPI with the stdlib ``json`` module and then validated by pydantic: for one 64² FP32 tensor that
parse is ~1.6 ms on the 2-core dev machine, most of what a KServe request costs when the model does
no work (issue 19's profile). A body sent with the Open Inference Protocol's binary-data extension
header ``Inference-Header-Content-Length`` goes to KServe's `InferRequest.from_bytes` instead, which
parses the JSON part with orjson (~0.16 ms). A plain JSON body *is* such a body with no binary part
(its JSON header is all of it), so `V2JsonMiddleware` marks it that way, after checking it has the
structure KServe's own validation would accept; anything else (malformed JSON, other datatypes,
unexpected fields, a body already using the extension) passes through untouched and gets KServe's
usual answer, errors included. The model sees the same `InferRequest` either way (tested).
"""

from __future__ import annotations

import orjson

from mammosynth.serving.limits import replay_receive

_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
EXTENSION_HEADER = b"inference-header-content-length"


def _optional(value, kind: type) -> bool:
    return value is None or isinstance(value, kind)


def _is_int_list(value) -> bool:
    return isinstance(value, list) and all(type(d) is int for d in value)


def plain_fp32_request(doc) -> bool:
    """Whether a parsed v2 body has only FP32 inputs carrying ``data``, every field of its schema's type.

    The same checks ``InferenceRequest`` makes (``id`` str, ``parameters`` object, ``inputs`` with
    str ``name``/``datatype``, int ``shape``, list ``data``; ``outputs`` with str ``name``), without
    pydantic's lax coercions (``"1"`` as a shape): a body that needs one is left to KServe.
    """
    if not isinstance(doc, dict) or not doc.keys() <= _REQUEST_KEYS:
        return False
    if not (_optional(doc.get("id"), str) and _optional(doc.get("parameters"), dict)):
        return False
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        return False
    for item in inputs:
        if not (
            isinstance(item, dict)
            and item.keys() <= _INPUT_KEYS
            and isinstance(item.get("name"), str)
            and item.get("datatype") == "FP32"
            and _is_int_list(item.get("shape"))
            and isinstance(item.get("data"), list)
            and _optional(item.get("parameters"), dict)
        ):
            return False
    outputs = doc.get("outputs")
    if outputs is None:
        return True
    return isinstance(outputs, list) and all(
        isinstance(o, dict)
        and o.keys() <= _OUTPUT_KEYS
        and isinstance(o.get("name"), str)
        and _optional(o.get("parameters"), dict)
        for o in outputs
    )


def _is_json(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";", 1)[0].strip().lower() == b"application/json"


class V2JsonMiddleware:
    """Route plain-JSON v2 FP32 bodies for ``model_name`` through KServe's orjson parse (see module doc).

    Install it inside the payload limit (added before `PayloadLimitMiddleware`), so the body it
    buffers is already bounded.

    Args:
        app: the wrapped ASGI app.
        model_name: the served model; only ``POST /v2/models/<model_name>/infer`` is looked at.
    """

    def __init__(self, app, model_name: str):
        self.app = app
        self.path = f"/v2/models/{model_name}/infer"

    async def __call__(self, scope, receive, send):
        """Mark a plain JSON FP32 body as a binary-extension body with no binary part, or pass through."""
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != self.path:
            return await self.app(scope, receive, send)
        headers = scope.get("headers") or []
        if any(k == EXTENSION_HEADER for k, _ in headers):
            return await self.app(scope, receive, send)
        if not _is_json(next((v for k, v in headers if k == b"content-type"), None)):
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, replay_receive([b"".join(chunks)], message, receive), send)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            plain = plain_fp32_request(orjson.loads(body))
        except orjson.JSONDecodeError:
            plain = False
        if plain:
            kept = [(k, v) for k, v in headers if k != b"content-type"]
            scope = {
                **scope,
                "headers": [
                    *kept,
                    (b"content-type", b"application/octet-stream"),
                    (EXTENSION_HEADER, str(len(body)).encode()),
                ],
            }
        return await self.app(scope, replay_receive([body], None, receive), send)
