"""``ReidClient``: a typed, synchronous Python client of the service.

```python
from service.client import ReidClient

with ReidClient("http://127.0.0.1:8000", api_key="...") as reid:
    reid.enroll(["f1.jpg", "f2.jpg"], identity="alice", camera="cam1")
    job = reid.enroll_video("cam1.mp4", "cam1.txt", camera="cam1")
    job = reid.query_video("cam2.mp4", "cam2.txt", camera="cam2", exclude_cameras=["cam2"])
    for track in job.tracks:
        print(track.track_id, [m.identity for m in track.matches])
```

Answers are the service's own pydantic models (``service.schemas``, ``service.video_schemas``);
errors raise :class:`ReidError` with the service's code and message. Connection errors, 502-504
and 503 with ``Retry-After`` are retried with backoff. Every enrolment carries an
``Idempotency-Key`` (a new UUID per call unless given), so a retry of a request the server had
already stored returns the first answer instead of enrolling twice. Video jobs are polled until
they end; if the server restarted and lost a running job, it is sent again under its key.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import numpy as np
from pydantic import BaseModel

from service.schemas import (
    DeletedIdentity,
    DeletedTracklet,
    EnrollResponse,
    IdentityOut,
    IdentityPage,
    QueryResponse,
    ThumbnailOut,
    TrackletOut,
)
from service.video_schemas import VideoJob

ModelT = TypeVar("ModelT", bound=BaseModel)
Frame = str | os.PathLike[str] | bytes | np.ndarray
ProgressCallback = Callable[[VideoJob], None]
UploadCallback = Callable[[int, int], None]  # (bytes sent, bytes in all)

IDEMPOTENCY_HEADER = "Idempotency-Key"
_RETRY_STATUS = (502, 503, 504)
_MAX_WAIT_S = 30.0


class ReidError(Exception):
    """The service refused a request (or could not be reached after every retry)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def _encode_frame(frame: Frame, index: int) -> tuple[str, bytes]:
    if isinstance(frame, np.ndarray):
        import cv2

        image = frame
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, buffer = cv2.imencode(".png", image)
        if not ok:
            raise ValueError(f"frame {index}: OpenCV cannot encode an array of {frame.shape}")
        return f"{index:06d}.png", buffer.tobytes()
    if isinstance(frame, bytes):
        return f"{index:06d}", frame
    path = Path(frame)
    return path.name, path.read_bytes()


