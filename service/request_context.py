"""The outermost layer of every request: its id, its access log line, its latency metric, and
the guarantee that no exception leaves the app.

* **Request id**: a client's ``X-Request-ID`` (letters, digits and ``._:-``, at most 128) is kept,
  otherwise one is made; it is echoed in the response's ``X-Request-ID`` header and is on every
  log line written while the request is served.
* **No exception escapes**: an unexpected error becomes a JSON 500 *here* instead of reaching
  Starlette's outermost handler, which re-raises it so that uvicorn closes the keep-alive
  connection (and the client's next pooled request fails).
* **A client that hangs up** before its body was read is logged as that (``client_disconnected``,
  status 499 in the metrics), not as an internal error.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.logging_setup import REQUEST_ID, log_fields
from service.metrics import ServiceMetrics

REQUEST_ID_HEADER = "X-Request-ID"
#: Status recorded for a request whose client left before it was answered (nginx's convention).
CLIENT_CLOSED = 499

_VALID_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
#: Polled by load balancers and Prometheus: their access lines are debug, not info.
_QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

log = logging.getLogger("service.request")
access_log = logging.getLogger("reid.access")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_ID.fullmatch(candidate):
                return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        token = REQUEST_ID.set(request_id)
        sent: dict[str, int | None] = {"status": None}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
                sent["status"] = message["status"]
            await send(message)

        start = time.perf_counter()
        try:
            await self._serve(scope, receive, send_with_id, sent)
        finally:
            seconds = time.perf_counter() - start
            self._access_line(scope, sent["status"], seconds)
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.observe_request(
                scope.get("method", ""), template, sent["status"] or 500, seconds
            )
            REQUEST_ID.reset(token)

    async def _serve(
        self, scope: Scope, receive: Receive, send: Send, sent: dict[str, int | None]
    ) -> None:
        try:
            await self.app(scope, receive, send)
        except ClientDisconnect:
            log.info("the client disconnected before its request was read; nothing was done")
            self.metrics.errors.labels("client_disconnected").inc()
            if sent["status"] is None:
                # Nobody reads it; it gives the metrics and the access line their status.
                await error_response(
                    CLIENT_CLOSED, "client_disconnected", "the client disconnected"
                )(scope, receive, send)
        except Exception as exc:
            if sent["status"] is not None:
                raise  # half an answer is out: only closing the connection is honest
            log.error("unexpected error", exc_info=exc)
            self.metrics.errors.labels("internal_error").inc()
            await error_response(
                500, "internal_error", "internal server error (see the server log)"
            )(scope, receive, send)

    def _access_line(self, scope: Scope, status: int | None, seconds: float) -> None:
        path = scope.get("path", "")
        level = logging.DEBUG if path in _QUIET_PATHS else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        method = scope.get("method", "")
        client = scope.get("client")
        log_fields(
            access_log,
            level,
            f"{method} {path} {status}",
            method=method,
            path=path,
            status=status,
            duration_ms=round(seconds * 1000.0, 1),
            client=client[0] if client else None,
            key=scope.get("state", {}).get("key_name"),
        )
