"""``POST /videos`` and its job resource ``GET /videos/{job_id}``; also opens what idempotent
enrolment and video jobs keep on disk (this router's lifespan).

Why a job and not a streamed answer: a long video takes minutes, and a client that loses its
connection should neither upload the video again nor lose the outcome. The upload is answered
``202 Accepted`` with the job once every check that needs no decoding has passed; the client
polls the job (``Location`` header) for progress and, at the end, the tracks.
"""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, FastAPI, Header, Path, Query, Request, Response
from pydantic import ValidationError

from service.dependencies import CAN_READ, RuntimeDep, SettingsDep
from service.gallery import GalleryError
from service.idempotency import (
    HEADER,
    KEY_DESCRIPTION,
    REPLAYED_HEADER,
    IdContext,
    IdempotencyStore,
    KeyLocks,
    StoredAnswer,
    check_key,
    check_reuse,
    key_scope,
)
from service.jobs import JobHandle, JobRegistry, JobStore
from service.metrics import ServiceMetrics
from service.routers.query import rerank_of
from service.runtime import Runtime
from service.schemas import ApiError, ErrorResponse
from service.security import API_KEY_HEADER, Scope
from service.settings import Settings
from service.thumbnails import ThumbnailConfig
from service.uploads import Upload, receive_multipart
from service.video_jobs import (
    Accepted,
    accept,
    cut_and_embed,
    dropped_out,
    enroll_tracks,
    query_tracks,
)
from service.video_schemas import VideoFields, VideoJob, VideoMode, VideoProgress

VIDEOS_PATH = "/videos"
_JOB_NAMESPACE = uuid.UUID("0b8f4c55-51d5-4a0e-9a3b-7d0c5f1e2a61")


def body_limits(settings: Settings) -> dict[str, tuple[int, str]]:
    """Routes whose body may exceed REID_MAX_REQUEST_BYTES (for BodySizeLimitMiddleware)."""
    return {VIDEOS_PATH: (settings.max_video_bytes, "REID_MAX_VIDEO_BYTES")}


def _multipart_doc() -> dict[str, Any]:
    schema = VideoFields.model_json_schema()
    properties = {k: v for k, v in schema["properties"].items() if k != "mode"}
    for name in ("identities", "metadata", "cameras", "exclude_cameras"):
        description = properties[name].get("description", "")
        properties[name] = {"type": "string", "description": description}
    binary = {"type": "string", "format": "binary"}
    properties["video"] = {**binary, "description": "The video (MP4, AVI, MKV, ...)."}
    properties["archive"] = {**binary, "description": "Instead of 'video': a zip of img1/."}
    properties["frames"] = {
        "type": "array",
        "items": binary,
        "description": "Instead of 'video': the frames, each named by its number (000001.jpg).",
    }
    properties["tracks"] = {**binary, "description": "MOT text: frame,id,x,y,w,h,..."}
    required = ["camera", "tracks"]
    content = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": properties, "required": required}
        }
    }
    return {"requestBody": {"required": True, "content": content}}


def _fields(upload: Upload, mode: str) -> VideoFields:
    if "mode" in upload.fields:
        raise ApiError(
            400, "bad_request", "mode goes in the query string (POST /videos?mode=enroll)"
        )
    try:
        return VideoFields.model_validate({**upload.fields, "mode": mode})
    except ValidationError as exc:
        summary = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'body'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ApiError(422, "invalid_request", f"invalid request: {summary}") from exc


def _job_id(scope: str, key: str, fingerprint: str) -> str:
    return str(uuid.uuid5(_JOB_NAMESPACE, "\x1f".join((scope, key, fingerprint))))


def _new_job(job_id: str, job: Accepted) -> JobHandle:
    geometry = job.source.geometry
    return JobHandle(
        VideoJob(
            job_id=job_id,
            status="queued",
            mode=job.fields.mode,
            camera=job.fields.camera,
            source=job.source_name,
            width=geometry.width,
            height=geometry.height,
            fps=job.fps,
            progress=VideoProgress(tracks_total=len(job.plans)),
            dropped_tracks=dropped_out(job.dropped),
            created_at=datetime.now(UTC),
        )
    )


