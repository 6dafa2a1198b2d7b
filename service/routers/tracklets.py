"""``/tracklets``: enroll one tracklet or a batch atomically, read one, delete one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import anyio.to_thread
from fastapi import APIRouter, Request

from service.dependencies import CAN_READ, CAN_WRITE, LimitsDep, MetricsDep, RuntimeDep, SettingsDep
from service.encoder import Embedded
from service.gallery import TrackletRecord
from service.idempotency import idempotent, new_tracklet_id
from service.openapi import body_doc, multipart_schema
from service.request_input import (
    PreparedTracklet,
    check_metadata,
    media_type,
    prepare,
    read_frames_input,
    read_json,
)
from service.schemas import (
    ApiError,
    BatchEnrollRequest,
    BatchEnrollResponse,
    DeletedTracklet,
    EnrollJson,
    EnrollResponse,
    TrackletFields,
    TrackletOut,
)

router = APIRouter(tags=["tracklets"])


def _record(fields: TrackletFields, embedded: Embedded) -> TrackletRecord:
    return TrackletRecord(
        tracklet_id=new_tracklet_id(),  # derived from an Idempotency-Key when there is one
        identity=fields.identity,
        embedding=embedded.embedding,
        features=embedded.features,
        attention=embedded.attention,
        camera=fields.camera,
        start_time=fields.start_time,
        end_time=fields.end_time,
        metadata=fields.metadata,
        created_at=datetime.now(UTC),
    )


def _enroll_response(record: TrackletRecord) -> EnrollResponse:
    return EnrollResponse(
        tracklet_id=record.tracklet_id,
        identity=record.identity,
        camera=record.camera,
        num_frames=record.num_frames,
        attention=[float(w) for w in record.attention],
    )


def tracklet_out(record: TrackletRecord) -> TrackletOut:
    return TrackletOut(
        tracklet_id=record.tracklet_id,
        identity=record.identity,
        camera=record.camera,
        start_time=record.start_time,
        end_time=record.end_time,
        metadata=record.metadata,
        num_frames=record.num_frames,
        attention=[float(w) for w in record.attention],
        created_at=record.created_at,
    )


@router.post(
    "/tracklets",
    status_code=201,
    response_model=EnrollResponse,
    dependencies=[CAN_WRITE],
    openapi_extra=body_doc(EnrollJson, multipart_schema(TrackletFields, ["metadata"])),
    summary="Enroll one tracklet",
)
@idempotent(lambda records: _enroll_response(records[0]))
async def enroll(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    limits: LimitsDep,
    metrics: MetricsDep,
) -> EnrollResponse:
    """Frames as repeated multipart files ``frames``, one zip ``archive``, or JSON with
    base64 ``frames``. Answered once the gallery has stored the tracklet durably."""
    fields, source = await read_frames_input(request, TrackletFields, EnrollJson, limits)
    check_metadata(fields.metadata, settings.max_metadata_bytes)
    prepared = await prepare(source, limits, runtime)
    embedded = await runtime.batcher.embed(prepared.tracklet, "enroll")
    metrics.count_embedded("enroll", embedded.features.shape[0])
    record = _record(fields, embedded)
    await anyio.to_thread.run_sync(runtime.gallery.add, [record])
    return _enroll_response(record)


async def _read_batch(request: Request, max_tracklets: int) -> BatchEnrollRequest:
    if media_type(request) != "application/json":
        raise ApiError(
            415, "unsupported_media_type", "POST /tracklets/batch takes application/json"
        )
    batch = await read_json(request, BatchEnrollRequest)
    if len(batch.tracklets) > max_tracklets:
        raise ApiError(
            413,
            "too_many_tracklets",
            f"the batch has {len(batch.tracklets)} tracklets, more than the limit of "
            f"{max_tracklets} (REID_MAX_BATCH_TRACKLETS): split it",
        )
    return batch


@router.post(
    "/tracklets/batch",
    status_code=201,
    response_model=BatchEnrollResponse,
    dependencies=[CAN_WRITE],
    openapi_extra=body_doc(BatchEnrollRequest, None),
    summary="Enroll many tracklets atomically",
)
@idempotent(lambda records: BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records]))
async def enroll_batch(
    request: Request,
    runtime: RuntimeDep,
    settings: SettingsDep,
    limits: LimitsDep,
    metrics: MetricsDep,
) -> BatchEnrollResponse:
    """JSON only. Every tracklet is enrolled, or (on any error) none is."""
    batch = await _read_batch(request, settings.max_batch_tracklets)

    async def prepare_one(index: int, item: EnrollJson) -> PreparedTracklet:
        try:
            check_metadata(item.metadata, settings.max_metadata_bytes)
            return await prepare(item.frames, limits, runtime)
        except ApiError as exc:
            raise ApiError(exc.status, exc.code, f"tracklets[{index}]: {exc.message}") from exc

    # The first failing tracklet's error is the answer; nothing has been stored yet.
    prepared = await asyncio.gather(
        *(prepare_one(index, item) for index, item in enumerate(batch.tracklets))
    )
    embedded = await runtime.batcher.embed_many([p.tracklet for p in prepared], "enroll")
    records = []
    for fields, result in zip(batch.tracklets, embedded, strict=True):
        metrics.count_embedded("enroll", result.features.shape[0])
        records.append(_record(fields, result))
    await anyio.to_thread.run_sync(runtime.gallery.add, records)
    return BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records])


@router.get(
    "/tracklets/{tracklet_id}",
    response_model=TrackletOut,
    dependencies=[CAN_READ],
    summary="One enrolled tracklet",
)
async def get_tracklet(runtime: RuntimeDep, tracklet_id: str) -> TrackletOut:
    record = await anyio.to_thread.run_sync(runtime.gallery.get_tracklet, tracklet_id)
    if record is None:
        raise ApiError(404, "tracklet_not_found", f"tracklet {tracklet_id!r} is not enrolled")
    return tracklet_out(record)


@router.delete(
    "/tracklets/{tracklet_id}",
    response_model=DeletedTracklet,
    dependencies=[CAN_WRITE],
    summary="Delete one tracklet",
)
async def delete_tracklet(runtime: RuntimeDep, tracklet_id: str) -> DeletedTracklet:
    if not await anyio.to_thread.run_sync(runtime.gallery.delete_tracklet, tracklet_id):
        raise ApiError(404, "tracklet_not_found", f"tracklet {tracklet_id!r} is not enrolled")
    return DeletedTracklet(tracklet_id=tracklet_id, deleted=True)
