"""Every error leaves the service as ``{"error": {"code", "message"}}`` (and ``details`` for
invalid requests), counted by code in ``reid_errors_total``: client errors the routes raise
(:class:`service.schemas.ApiError`), request validation, Starlette's own HTTP errors (404, 405),
and gallery failures. Anything unexpected becomes a 500 that names no internals in
:mod:`service.request_context`, outside Starlette's error middleware, which would re-raise it
and make uvicorn drop the connection."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.gallery import GalleryError, TrackletExists
from service.metrics import ServiceMetrics
from service.schemas import ApiError, ErrorResponse

log = logging.getLogger(__name__)

#: Documented on every route.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 415, 422)
}

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body})


def _validation_summary(exc: RequestValidationError) -> tuple[str, list[dict[str, Any]]]:
    details = [
        {
            "loc": list(err.get("loc", ())),
            "msg": err.get("msg", ""),
            "type": err.get("type", ""),
        }
        for err in exc.errors()
    ]
    summary = "; ".join(
        f"{'.'.join(str(part) for part in d['loc'] if part != 'body') or 'body'}: {d['msg']}"
        for d in details
    )
    return summary, details


def install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.code).inc()
        response = error_response(exc.status, exc.code, exc.message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        summary, details = _validation_summary(exc)
        metrics.errors.labels("invalid_request").inc()
        return error_response(422, "invalid_request", f"invalid request: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        metrics.errors.labels(code).inc()
        response = error_response(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(GalleryError)
    async def gallery_error(_: Request, exc: GalleryError) -> JSONResponse:
        log.exception("gallery error", exc_info=exc)
        if isinstance(exc, TrackletExists):
            metrics.errors.labels("tracklet_exists").inc()
            return error_response(409, "tracklet_exists", str(exc))
        metrics.errors.labels("gallery_error").inc()
        message = f"the gallery failed: {exc}; nothing was changed"
        return error_response(503, "gallery_error", message)
