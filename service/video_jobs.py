"""What a video job does: check the request (before it is accepted), then cut the tracks into
tracklets, embed them and enroll them all at once or query with each.

The check runs while the client waits, so every problem that can be seen without decoding the
whole video is a 4xx answer to ``POST /videos``: a tracks file that is not MOT, boxes outside the
frame, frames past the end (when the container says how many it has), unmapped track ids, limits.
The job then decodes in its own thread; each track's crops go through
:func:`model.preprocessing.prepare_tracklet` (in the service's decoding threads) and the
micro-batcher, exactly as an uploaded tracklet does, while decoding continues.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import numpy as np

from model.preprocessing import prepare_tracklet
from service.encoder import Embedded
from service.frames import FrameLimits
from service.gallery import Gallery, Thumbnail, TrackletExists, TrackletRecord
from service.idempotency import IdContext, existing_records
from service.jobs import JobHandle
from service.metrics import ServiceMetrics
from service.routers.query import match_out, rescored_matches, search_matches
from service.runtime import Runtime
from service.schemas import ApiError
from service.settings import Settings
from service.thumbnails import ThumbnailConfig, make_thumbnails, shrink
from service.tracks import (
    DroppedTrack,
    Track,
    TrackPlan,
    check_boxes_inside,
    check_frames_exist,
    check_mapping_tracks,
    frame_past_end,
    parse_mot,
    plan_tracks,
    resolve_identities,
)
from service.uploads import Upload
from service.video import (
    FrameFolder,
    FrameSource,
    VideoFile,
    cut_tracklets,
    folder_from_files,
    folder_from_zip,
)
from service.video_schemas import DroppedTrackOut, TrackOut, VideoFields

# Tracks being preprocessed and embedded while decoding goes on; more wait for the oldest.
_IN_FLIGHT = 4


@dataclass
class Accepted:
    """A checked request, ready to run."""

    fields: VideoFields
    upload: Upload
    source: FrameSource
    source_name: str
    plans: list[TrackPlan]
    dropped: list[DroppedTrack]
    identities: dict[int, str] | None
    fps: float | None
    ids: IdContext | None

    def close(self) -> None:
        self.source.close()
        self.upload.cleanup()


# ----------------------------------------------------------------------------------- checking


def _one_source(upload: Upload, limits: FrameLimits, fps: float | None) -> tuple[FrameSource, str]:
    videos, archives = upload.files_named("video"), upload.files_named("archive")
    frames = upload.files_named("frames")
    kinds = [
        name
        for name, parts in (("video", videos), ("archive", archives), ("frames", frames))
        if parts
    ]
    if len(kinds) != 1 or len(videos) > 1 or len(archives) > 1:
        raise ApiError(
            400,
            "bad_request",
            "send exactly one of: a 'video' file, one zip 'archive' of the img1/ frames, or "
            f"the frames as 'frames' files (got {', '.join(kinds) or 'none'})",
        )
    if videos:
        return VideoFile(videos[0].path, limits), videos[0].filename or "video"
    if archives:
        return folder_from_zip(archives[0].path, fps, limits), archives[0].filename or "frames"
    return folder_from_files([(p.filename, p.path) for p in frames], fps, limits), "frames"


def _read_tracks(upload: Upload, settings: Settings) -> list[Track]:
    parts = upload.files_named("tracks")
    if len(parts) != 1:
        raise ApiError(
            400,
            "no_tracks",
            "send the tracker's output as one file named 'tracks' (MOT format: "
            "frame,id,bb_left,bb_top,bb_width,bb_height,...)",
        )
    return parse_mot(
        parts[0].path.read_bytes(),
        max_tracks=settings.max_video_tracks,
        max_frame=settings.max_video_frames,
    )


def _check_frames(source: FrameSource, tracks: list[Track], what: str) -> None:
    geometry = source.geometry
    check_boxes_inside(tracks, geometry.width, geometry.height)
    if isinstance(source, FrameFolder):
        for track in tracks:
            for box in track.boxes:
                if source.missing([box.frame]) is not None:
                    raise frame_past_end(track.track_id, box, geometry.frame_count or 0, what)
    elif geometry.frame_count is not None:
        check_frames_exist(tracks, geometry.frame_count, what)


def _check_metadata(fields: VideoFields, source_name: str, settings: Settings) -> None:
    sample = track_metadata(fields, source_name, "0" * 36, 10**9, 10**9, 10**9)
    size = len(json.dumps(sample, separators=(",", ":")).encode())
    if size > settings.max_metadata_bytes:
        raise ApiError(
            413,
            "metadata_too_large",
            f"metadata (with the track's own entry) is {size} bytes of JSON, more than the "
            f"limit of {settings.max_metadata_bytes} (REID_MAX_METADATA_BYTES)",
        )


def accept(
    upload: Upload, fields: VideoFields, settings: Settings, ids: IdContext | None
) -> Accepted:
    """Everything that can be refused before decoding: runs in a thread while the client
    waits. The caller owns ``upload`` until this returns."""
    tracks = _read_tracks(upload, settings)
    if fields.mode == "enroll":
        check_mapping_tracks(fields.identities, tracks)
    source, source_name = _one_source(upload, FrameLimits.from_settings(settings), fields.fps)
    try:
        what = "the video" if isinstance(source, VideoFile) else "the frames folder"
        _check_frames(source, tracks, what)
        fps = fields.fps or source.geometry.fps
        if fields.start_time is not None and fps is None:
            raise ApiError(
                422,
                "no_frame_rate",
                "start_time needs the frame rate to time the tracks, and the frames do not "
                "say it: send fps",
            )
        plans, dropped = plan_tracks(
            tracks,
            min_frames=fields.min_track_frames or settings.video_min_track_frames,
            max_frames=settings.max_frames_per_tracklet,
            max_crops=settings.max_video_crops,
        )
        if not plans:
            raise ApiError(
                422,
                "no_tracks_kept",
                f"all {len(dropped)} tracks are shorter than the minimum "
                f"({dropped[0].reason}): lower min_track_frames",
            )
        identities = None
        if fields.mode == "enroll":
            identities = resolve_identities(plans, fields.identities, fields.camera)
            _check_metadata(fields, source_name, settings)
    except BaseException:
        source.close()
        raise
    return Accepted(fields, upload, source, source_name, plans, dropped, identities, fps, ids)


def dropped_out(dropped: Sequence[DroppedTrack]) -> list[DroppedTrackOut]:
    return [
        DroppedTrackOut(
            track_id=item.track.track_id,
            first_frame=item.track.first_frame,
            last_frame=item.track.last_frame,
            num_boxes=len(item.track.boxes),
            reason=item.reason,
        )
        for item in dropped
    ]


# ------------------------------------------------------------------------------------ running


async def _embed(
    runtime: Runtime, metrics: ServiceMetrics, crops: list[np.ndarray], role: str
) -> Embedded:
    """One track's crops -> its embedding, as an uploaded tracklet goes: preprocessing for the
    served model's input spec in the decoding threads, then the micro-batcher."""
    tracklet = await anyio.to_thread.run_sync(
        prepare_tracklet, crops, runtime.encoder.spec, limiter=runtime.decode_limiter
    )
    embedded = await runtime.batcher.embed(tracklet, role)
    metrics.count_embedded(role, embedded.features.shape[0])
    return embedded


