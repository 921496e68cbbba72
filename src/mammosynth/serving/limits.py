"""ASGI middleware that refuses oversized request bodies before they reach JSON parsing.

KServe reads the whole body and parses it before a model sees it, so a per-model check would come
after the memory is spent. This middleware answers 413 as soon as the declared ``Content-Length`` or
the bytes actually streamed pass the limit.

It also labels JSON bodies that arrive without a ``Content-Type`` (tritonclient's JSON requests):
FastAPI >= 0.12x no longer parses those as JSON, and KServe's v2 endpoint would then mistake them
for binary-extension requests and answer 400.
"""

from __future__ import annotations

import json


class PayloadLimitMiddleware:
    """Reject request bodies larger than ``max_bytes`` with HTTP 413 and a JSON ``error``.

    Args:
        app: the wrapped ASGI app.
        max_bytes: largest body accepted.
    """

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        if b"content-type" not in headers and b"inference-header-content-length" not in headers:
            scope = {**scope, "headers": [*scope.get("headers", []), (b"content-type", b"application/json")]}
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return await self._reject(send, 400, f"Content-Length {declared!r} is not a number")
            if size > self.max_bytes:
                return await self._too_large(send, size)
        # Read the (possibly chunked) body while counting, then replay it to the app.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([], message, receive), send)
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                return await self._too_large(send, total, at_least=True)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        return await self.app(scope, _replay([b"".join(chunks)], None, receive), send)

    async def _too_large(self, send, size: int, at_least: bool = False) -> None:
        qualifier = "at least " if at_least else ""
        await self._reject(
            send,
            413,
            f"request body is {qualifier}{size} bytes, over the server limit of "
            f"{self.max_bytes} bytes (--max-payload-bytes); send fewer or smaller "
            "images per request",
        )

    @staticmethod
    async def _reject(send, status: int, message: str) -> None:
        body = json.dumps({"error": message}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _replay(bodies: list[bytes], first_other, receive):
    """A ``receive`` that yields the buffered body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": b, "more_body": False} for b in bodies]
    if first_other is not None:
        pending.append(first_other)

    async def replay():
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
