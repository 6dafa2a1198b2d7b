"""A cap on request body size that counts bytes as they stream in.

``Content-Length`` alone is not enough: a chunked upload declares no length. This raw ASGI
middleware wraps ``receive`` and counts the bytes of every ``http.request`` message; once the
total passes the limit it stops the application (whatever it was doing with the body) and answers
413 itself, so no handler ever holds more than the limit in memory.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    """Raised inside the application's ``receive`` to abandon the request."""


class BodySizeLimitMiddleware:
    """Answer 413 as soon as a request body exceeds ``max_bytes``."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        path_limits: dict[str, tuple[int, str]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        # path -> (bytes, the setting): routes that take larger bodies (videos)
        self.path_limits = path_limits or {}

    def _limit(self, scope: Scope) -> tuple[int, str]:
        return self.path_limits.get(
            scope.get("path", ""), (self.max_bytes, "REID_MAX_REQUEST_BYTES")
        )

    def _error_body(self, received: int | None, limit: tuple[int, str]) -> bytes:
        seen = f"at least {received} bytes" if received is not None else "a larger body"
        message = (
            f"request body is larger than the limit of {limit[0]} bytes "
            f"({limit[1]}); received {seen}: send fewer or smaller frames, "
            "or split the request"
        )
        return json.dumps({"error": {"code": "request_too_large", "message": message}}).encode()

    async def _reject(self, send: Send, received: int | None, limit: tuple[int, str]) -> None:
        body = self._error_body(received, limit)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self._limit(scope)
        max_bytes = limit[0]
        declared = _content_length(scope)
        if declared is not None and declared > max_bytes:
            await self._reject(send, declared, limit)
            return

        state: dict[str, Any] = {"received": 0, "exceeded": False, "started": False}

        async def counting_receive() -> Message:
            if state["exceeded"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > max_bytes:
                    state["exceeded"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            # Once the limit is hit, whatever the app answers (it saw its body vanish) is dropped.
            if state["exceeded"]:
                return
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not state["exceeded"]:
                raise
        if state["exceeded"] and not state["started"]:
            await self._reject(send, state["received"], limit)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
