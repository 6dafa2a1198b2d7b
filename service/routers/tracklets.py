"""``/tracklets``: enroll one tracklet or a batch atomically, read one, delete one."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import anyio.to_thread
from fastapi import APIRouter, Request

from service.audit import audit
from service.dependencies import CAN_READ, CAN_WRITE, RuntimeDep, SettingsDep, WorkDep
from service.embedding import (
    EmbeddedTracklet,
    FrameSource,
    TrackletWork,
    check_all,
    embed_checked,
    embed_source,
    unpack,
)
from service.encoder import Embedded
from service.gallery import TrackletRecord
from service.openapi import body_doc, multipart_schema
from service.request_input import check_metadata, media_type, read_frames_input, read_json
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
from service.settings import Settings

router = APIRouter(tags=["tracklets"])


def _record(fields: TrackletFields, embedded: Embedded) -> TrackletRecord:
    return TrackletRecord(
        tracklet_id=str(uuid.uuid4()),
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
async def enroll(request: Request, settings: SettingsDep, work: WorkDep) -> EnrollResponse:
    """Frames as repeated multipart files ``frames``, one zip ``archive``, or JSON with
    base64 ``frames``. Answered once the gallery has stored the tracklet durably."""
    fields, source = await read_frames_input(request, TrackletFields, EnrollJson, work.limits)
    check_metadata(fields.metadata, settings.max_metadata_bytes)
    checked = await unpack(source, work)
    del source  # unpacked: an archive's bytes need not outlive this point
    embedded = await embed_checked(checked, "enroll", work)
    record = _record(fields, embedded.embedded)
    await _store(request, work, [record])
    return _enroll_response(record)


async def _store(request: Request, work: TrackletWork, records: list[TrackletRecord]) -> None:
    """One atomic, durable gallery add, and its audit line. The deadline is checked before the
    write, never during it: a request answered as refused has stored nothing."""
    work.deadline.check("before storing the tracklets")
    await anyio.to_thread.run_sync(work.runtime.gallery.add, records)
    audit(
        request,
        "enroll",
        tracklet_ids=[r.tracklet_id for r in records],
        identities=sorted({r.identity for r in records}),
        frames=sum(r.num_frames for r in records),
    )


async def _read_batch(request: Request, settings: Settings) -> BatchEnrollRequest:
    if media_type(request) != "application/json":
        raise ApiError(
            415, "unsupported_media_type", "POST /tracklets/batch takes application/json"
        )
    batch = await read_json(request, BatchEnrollRequest)
    if len(batch.tracklets) > settings.max_batch_tracklets:
        raise ApiError(
            413,
            "too_many_tracklets",
            f"the batch has {len(batch.tracklets)} tracklets, more than the limit of "
            f"{settings.max_batch_tracklets} (REID_MAX_BATCH_TRACKLETS): split it",
        )
    frames = sum(len(item.frames) for item in batch.tracklets)
    if frames > settings.max_batch_frames:
        raise ApiError(
            413,
            "too_many_frames",
            f"the batch has {frames} frames in all, more than the limit of "
            f"{settings.max_batch_frames} (REID_MAX_BATCH_FRAMES): split it",
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
async def enroll_batch(
    request: Request, settings: SettingsDep, work: WorkDep
) -> BatchEnrollResponse:
    """JSON only. Every tracklet is enrolled, or (on any error) none is."""
    batch = await _read_batch(request, settings)
    for index, item in enumerate(batch.tracklets):
        try:
            check_metadata(item.metadata, settings.max_metadata_bytes)
        except ApiError as exc:
            raise exc.prefixed(f"tracklets[{index}]") from exc
    await check_all([item.frames for item in batch.tracklets], work)
    embedded = await _embed_all([item.frames for item in batch.tracklets], work)
    records = [
        _record(fields, result.embedded)
        for fields, result in zip(batch.tracklets, embedded, strict=True)
    ]
    await _store(request, work, records)
    return BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records])


async def _embed_all(sources: list[FrameSource], work: TrackletWork) -> list[EmbeddedTracklet]:
    """Embed a batch's tracklets a few at a time (one per decode worker), so that a large
    batch takes its turns in admission among other requests instead of queueing all its
    tracklets at once. The first failure cancels the rest; nothing has been stored yet."""
    gate = asyncio.Semaphore(int(work.runtime.decode_limiter.total_tokens))

    async def one(index: int, source: FrameSource) -> EmbeddedTracklet:
        async with gate:
            try:
                return await embed_source(source, "enroll", work)
            except ApiError as exc:
                raise exc.prefixed(f"tracklets[{index}]") from exc

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i, source)) for i, source in enumerate(sources)]
    except BaseExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


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
async def delete_tracklet(
    request: Request, runtime: RuntimeDep, tracklet_id: str
) -> DeletedTracklet:
    if not await anyio.to_thread.run_sync(runtime.gallery.delete_tracklet, tracklet_id):
        raise ApiError(404, "tracklet_not_found", f"tracklet {tracklet_id!r} is not enrolled")
    audit(request, "delete_tracklet", tracklet_id=tracklet_id)
    return DeletedTracklet(tracklet_id=tracklet_id, deleted=True)
