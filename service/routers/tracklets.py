"""``/tracklets``: enroll one tracklet or a batch atomically, read one, delete one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated

import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Path, Request, Response

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
from service.gallery import MAX_THUMBNAILS, Gallery, TrackletRecord
from service.idempotency import idempotent, new_tracklet_id
from service.openapi import body_doc, multipart_schema
from service.request_input import check_metadata, media_type, read_frames_input, read_json
from service.schemas import (
    ApiError,
    BatchEnrollRequest,
    BatchEnrollResponse,
    DeletedTracklet,
    EnrollJson,
    EnrollResponse,
    ThumbnailOut,
    TrackletFields,
    TrackletOut,
)
from service.settings import Settings
from service.thumbnails import ThumbnailConfig, make_thumbnails

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


def _add(
    gallery: Gallery,
    records: list[TrackletRecord],
    previews: Sequence[list[np.ndarray] | None],
    config: ThumbnailConfig | None,
) -> None:
    """Runs in a worker thread: the thumbnails, then one atomic add (so a failed enrolment
    leaves no thumbnail behind)."""
    if config is not None:
        for record, frames in zip(records, previews, strict=True):
            assert frames is not None
            record.thumbnails = make_thumbnails(frames, record.attention, config)
    gallery.add(records)


def tracklet_out(record: TrackletRecord, thumbnail_frames: Sequence[int] = ()) -> TrackletOut:
    """``thumbnail_frames``: what ``Gallery.thumbnail_frames`` answered for the record."""
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
        thumbnails=[
            ThumbnailOut(
                position=position,
                frame_index=frame,
                attention=float(record.attention[frame]),
                url=f"/tracklets/{record.tracklet_id}/thumbnails/{position}",
            )
            for position, frame in enumerate(thumbnail_frames)
        ],
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
async def enroll(request: Request, settings: SettingsDep, work: WorkDep) -> EnrollResponse:
    """Frames as repeated multipart files ``frames``, one zip ``archive``, or JSON with
    base64 ``frames``. Answered once the gallery has stored the tracklet durably."""
    fields, source = await read_frames_input(request, TrackletFields, EnrollJson, work.limits)
    check_metadata(fields.metadata, settings.max_metadata_bytes)
    config = settings.thumbnail_config
    checked = await unpack(source, work)
    del source  # unpacked: an archive's bytes need not outlive this point
    embedded = await embed_checked(checked, "enroll", work, config.max_side if config else None)
    record = _record(fields, embedded.embedded)
    await _store(request, work, [record], [embedded.previews], config)
    return _enroll_response(record)


async def _store(
    request: Request,
    work: TrackletWork,
    records: list[TrackletRecord],
    previews: Sequence[list[np.ndarray] | None],
    config: ThumbnailConfig | None,
) -> None:
    """One atomic, durable gallery add (with the thumbnails), and its audit line. The deadline
    is checked before the write, never during it: a request answered as refused stored
    nothing."""
    work.deadline.check("before storing the tracklets")
    await anyio.to_thread.run_sync(_add, work.runtime.gallery, records, previews, config)
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
@idempotent(lambda records: BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records]))
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
    config = settings.thumbnail_config
    side = config.max_side if config else None
    embedded = await _embed_all([item.frames for item in batch.tracklets], work, side)
    records = [
        _record(fields, result.embedded)
        for fields, result in zip(batch.tracklets, embedded, strict=True)
    ]
    await _store(request, work, records, [result.previews for result in embedded], config)
    return BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records])


async def _embed_all(
    sources: list[FrameSource], work: TrackletWork, preview_side: int | None
) -> list[EmbeddedTracklet]:
    """Embed a batch's tracklets a few at a time (one per decode worker), so that a large
    batch takes its turns in admission among other requests instead of queueing all its
    tracklets at once. The first failure cancels the rest; nothing has been stored yet."""
    gate = asyncio.Semaphore(int(work.runtime.decode_limiter.total_tokens))

    async def one(index: int, source: FrameSource) -> EmbeddedTracklet:
        async with gate:
            try:
                return await embed_source(source, "enroll", work, preview_side)
            except ApiError as exc:
                raise exc.prefixed(f"tracklets[{index}]") from exc

    tasks: list[asyncio.Task[EmbeddedTracklet]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i, source)) for i, source in enumerate(sources)]
    except BaseExceptionGroup as failed:
        # The error's traceback keeps this frame: without the tasks (and what their frames
        # hold) it is no cycle, and goes with the answer instead of at a garbage collection.
        tasks.clear()
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


@router.get(
    "/tracklets/{tracklet_id}",
    response_model=TrackletOut,
    dependencies=[CAN_READ],
    summary="One enrolled tracklet",
)
async def get_tracklet(runtime: RuntimeDep, tracklet_id: str) -> TrackletOut:
    gallery = runtime.gallery
    record = await anyio.to_thread.run_sync(gallery.get_tracklet, tracklet_id)
    if record is None:
        raise ApiError(404, "tracklet_not_found", f"tracklet {tracklet_id!r} is not enrolled")
    frames = await anyio.to_thread.run_sync(gallery.thumbnail_frames, [tracklet_id])
    return tracklet_out(record, frames.get(tracklet_id, []))


@router.get(
    "/tracklets/{tracklet_id}/thumbnails/{position}",
    dependencies=[CAN_READ],
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The JPEG."}},
    summary="One thumbnail of a tracklet (JPEG)",
)
async def get_thumbnail(
    runtime: RuntimeDep,
    tracklet_id: str,
    position: Annotated[int, Path(ge=0, lt=MAX_THUMBNAILS, description="As listed.")],
) -> Response:
    """``position`` as listed in the tracklet's ``thumbnails``."""
    jpeg = await anyio.to_thread.run_sync(runtime.gallery.get_thumbnail, tracklet_id, position)
    if jpeg is None:
        raise ApiError(
            404,
            "thumbnail_not_found",
            f"tracklet {tracklet_id!r} has no thumbnail {position} (GET /tracklets/"
            f"{tracklet_id} lists its thumbnails)",
        )
    # A tracklet id is never reused, so its thumbnails never change.
    return Response(
        jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
    )


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