def _form(values: Mapping[str, Any]) -> dict[str, str]:
    """Form fields as the service reads them; None is left out."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, datetime):
            out[key] = value.isoformat()
        elif isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            out[key] = ",".join(value)
        elif isinstance(value, dict):
            out[key] = json.dumps(value)
        else:
            out[key] = str(value)
    return out


class ReidClient:
    """One connection pool to one service. Thread-safe as ``httpx.Client`` is."""

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 5,
        backoff_s: float = 0.5,
        poll_s: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"X-API-Key": api_key} if api_key else {}
        self._http = httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self.retries = retries
        self.backoff_s = backoff_s
        self.poll_s = poll_s

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ReidClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ------------------------------------------------------------------------------

    def _wait(self, attempt: int, response: httpx.Response | None) -> None:
        delay = self.backoff_s * 2**attempt
        if response is not None:
            with contextlib.suppress(ValueError):
                delay = float(response.headers.get("retry-after", delay))
        time.sleep(min(delay, _MAX_WAIT_S))

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotency_key: str | None = None,
        body: Callable[[], dict[str, Any]] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; ``body()`` builds fresh request arguments (files are re-opened)
        for every attempt. Raises :class:`ReidError` for an error answer."""
        headers = {IDEMPOTENCY_HEADER: idempotency_key} if idempotency_key else {}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            arguments = {**kwargs, **(body() if body else {})}
            try:
                response = self._http.request(method, path, headers=headers, **arguments)
            except httpx.TransportError as exc:
                if last:
                    raise ReidError(0, "unreachable", f"{method} {path}: {exc}") from exc
                self._wait(attempt, None)
                continue
            finally:
                for value in arguments.get("files", []):
                    handle = value[1][1]
                    if hasattr(handle, "close"):
                        handle.close()
            if response.status_code in _RETRY_STATUS and not last:
                self._wait(attempt, response)
                continue
            if response.is_error:
                raise _error(response)
            return response
        raise AssertionError("unreachable")

    def _call(self, model: type[ModelT], method: str, path: str, **kwargs: Any) -> ModelT:
        return model.model_validate(self.request(method, path, **kwargs).json())

    # -- tracklets ------------------------------------------------------------------------------

    def enroll(
        self,
        frames: Sequence[Frame],
        identity: str,
        *,
        camera: str | None = None,
        start_time: datetime | None = None,
        end_time: datetime | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> EnrollResponse:
        """Enroll one tracklet (frames in order: paths, encoded bytes or RGB arrays)."""
        encoded = [_encode_frame(frame, i) for i, frame in enumerate(frames)]
        fields = _form(
            {
                "identity": identity,
                "camera": camera,
                "start_time": start_time,
                "end_time": end_time,
                "metadata": metadata,
            }
        )
        return self._call(
            EnrollResponse,
            "POST",
            "/tracklets",
            idempotency_key=idempotency_key or str(uuid.uuid4()),
            data=fields,
            files=[("frames", (name, data)) for name, data in encoded],
        )

    def query(
        self,
        frames: Sequence[Frame],
        *,
        top_k: int = 10,
        max_distance: float | None = None,
        cameras: Sequence[str] | None = None,
        exclude_cameras: Sequence[str] | None = None,
        start_after: datetime | None = None,
        end_before: datetime | None = None,
        group_by_identity: bool = True,
        rerank: int | None = None,
    ) -> QueryResponse:
        """Who this tracklet shows: the nearest enrolled identities (or tracklets)."""
        encoded = [_encode_frame(frame, i) for i, frame in enumerate(frames)]
        fields = _form(
            {
                "top_k": top_k,
                "max_distance": max_distance,
                "cameras": cameras,
                "exclude_cameras": exclude_cameras,
                "start_after": start_after,
                "end_before": end_before,
                "group_by_identity": group_by_identity,
                "rerank": rerank,
            }
        )
        return self._call(
            QueryResponse,
            "POST",
            "/query",
            data=fields,
            files=[("frames", (name, data)) for name, data in encoded],
        )

    def identities(self, offset: int = 0, limit: int = 100) -> IdentityPage:
        return self._call(
            IdentityPage, "GET", "/identities", params={"offset": offset, "limit": limit}
        )

    def iter_identities(self, page_size: int = 500) -> Iterator[IdentityOut]:
        """Every enrolled identity, page after page."""
        offset = 0
        while True:
            page = self.identities(offset, page_size)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def delete(self, identity: str) -> DeletedIdentity:
        """Delete an identity and all its tracklets."""
        return self._call(DeletedIdentity, "DELETE", f"/identities/{_quote(identity)}")

    def delete_tracklet(self, tracklet_id: str) -> DeletedTracklet:
        return self._call(DeletedTracklet, "DELETE", f"/tracklets/{_quote(tracklet_id)}")

    def tracklet(self, tracklet_id: str) -> TrackletOut:
        """One enrolled tracklet, its thumbnails listed."""
        return self._call(TrackletOut, "GET", f"/tracklets/{_quote(tracklet_id)}")

    def thumbnail(self, thumbnail: ThumbnailOut) -> bytes:
        """A thumbnail's JPEG."""
        return self.request("GET", thumbnail.url).content

    # -- videos ---------------------------------------------------------------------------------

    def enroll_video(
        self,
        video: str | os.PathLike[str],
        tracks: str | os.PathLike[str],
        camera: str,
        *,
        identities: Mapping[int | str, str] | None = None,
        start_time: datetime | None = None,
        fps: float | None = None,
        min_track_frames: int | None = None,
        metadata: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        on_progress: ProgressCallback | None = None,
        on_upload: UploadCallback | None = None,
    ) -> VideoJob:
        """Enroll every track of a video (all or none); ``identities`` maps track ids to
        identities (default ``<camera>:<track id>``). Waits for the job and returns it."""
        fields = {
            "camera": camera,
            "start_time": start_time,
            "fps": fps,
            "min_track_frames": min_track_frames,
            "metadata": metadata,
            "identities": {str(k): v for k, v in identities.items()} if identities else None,
        }
        return self._video("enroll", video, tracks, fields, idempotency_key, on_progress, on_upload)

    def query_video(
        self,
        video: str | os.PathLike[str],
        tracks: str | os.PathLike[str],
        camera: str,
        *,
        start_time: datetime | None = None,
        fps: float | None = None,
        min_track_frames: int | None = None,
        top_k: int = 10,
        max_distance: float | None = None,
        cameras: Sequence[str] | None = None,
        exclude_cameras: Sequence[str] | None = None,
        group_by_identity: bool = True,
        rerank: int | None = None,
        on_progress: ProgressCallback | None = None,
        on_upload: UploadCallback | None = None,
    ) -> VideoJob:
        """Query with every track of a video; each track of the answer has its matches."""
        fields = {
            "camera": camera,
            "start_time": start_time,
            "fps": fps,
            "min_track_frames": min_track_frames,
            "top_k": top_k,
            "max_distance": max_distance,
            "cameras": cameras,
            "exclude_cameras": exclude_cameras,
            "group_by_identity": group_by_identity,
            "rerank": rerank,
        }
        return self._video(
            "query", video, tracks, fields, str(uuid.uuid4()), on_progress, on_upload
        )

    def _video(
        self,
        mode: str,
        video: str | os.PathLike[str],
        tracks: str | os.PathLike[str],
        fields: dict[str, Any],
        key: str | None,
        on_progress: ProgressCallback | None,
        on_upload: UploadCallback | None,
    ) -> VideoJob:
        key = key or str(uuid.uuid4())
        with _as_file(Path(video)) as upload:

            def post() -> VideoJob:
                return self._call(
                    VideoJob,
                    "POST",
                    "/videos",
                    idempotency_key=key,
                    params={"mode": mode},
                    data=_form(fields),
                    body=lambda: {"files": _video_files(upload, Path(tracks), on_upload)},
                )

            job = post()
            for _ in range(self.retries + 1):
                try:
                    return self._poll(job, on_progress)
                except ReidError as exc:
                    if exc.code != "job_not_found":
                        raise
                    job = post()  # the server restarted and lost the job: send it again
        raise ReidError(404, "job_not_found", f"video job {job.job_id} kept disappearing")

    def _poll(self, job: VideoJob, on_progress: ProgressCallback | None) -> VideoJob:
        while True:
            if on_progress is not None:
                on_progress(job)
            if job.status == "failed" and job.error is not None:
                raise ReidError(job.error.status, job.error.code, job.error.message)
            if job.status == "succeeded":
                return job
            time.sleep(self.poll_s)
            job = self._call(VideoJob, "GET", f"/videos/{job.job_id}")

    def job(self, job_id: str) -> VideoJob:
        return self._call(VideoJob, "GET", f"/videos/{_quote(job_id)}")


class _CountingFile(io.FileIO):
    """A file that reports how much of it has been read (httpx streams uploads by ``read``)."""

    def __init__(self, path: Path, on_read: UploadCallback | None) -> None:
        super().__init__(path, "rb")
        self._on_read = on_read
        self._total = os.fstat(self.fileno()).st_size

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        if self._on_read is not None:
            self._on_read(self.tell(), self._total)
        return data


def _video_files(
    video: Path, tracks: Path, on_upload: UploadCallback | None
) -> list[tuple[str, tuple[str, IO[bytes]]]]:
    """The video file, or a zip of img1/ frames, and the tracks file (opened for one attempt)."""
    field = "archive" if video.suffix.lower() == ".zip" else "video"
    return [
        ("tracks", (tracks.name, tracks.open("rb"))),
        (field, (video.name, _CountingFile(video, on_upload))),
    ]


@contextlib.contextmanager
def _as_file(video: Path) -> Iterator[Path]:
    """A folder of frames (MOT's img1/) is sent as a zip, stored uncompressed in a temporary
    file: one part instead of thousands, and never all in memory."""
    if not video.is_dir():
        yield video
        return
    frames = sorted(
        p for p in video.iterdir() if p.is_file() and p.suffix.lower() in (".jpg", ".jpeg", ".png")
    )
    if not frames:
        raise ValueError(f"{video} holds no .jpg/.jpeg/.png frames")
    with tempfile.TemporaryDirectory(prefix="reid-client-") as directory:
        path = Path(directory) / f"{video.name or 'img1'}.zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
            for frame in frames:
                archive.write(frame, f"img1/{frame.name}")
        yield path


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


def _error(response: httpx.Response) -> ReidError:
    try:
        error = response.json()["error"]
        return ReidError(response.status_code, error["code"], error["message"])
    except (ValueError, KeyError, TypeError):
        return ReidError(response.status_code, "http_error", response.text[:500])