def _work(
    job: Accepted,
    runtime: Runtime,
    metrics: ServiceMetrics,
    loop: asyncio.AbstractEventLoop,
    rerank: int,
    thumbnails: ThumbnailConfig | None,
):
    def run(handle: JobHandle) -> None:
        try:
            keep = thumbnails if job.fields.mode == "enroll" else None
            results = cut_and_embed(handle, job, runtime, metrics, loop, keep)
            if job.fields.mode == "enroll":
                tracks = enroll_tracks(job, handle.job_id, results, runtime.gallery)
            else:
                tracks = query_tracks(job, results, runtime, rerank)
            handle.update(tracks=tracks)
        except GalleryError as exc:
            # As the HTTP routes answer it: the gallery's own failure, nothing changed.
            message = f"the gallery failed: {exc}; nothing was changed"
            raise ApiError(503, "gallery_error", message) from exc
        finally:
            job.close()

    return run


def _rerank(fields: VideoFields, settings: Settings, runtime: Runtime) -> int:
    """Candidates each track's query re-scores, checked as /query checks them (0 to enroll)."""
    return rerank_of(fields.query_fields(), settings, runtime) if fields.mode == "query" else 0


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Opens (and closes) the idempotency store and the video job registry."""
    settings: Settings = app.state.settings
    shutil.rmtree(_uploads_dir(settings), ignore_errors=True)  # left by a killed process
    store = IdempotencyStore(settings.data_dir / "idempotency.sqlite3", settings.idempotency_ttl_s)
    registry = JobRegistry(
        JobStore(settings.data_dir / "video-jobs.sqlite3", settings.video_job_ttl_s),
        workers=settings.video_workers,
        max_jobs=settings.max_video_jobs,
    )
    app.state.idempotency = store
    app.state.idempotency_locks = KeyLocks()
    app.state.video_jobs = registry
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(registry.close)
        store.close()


router = APIRouter(tags=["videos"], lifespan=_lifespan)


def _uploads_dir(settings: Settings) -> pathlib.Path:
    return settings.data_dir / "uploads"


async def _receive(request: Request, settings: Settings) -> Upload:
    return await receive_multipart(
        request.headers.get("content-type", ""),
        request.stream(),
        _uploads_dir(settings),
        max_files=settings.max_video_frames + 2,
        file_limits={"tracks": (settings.max_tracks_file_bytes, "REID_MAX_TRACKS_FILE_BYTES")},
    )


async def _start_job(
    request: Request,
    settings: Settings,
    runtime: Runtime,
    job_id: str,
    upload: Upload,
    fields: VideoFields,
    ids: IdContext | None,
) -> VideoJob:
    """Check the request (4xx now, before answering) and queue its job, which owns ``upload``
    from then on."""
    state = request.app.state
    rerank = _rerank(fields, settings, runtime)
    accepted = await anyio.to_thread.run_sync(accept, upload, fields, settings, ids)
    handle = _new_job(job_id, accepted)
    loop = asyncio.get_running_loop()
    work = _work(accepted, runtime, state.metrics, loop, rerank, settings.thumbnail_config)
    try:
        state.video_jobs.submit(handle, work)
    except BaseException:
        accepted.source.close()
        raise
    return handle.snapshot()


async def _start_keyed(
    request: Request,
    settings: Settings,
    runtime: Runtime,
    upload: Upload,
    fields: VideoFields,
    key: str,
    fingerprint: str,
) -> tuple[VideoJob, bool]:
    """Under an Idempotency-Key: the job this key already names, or a new one with derived
    ids; (the job, whether it is a replay)."""
    state = request.app.state
    scope, route = key_scope(request), f"POST {VIDEOS_PATH}"
    async with state.idempotency_locks.hold(scope, key):
        try:
            stored = await anyio.to_thread.run_sync(state.idempotency.get, scope, key)
            if stored is not None:
                check_reuse(stored, route, fingerprint, key)
            job_id = _job_id(scope, key, fingerprint)
            existing = await anyio.to_thread.run_sync(state.video_jobs.get, job_id)
            # A job that failed inside the server is run again; any other is the answer.
            if existing is not None and not (existing.error and existing.error.status >= 500):
                upload.cleanup()
                return existing, True
            ids = IdContext(scope, key, fingerprint)
            job = await _start_job(request, settings, runtime, job_id, upload, fields, ids)
        except BaseException:
            upload.cleanup()
            raise
        answer = StoredAnswer(route, fingerprint, 202, {"job_id": job_id}, time.time())
        await anyio.to_thread.run_sync(state.idempotency.put, scope, key, answer)
        return job, False


async def _start(
    request: Request, settings: Settings, runtime: Runtime, mode: VideoMode, key: str | None
) -> tuple[VideoJob, bool]:
    """Receive, check and queue a video; (the job, whether it is a replay)."""
    upload = await _receive(request, settings)
    try:
        fields = _fields(upload, mode)
        _rerank(fields, settings, runtime)  # refused before anything is decoded
        fingerprint = hashlib.sha256(f"{mode}\x1f{upload.fingerprint()}".encode()).hexdigest()
        if key is None:
            job_id = str(uuid.uuid4())
            job = await _start_job(request, settings, runtime, job_id, upload, fields, None)
            return job, False
    except BaseException:
        upload.cleanup()
        raise
    return await _start_keyed(request, settings, runtime, upload, fields, key, fingerprint)


@router.post(
    VIDEOS_PATH,
    status_code=202,
    response_model=VideoJob,
    dependencies=[CAN_READ],
    responses={503: {"model": ErrorResponse}},
    openapi_extra=_multipart_doc(),
    summary="Cut a video's tracks into tracklets; enroll them or query with them",
)
async def post_video(
    request: Request,
    response: Response,
    settings: SettingsDep,
    runtime: RuntimeDep,
    mode: Annotated[VideoMode, Query(description="enroll (needs a write key) or query.")],
    idempotency_key: Annotated[
        str | None, Header(alias=HEADER, description=KEY_DESCRIPTION)
    ] = None,
) -> VideoJob:
    """Multipart: ``video`` (or ``archive``/``frames`` of MOT's img1/), ``tracks`` (MOT text),
    ``camera`` and options. Answers 202 with the job; poll ``GET /videos/{job_id}``. Enrolment
    is all-or-nothing. With an ``Idempotency-Key``, a retry answers the same job and never
    enrolls twice."""
    if mode == "enroll":  # before a byte of the upload is read, as the other routes do
        request.app.state.api_keys.check(request.headers.get(API_KEY_HEADER), Scope.WRITE)
    key = check_key(idempotency_key)
    job, replayed = await _start(request, settings, runtime, mode, key)
    response.headers["Location"] = f"{VIDEOS_PATH}/{job.job_id}"
    if replayed:
        response.headers[REPLAYED_HEADER] = "true"
    return job


@router.get(
    VIDEOS_PATH + "/{job_id}",
    response_model=VideoJob,
    dependencies=[CAN_READ],
    summary="A video job: progress, then its tracks",
)
async def get_video(request: Request, job_id: Annotated[str, Path(max_length=64)]) -> VideoJob:
    job = await anyio.to_thread.run_sync(request.app.state.video_jobs.get, job_id)
    if job is None:
        raise ApiError(
            404,
            "job_not_found",
            f"no video job {job_id!r}: it ended more than REID_VIDEO_JOB_TTL_S ago, or the "
            "service restarted while it ran. POST the video again (with the same "
            "Idempotency-Key nothing is enrolled twice)",
        )
    return job
