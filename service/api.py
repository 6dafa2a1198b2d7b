"""The HTTP API: ``create_app(settings)`` builds the service.

The app holds its configuration in ``app.state`` (the settings, the metrics, the API keys, the
frame limits, and once the lifespan has started, the :class:`service.runtime.Runtime`); the
routes (:mod:`service.routers`, one module per resource) read them through the dependencies of
:mod:`service.dependencies`. Nothing is global, so several differently configured apps can run
side by side in one process (the tests and the benchmark do).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from service.admission import Admission, AdmissionMiddleware
from service.errors import ERROR_RESPONSES, install_error_handlers
from service.frames import FrameLimits
from service.limits import BodySizeLimitMiddleware
from service.metrics import ServiceMetrics
from service.onnx_session import ModelLoadError
from service.openapi import install_openapi
from service.request_context import RequestContextMiddleware
from service.routers import health, identities, query, tracklets, ui, videos
from service.runtime import StartupError, open_runtime
from service.schemas import BatchEnrollRequest, EnrollJson, QueryJson
from service.security import ApiKeys
from service.settings import Settings

__all__ = ["SERVICE_VERSION", "StartupError", "create_app"]

log = logging.getLogger(__name__)

SERVICE_VERSION = "0.1.0"


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open the model and the gallery before the first request; close them at shutdown."""
    settings: Settings = app.state.settings
    try:
        runtime = await anyio.to_thread.run_sync(open_runtime, settings, app.state.metrics)
    except (ModelLoadError, StartupError) as exc:
        log.error("cannot start the re-id service: %s", exc)
        raise
    app.state.runtime = runtime
    log.info(
        "serving model %s %s on %s; %s gallery with %d tracklets; batching %s",
        runtime.encoder.name,
        runtime.encoder.version,
        runtime.encoder.provider,
        settings.gallery_backend,
        runtime.gallery.count(),
        "on" if settings.batching else "off",
    )
    try:
        yield
    finally:
        await runtime.close()


def create_app(settings: Settings) -> FastAPI:
    """The service, configured by ``settings``; the model and gallery open in its lifespan."""
    # FastAPIOffline serves /docs with Swagger UI's files from its own package instead of a
    # CDN, so it works without internet. No /redoc: ReDoc's page fetches its logo from its
    # vendor's CDN.
    app = FastAPIOffline(
        redoc_url=None,
        static_url="/docs-assets",
        swagger_ui_parameters={"validatorUrl": None},
        title="ASTPN video person re-identification",
        version=SERVICE_VERSION,
        description="Enroll tracklets (sequences of person crops) and query who a tracklet "
        'shows. Errors always come as {"error": {"code", "message"}}.',
        lifespan=lifespan,
        responses=ERROR_RESPONSES,
    )
    metrics = ServiceMetrics()
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.api_keys = ApiKeys(settings.api_keys_read, settings.api_keys_write)
    app.state.limits = FrameLimits.from_settings(settings)
    admission = Admission.create(
        settings.admission_body_bytes,
        settings.admission_pixels,
        settings.admission_frames,
        settings.admission_wait_s,
    )
    app.state.admission = admission
    install_error_handlers(app, metrics)
    # Starlette runs the last added middleware first. Outside in: the metrics (they see every
    # status, 413s and 503s included); the request id and the catch-all; the body-size cap (an
    # oversized body is refused before it waits for admission); admission and the deadline.
    # Video uploads stream to disk and are worked on in jobs with their own limits.
    path_limits = videos.body_limits(settings)
    app.add_middleware(
        AdmissionMiddleware,
        admission=admission,
        max_body_bytes=settings.max_request_bytes,
        timeout_s=settings.request_timeout_s,
        metrics=metrics,
        streamed_paths=frozenset(path_limits),
    )
    app.add_middleware(
        BodySizeLimitMiddleware, max_bytes=settings.max_request_bytes, path_limits=path_limits
    )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    for module in (tracklets, query, videos, identities, health, ui):
        app.include_router(module.router)
    install_openapi(app, [EnrollJson, QueryJson, BatchEnrollRequest], settings.auth_enabled)
    return app
