"""The v2 JSON fast path: which bodies it marks for KServe's orjson parse, and that it changes nothing else."""

from __future__ import annotations

import asyncio
import json

import pytest

pytest.importorskip("orjson")

from mammosynth.serving.v2json import EXTENSION_HEADER, V2JsonMiddleware, plain_fp32_request  # noqa: E402

PATH = "/v2/models/mammosynth/infer"


def _plain(**extra) -> dict:
    return {
        "inputs": [{"name": "tensor", "shape": [1, 2, 2, 1], "datatype": "FP32", "data": [0.5] * 4}],
        **extra,
    }


def test_plain_fp32_bodies_are_recognised():
    assert plain_fp32_request(_plain())
    assert plain_fp32_request(_plain(id="r1", parameters={"a": 1}, outputs=[{"name": "probability"}]))


@pytest.mark.parametrize(
    "doc",
    [
        [1, 2],
        {},
        {"inputs": []},
        _plain(extra=1),  # KServe ignores unknown fields; its own path keeps that behaviour
        _plain(id=5),
        _plain(parameters=[1]),
        _plain(outputs=[{"name": 1}]),
        _plain(outputs={"name": "probability"}),
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["AAAA"]}]},
        {"inputs": [{"name": "t", "shape": ["1", 2, 2, 1], "datatype": "FP32", "data": [0.5] * 4}]},
        {"inputs": [{"name": "t", "shape": [True], "datatype": "FP32", "data": [0.5]}]},
        {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32"}]},
        {"inputs": [{"name": "t", "shape": [1], "datatype": "FP32", "data": 0.5}]},
        {"inputs": [{"shape": [1], "datatype": "FP32", "data": [0.5]}]},
        {"inputs": ["tensor"]},
    ],
)
def test_anything_else_is_left_to_kserve(doc):
    assert not plain_fp32_request(doc)


def _through(body: bytes, headers: list[tuple[bytes, bytes]], path: str = PATH, chunks: int = 1):
    """Run the middleware on one request; return the scope and body the wrapped app received."""
    seen = {}

    async def app(scope, receive, send):
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        seen.update(scope=scope, body=b"".join(parts))

    step = max(1, len(body) // chunks)
    pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
    messages = [
        {"type": "http.request", "body": p, "more_body": i < len(pieces) - 1} for i, p in enumerate(pieces)
    ]

    async def receive():
        return messages.pop(0)

    async def send(message):
        raise AssertionError("the middleware never answers by itself")

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(V2JsonMiddleware(app, "mammosynth")(scope, receive, send))
    return seen["scope"], seen["body"]


JSON = [(b"content-type", b"application/json"), (b"content-length", b"0")]


@pytest.mark.parametrize("chunks", [1, 3])
def test_plain_body_is_marked_as_a_binary_extension_body_with_no_binary_part(chunks):
    body = json.dumps(_plain()).encode()
    scope, got = _through(body, JSON, chunks=chunks)
    headers = dict(scope["headers"])
    assert got == body
    assert headers[EXTENSION_HEADER] == str(len(body)).encode()
    assert headers[b"content-type"] == b"application/octet-stream"
    assert headers[b"content-length"] == b"0"  # other headers kept as they came


@pytest.mark.parametrize(
    "body, headers, path",
    [
        (b'{"inputs": [', JSON, PATH),  # malformed: KServe's parser gives its own 4xx
        (json.dumps(_plain(extra=1)).encode(), JSON, PATH),
        (json.dumps(_plain()).encode(), [(b"content-type", b"text/plain")], PATH),
        (json.dumps(_plain()).encode(), [*JSON, (EXTENSION_HEADER, b"10")], PATH),
        (json.dumps(_plain()).encode(), JSON, "/v2/models/other/infer"),
        (json.dumps(_plain()).encode(), JSON, "/v1/models/mammosynth:predict"),
    ],
    ids=["malformed", "unknown field", "not json", "already binary", "other model", "v1"],
)
def test_other_requests_pass_through_unchanged(body, headers, path):
    scope, got = _through(body, headers, path=path)
    assert got == body
    assert scope["headers"] == headers


def test_json_content_type_with_parameters_is_json():
    body = json.dumps(_plain()).encode()
    scope, _ = _through(body, [(b"content-type", b"Application/JSON; charset=utf-8")])
    assert dict(scope["headers"])[EXTENSION_HEADER] == str(len(body)).encode()