#: A track's plan, its embedding and the thumbnails kept of its crops (enrolments).
TrackResult = tuple[TrackPlan, Embedded, list[Thumbnail]]


def _collect(future: Future[Embedded], plan: TrackPlan) -> Embedded:
    try:
        return future.result()
    except ValueError as exc:  # preprocessing refused the crops
        raise ApiError(
            422, "unprocessable_frames", f"track {plan.track.track_id}'s crops: {exc}"
        ) from exc


def cut_and_embed(
    handle: JobHandle,
    job: Accepted,
    runtime: Runtime,
    metrics: ServiceMetrics,
    loop: asyncio.AbstractEventLoop,
    thumbnails: ThumbnailConfig | None = None,
) -> dict[int, TrackResult]:
    """Decode, crop and embed every kept track; the embeddings by track id, with the
    thumbnails of its crops when ``thumbnails`` says to keep them."""
    role = job.fields.mode
    what = "the video" if isinstance(job.source, VideoFile) else "the frames folder"
    total_frames = max(plan.boxes[-1].frame for plan in job.plans)
    handle.advance(frames_total=total_frames, tracks_total=len(job.plans))
    pending: deque[tuple[TrackPlan, Future[Embedded], list[np.ndarray]]] = deque()
    done: dict[int, TrackResult] = {}

    def finish_oldest() -> None:
        plan, future, previews = pending.popleft()
        embedded = _collect(future, plan)
        kept = make_thumbnails(previews, embedded.attention, thumbnails) if thumbnails else []
        done[plan.track.track_id] = (plan, embedded, kept)
        handle.advance(tracks_embedded=len(done))

    try:
        frames = cut_tracklets(
            job.source, job.plans, what, on_frame=lambda n: handle.advance(frames_decoded=n)
        )
        for plan, crops in frames:
            embedding = _embed(runtime, metrics, crops, role)
            future = asyncio.run_coroutine_threadsafe(embedding, loop)
            previews = [shrink(crop, thumbnails.max_side) for crop in crops] if thumbnails else []
            pending.append((plan, future, previews))
            while len(pending) > _IN_FLIGHT:
                finish_oldest()
        while pending:
            finish_oldest()
    finally:
        for _, future, _ in pending:
            future.cancel()
    return done


