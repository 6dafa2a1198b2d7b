"""Operations: liveness (``/healthz``), readiness with what is served (``/readyz``), and
Prometheus metrics (``/metrics``). None of them needs an API key."""

from __future__ import annotations

import anyio.to_thread
from fastapi import APIRouter, Response

from service.dependencies import MetricsDep, RuntimeDep, SettingsDep
from service.schemas import (
    ApiError,
    ErrorResponse,
    GalleryInfo,
    Health,
    ModelInfo,
    Ready,
    ThumbnailInfo,
)

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Ready,
    responses={503: {"model": ErrorResponse}},
    summary="Model and gallery are loaded",
)
async def readyz(runtime: RuntimeDep, settings: SettingsDep) -> Ready:
    try:
        count = await anyio.to_thread.run_sync(runtime.gallery.count)
        thumbnails = await anyio.to_thread.run_sync(runtime.gallery.thumbnail_stats)
        index = await anyio.to_thread.run_sync(lambda: runtime.gallery.index_description)
    except Exception as exc:
        raise ApiError(503, "gallery_unavailable", f"the gallery does not answer: {exc}") from exc
    encoder = runtime.encoder
    return Ready(
        status="ready",
        provider=encoder.provider,
        available_providers=encoder.available_providers,
        model=ModelInfo(
            name=encoder.name,
            version=encoder.version,
            variant=encoder.variant,
            embedding_size=encoder.embedding_size,
            roles=encoder.roles,
            pair_scorer=runtime.model.scorer is not None,
            rerank_default=runtime.model.rerank_default,
        ),
        gallery=GalleryInfo(
            backend=settings.gallery_backend,
            count=count,
            index=index,
            thumbnails=ThumbnailInfo(
                enabled=settings.thumbnails, count=thumbnails.count, bytes=thumbnails.bytes
            ),
        ),
        batching=settings.batching,
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics_endpoint(metrics: MetricsDep) -> Response:
    content, media_type = metrics.render()
    return Response(content=content, media_type=media_type)
