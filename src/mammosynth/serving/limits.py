"""ASGI middleware that refuses oversized request bodies before they reach JSON parsing.

KServe reads the whole body and parses it before a model sees it, so a per-model check would come
after the memory is spent. This middleware answers 413 as soon as the declared ``Content-Length`` or
the bytes actually streamed (a chunked body, which has no length) pass the limit. A body within its
declared length passes straight through: the HTTP server delivers no more than that length.

The 413 must reach the client: a server that answers and closes while the client is still sending
leaves unread bytes in its socket, the kernel then resets the connection, and a plain client (urllib,
``http.client``) sees ``ConnectionResetError``/``BrokenPipeError`` instead of the message. So before
answering, the rest of the refused body is read and thrown away (never buffered), for at most
``DRAIN_SECONDS`` and ``DRAIN_MAX_BYTES``; a body beyond those still gets the reset. A client that sent
``Expect: 100-continue`` is answered at once: uvicorn sends ``100 Continue`` only when the app first
reads the body, so such a client never sends it.

It also labels JSON bodies that arrive without a ``Content-Type`` (tritonclient's JSON requests):
FastAPI >= 0.12x no longer parses those as JSON, and KServe's v2 endpoint would then mistake them
for binary-extension requests and answer 400.
"""

from __future__ import annotations

import asyncio
import json

DRAIN_SECONDS = 10.0  # longest a refused body is read (and discarded) so that the client can read the 413
DRAIN_MAX_BYTES = 256 * 1024 * 1024  # most bytes of a refused body read and discarded


class PayloadLimitMiddleware:
    """Reject request bodies larger than ``max_bytes`` with HTTP 413 and a JSON ``error``.

    Args:
        app: the wrapped ASGI app.
        max_bytes: largest body accepted.
        drain_seconds: longest the rest of a refused body is read and discarded before the 413.
        drain_max_bytes: most bytes of a refused body read and discarded before the 413.
    """

    def __init__(
        self,
        app,
        max_bytes: int,
        drain_seconds: float = DRAIN_SECONDS,
        drain_max_bytes: int = DRAIN_MAX_BYTES,
    ):
        self.app = app
        self.max_bytes = int(max_bytes)
        self.drain_seconds = float(drain_seconds)
        self.drain_max_bytes = int(drain_max_bytes)

    async def __call__(self, scope, receive, send):
        """Pass the request on with its body buffered, or answer 413 (400 for a bad ``Content-Length``)."""
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
                if headers.get(b"expect", b"").lower() != b"100-continue":
                    await self._drain(receive)
                return await self._too_large(send, size)
            if b"transfer-encoding" not in headers:
                # The server frames the body by this length (no more bytes reach the app), so there
                # is nothing to count: hand the app the server's own receive, unbuffered.
                return await self.app(scope, receive, send)
        # A chunked body (or one with both headers): read it while counting, then replay it to the app.
        chunks, total = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, replay_receive([], message, receive), send)
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                if message.get("more_body", False):
                    await self._drain(receive)
                return await self._too_large(send, total, at_least=True)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        return await self.app(scope, replay_receive([b"".join(chunks)], None, receive), send)

    async def _drain(self, receive) -> None:
        """Read and discard the rest of the body until it ends, the client leaves or a drain limit is hit."""
        read = 0
        try:
            async with asyncio.timeout(self.drain_seconds):
                while read <= self.drain_max_bytes:
                    message = await receive()
                    if message["type"] != "http.request" or not message.get("more_body", False):
                        return  # the whole body has arrived, or the client went away
                    read += len(message.get("body", b""))
        except TimeoutError:
            pass  # a slow sender: answer now (it may see a reset), the connection closes either way

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


def replay_receive(bodies: list[bytes], first_other, receive):
    """A ``receive`` that yields the buffered body once, then defers to the real one."""
    pending = [{"type": "http.request", "body": b, "more_body": False} for b in bodies]
    if first_other is not None:
        pending.append(first_other)

    async def replay():
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
