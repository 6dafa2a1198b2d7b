"""One log format for the whole process: the service's own lines, uvicorn's, and the access and
audit lines, as JSON lines (``REID_LOG_FORMAT=json``, one object per line) or plain text
(``text``). Every line written while a request is served carries its request id.

Structured fields go in ``extra={"fields": {...}}``; :func:`log_fields` is the short way.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The id of the request being served (set by :mod:`service.request_context`). Worker threads
#: started with ``anyio.to_thread`` run in a copy of the caller's context, so they see it too.
REQUEST_ID: ContextVar[str | None] = ContextVar("reid_request_id", default=None)

_HANDLER_NAME = "reid"


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return dict(fields) if isinstance(fields, dict) else {}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        entry.update(_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request id] message key=value ...``; values are quoted with repr so
    a newline sent by a client cannot forge a log line."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        if request_id:
            line = line.replace(f"{record.name} ", f"{record.name} [{request_id}] ", 1)
        fields = _fields(record)
        if fields:
            line += " " + " ".join(f"{key}={value!r}" for key, value in fields.items())
        return line


def configure_logging(level: str, log_format: str) -> None:
    """Route every logger, uvicorn's included, through one handler in ``log_format``.

    uvicorn's access log is turned off: :mod:`service.request_context` writes one access line
    per request instead, with the request id, the route's status and the API key's name.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    handler.set_name(_HANDLER_NAME)
    root = logging.getLogger()
    # Replace only our own handler (a second call reconfigures); others (pytest's) stay.
    root.handlers[:] = [h for h in root.handlers if h.get_name() != _HANDLER_NAME] + [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False
    access.disabled = True


def log_fields(logger: logging.Logger, level: int, message: str, **fields: Any) -> None:
    """``logger.log(level, message)`` with ``fields`` as structured data."""
    logger.log(level, message, extra={"fields": fields})
