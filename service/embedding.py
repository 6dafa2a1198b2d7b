"""A request's frames to an embedding, inside the admission budget and the request's deadline.

Two steps, each in a worker thread (at most ``REID_DECODE_WORKERS`` at once):

1. :func:`unpack` turns what arrived (base64 strings, multipart files, a zip) into encoded
   frames and checks every header: cheap, and it tells what decoding will cost.
2. :func:`embed_checked` reserves that cost (:meth:`service.admission.Admission.tracklet`), then
   decodes, preprocesses and embeds, and gives the room back once the embedding exists.

So every frame of a request is checked before any is decoded, and nothing is decoded without
room for it; the deadline is checked between frames, never in the middle of a gallery write.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import anyio.to_thread
import numpy as np

from model.preprocessing import InputSpec, prepare_tracklet
from service.admission import Admission, Deadline, run_to_end
from service.encoder import Embedded
from service.frames import (
    CheckedFrame,
    EncodedFrame,
    FrameLimits,
    check_frames,
    decode_base64_frames,
    decode_checked,
    read_zip,
)
from service.metrics import ServiceMetrics
from service.runtime import Runtime
from service.schemas import ApiError
from service.thumbnails import shrink

log = logging.getLogger(__name__)

#: Frames as they arrived: base64 strings (JSON), encoded files (multipart) or zip bytes.
FrameSource = list[str] | list[EncodedFrame] | bytes


@dataclass(frozen=True)
class TrackletWork:
    """What turning frames into an embedding needs; one per request (a route dependency)."""

    runtime: Runtime
    limits: FrameLimits
    admission: Admission
    deadline: Deadline
    metrics: ServiceMetrics


@dataclass(frozen=True)
class CheckedTracklet:
    """A tracklet's frames, unpacked and their headers checked; nothing decoded yet."""

    frames: list[CheckedFrame]
    unpack_ms: float


@dataclass(frozen=True)
class EmbeddedTracklet:
    embedded: Embedded
    decode_ms: float  # unpacking and decoding
    preprocess_ms: float
    embed_ms: float
    #: Every frame shrunk for thumbnails (enrolments that keep them), else None.
    previews: list[np.ndarray] | None = None


@dataclass(frozen=True)
class _Prepared:
    tracklet: np.ndarray  # float32 (T, 5, H, W), the network's input
    decode_ms: float
    preprocess_ms: float
    previews: list[np.ndarray] | None


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _unpack(source: FrameSource, limits: FrameLimits) -> CheckedTracklet:
    start = time.perf_counter()
    if isinstance(source, bytes):
        encoded = read_zip(source, limits)
    elif source and isinstance(source[0], str):
        encoded = decode_base64_frames(source, limits)  # type: ignore[arg-type]
    else:
        encoded = list(source)  # type: ignore[arg-type]
    frames = check_frames(encoded, limits)
    return CheckedTracklet(frames, ms(time.perf_counter() - start))


async def unpack(source: FrameSource, work: TrackletWork) -> CheckedTracklet:
    """Encoded frames with checked headers, in a worker thread. Base64 frames are removed from
    ``source`` once decoded: the parsed body would otherwise keep a second copy of every frame
    while they are decoded and preprocessed."""
    checked = await anyio.to_thread.run_sync(
        _unpack, source, work.limits, limiter=work.runtime.decode_limiter
    )
    if isinstance(source, list) and source and isinstance(source[0], str):
        source.clear()
    return checked


def _check_all(sources: list[FrameSource], limits: FrameLimits) -> None:
    for index, source in enumerate(sources):
        try:
            _unpack(source, limits)
        except ApiError as exc:
            raise exc.prefixed(f"tracklets[{index}]") from exc


async def check_all(sources: list[FrameSource], work: TrackletWork) -> None:
    """Every tracklet's frames unpacked and their headers checked before any is decoded, one
    tracklet at a time, each dropped once checked: a batch of many tiny frames would otherwise
    hold hundreds of thousands of frame objects at once. :func:`embed_source` unpacks again."""
    await anyio.to_thread.run_sync(
        _check_all, sources, work.limits, limiter=work.runtime.decode_limiter
    )


def _decode_and_prepare(
    tracklet: CheckedTracklet, spec: InputSpec, deadline: Deadline, preview_side: int | None
) -> _Prepared:
    """Runs in a worker thread: images -> the network's input (as ``spec``, the served
    model's, says), and copies shrunk to ``preview_side`` when thumbnails are kept. Empties
    ``tracklet.frames``."""
    start = time.perf_counter()
    images: list[np.ndarray] = []
    # Each frame's encoded bytes are dropped once it is decoded (``tracklet`` is used once).
    tracklet.frames.reverse()
    try:
        while tracklet.frames:
            deadline.check("while decoding its frames")
            images.append(decode_checked(tracklet.frames.pop()))
        decoded = time.perf_counter()
        deadline.check("before preprocessing its frames")
        prepared = _prepare(images, spec)
    except BaseException:
        # The error's traceback keeps this frame alive, in a failed batch until the next
        # garbage collection (its tasks and errors form cycles): drop the pixels now.
        images.clear()
        raise
    return _Prepared(
        tracklet=prepared,
        decode_ms=ms(decoded - start),
        preprocess_ms=ms(time.perf_counter() - decoded),
        previews=None if preview_side is None else [shrink(i, preview_side) for i in images],
    )


def _prepare(images: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    try:
        return prepare_tracklet(images, spec)
    except Exception as exc:
        # Preprocessing only ever sees images that decoded; if it still fails, the cause is in
        # those images, so the client hears about it (and the server log has the trace).
        log.warning("preprocessing rejected an upload", exc_info=True)
        raise ApiError(
            422, "unprocessable_frames", f"the frames could not be preprocessed: {exc}"
        ) from None


async def embed_checked(
    tracklet: CheckedTracklet, role: str, work: TrackletWork, preview_side: int | None = None
) -> EmbeddedTracklet:
    """Decode, preprocess and embed a checked tracklet as ``role`` (keeping previews of
    ``preview_side`` for thumbnails when given), holding admission room for its pixels and
    frames until the embedding exists."""
    pixels = sum(frame.pixels for frame in tracklet.frames)
    runtime = work.runtime
    async with work.admission.tracklet(pixels, len(tracklet.frames), work.deadline):
        prepared = await run_to_end(
            anyio.to_thread.run_sync(
                _decode_and_prepare,
                tracklet,
                runtime.encoder.spec,
                work.deadline,
                preview_side,
                limiter=runtime.decode_limiter,
            )
        )
        try:
            work.deadline.check("before embedding its frames")
            embed_start = time.perf_counter()
            embedded = await run_to_end(runtime.batcher.embed(prepared.tracklet, role))
        except BaseException:
            del prepared  # as in _decode_and_prepare: a traceback must not keep the tracklet
            raise
    work.metrics.count_embedded(role, embedded.features.shape[0])
    return EmbeddedTracklet(
        embedded=embedded,
        decode_ms=round(tracklet.unpack_ms + prepared.decode_ms, 3),
        preprocess_ms=prepared.preprocess_ms,
        embed_ms=ms(time.perf_counter() - embed_start),
        previews=prepared.previews,
    )


async def embed_source(
    source: FrameSource, role: str, work: TrackletWork, preview_side: int | None = None
) -> EmbeddedTracklet:
    """:func:`unpack` then :func:`embed_checked`: one request's frames to their embedding."""
    return await embed_checked(await unpack(source, work), role, work, preview_side)