def track_times(
    fields: VideoFields, fps: float | None, plan: TrackPlan
) -> tuple[datetime | None, datetime | None]:
    if fields.start_time is None or fps is None:
        return None, None
    first, last = plan.track.first_frame, plan.track.last_frame
    return (
        fields.start_time + timedelta(seconds=(first - 1) / fps),
        fields.start_time + timedelta(seconds=(last - 1) / fps),
    )


def track_metadata(
    fields: VideoFields, source: str, job_id: str, track_id: int, first: int, last: int
) -> dict[str, Any]:
    """The caller's metadata plus where the tracklet comes from (``track`` is ours)."""
    track = {
        "id": track_id,
        "first_frame": first,
        "last_frame": last,
        "source": source,
        "job_id": job_id,
    }
    return {**fields.metadata, "track": track}


def _track_out(job: Accepted, plan: TrackPlan, **extra: Any) -> TrackOut:
    start, end = track_times(job.fields, job.fps, plan)
    return TrackOut(
        track_id=plan.track.track_id,
        first_frame=plan.track.first_frame,
        last_frame=plan.track.last_frame,
        num_boxes=len(plan.track.boxes),
        num_frames=len(plan.boxes),
        start_time=start,
        end_time=end,
        **extra,
    )


def enroll_tracks(
    job: Accepted, job_id: str, results: dict[int, TrackResult], gallery: Gallery
) -> list[TrackOut]:
    """One atomic add of every track: all enrolled, or none."""
    assert job.identities is not None
    records = []
    now = datetime.now(UTC)
    for track_id in sorted(results):
        plan, embedded, thumbnails = results[track_id]
        start, end = track_times(job.fields, job.fps, plan)
        label = f"track:{track_id}"
        records.append(
            TrackletRecord(
                tracklet_id=job.ids.tracklet_id(label) if job.ids else str(uuid.uuid4()),
                identity=job.identities[track_id],
                embedding=embedded.embedding,
                features=embedded.features,
                attention=embedded.attention,
                camera=job.fields.camera,
                start_time=start,
                end_time=end,
                metadata=track_metadata(
                    job.fields,
                    job.source_name,
                    job_id,
                    track_id,
                    plan.track.first_frame,
                    plan.track.last_frame,
                ),
                created_at=now,
                thumbnails=thumbnails,
            )
        )
    try:
        gallery.add(records)
    except TrackletExists:
        # A retry under the same Idempotency-Key whose first run had stored everything.
        stored = existing_records(gallery, [r.tracklet_id for r in records]) if job.ids else None
        if stored is None:
            raise
        records = stored
    return [
        _track_out(
            job,
            results[int(r.metadata["track"]["id"])][0],
            tracklet_id=r.tracklet_id,
            identity=r.identity,
        )
        for r in records
    ]


def query_tracks(
    job: Accepted, results: dict[int, TrackResult], runtime: Runtime, rerank: int
) -> list[TrackOut]:
    """Each track's ranked matches, by the same rule (and re-scoring) as ``POST /query``."""
    fields = job.fields.query_fields()
    out = []
    for track_id in sorted(results):
        plan, embedded, _ = results[track_id]
        matches = search_matches(runtime, embedded, fields, rerank)
        if rerank:
            ranked = rescored_matches(runtime, embedded, matches, fields)
        else:
            ranked = [match_out(rank, match) for rank, match in enumerate(matches, start=1)]
        out.append(_track_out(job, plan, matches=ranked))
    return out
