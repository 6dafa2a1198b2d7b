"""Video jobs: a bounded line of background work that clients poll.

A job runs in one of ``REID_VIDEO_WORKERS`` threads; at most ``REID_MAX_VIDEO_JOBS`` are queued or
running (more are refused with 503 and ``Retry-After``). While a job lives its state is in memory
and every poll reads a consistent copy; once it ends (succeeded or failed) it is also written to
``REID_DATA_DIR/video-jobs.sqlite3`` and stays readable for ``REID_VIDEO_JOB_TTL_S``, across
restarts. A job still running when the process dies is gone: its client re-sends the request
(with the same ``Idempotency-Key`` nothing is enrolled twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service import durable_sqlite
from service.schemas import ApiError
from service.video_schemas import JobError, VideoJob

log = logging.getLogger(__name__)


class JobCancelled(Exception):
    """The service is shutting down; the job stops where it is, having stored nothing."""


class JobHandle:
    """A job's state, shared by the thread running it and the requests polling it."""

    def __init__(self, job: VideoJob) -> None:
        self._job = job
        self._lock = threading.Lock()
        self.cancelled = threading.Event()
        self.finished = threading.Event()

    @property
    def job_id(self) -> str:
        return self._job.job_id

    def snapshot(self) -> VideoJob:
        with self._lock:
            return self._job.model_copy(deep=True)

    def update(self, **changes: Any) -> None:
        with self._lock:
            for name, value in changes.items():
                setattr(self._job, name, value)

    def advance(self, **progress: int) -> None:
        """Set progress counters; raises :class:`JobCancelled` once the service stops."""
        if self.cancelled.is_set():
            raise JobCancelled
        with self._lock:
            for name, value in progress.items():
                setattr(self._job.progress, name, value)


class JobStore:
    """Finished jobs, by id, as JSON."""

    def __init__(self, path: Path, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._db = durable_sqlite.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS jobs (job_id TEXT PRIMARY KEY, body TEXT NOT NULL, "
            "finished REAL NOT NULL)"
        )

    def get(self, job_id: str) -> VideoJob | None:
        with self._lock:
            row = self._db.execute(
                "SELECT body FROM jobs WHERE job_id = ? AND finished >= ?",
                (job_id, time.time() - self.ttl_s),
            ).fetchone()
        return VideoJob.model_validate_json(row[0]) if row else None

    def put(self, job: VideoJob) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE finished < ?", (time.time() - self.ttl_s,))
            self._db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?)",
                (job.job_id, job.model_dump_json(), time.time()),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _now() -> datetime:
    return datetime.now(UTC)


class JobRegistry:
    """Runs jobs and answers for them, live or finished."""

    def __init__(self, store: JobStore, *, workers: int, max_jobs: int) -> None:
        self.store = store
        self.max_jobs = max_jobs
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reid-video")
        self._live: dict[str, JobHandle] = {}
        self._lock = threading.Lock()
        self._closed = False

    def live(self, job_id: str) -> JobHandle | None:
        with self._lock:
            return self._live.get(job_id)

    def get(self, job_id: str) -> VideoJob | None:
        handle = self.live(job_id)
        return handle.snapshot() if handle is not None else self.store.get(job_id)

    def submit(self, handle: JobHandle, work: Callable[[JobHandle], None]) -> None:
        """Queue ``work(handle)``; 503 when the line is full."""
        with self._lock:
            if self._closed:
                raise ApiError(503, "shutting_down", "the service is stopping: retry shortly")
            active = sum(not h.finished.is_set() for h in self._live.values())
            if active >= self.max_jobs:
                raise ApiError(
                    503,
                    "too_many_video_jobs",
                    f"{active} video jobs are queued or running, the limit "
                    "(REID_MAX_VIDEO_JOBS): retry later",
                    headers={"Retry-After": "30"},
                )
            self._live[handle.job_id] = handle
        self._executor.submit(self._run, handle, work)

    def _run(self, handle: JobHandle, work: Callable[[JobHandle], None]) -> None:
        handle.update(status="running", started_at=_now())
        try:
            work(handle)
        except JobCancelled:
            log.info("video job %s stopped: the service is shutting down", handle.job_id)
            self._forget(handle)
            return
        except ApiError as exc:
            error = JobError(status=exc.status, code=exc.code, message=exc.message)
            handle.update(status="failed", error=error)
        except Exception as exc:
            log.error("video job %s failed", handle.job_id, exc_info=exc)
            message = f"the job failed inside the server ({type(exc).__name__}); see its log"
            handle.update(
                status="failed", error=JobError(status=500, code="internal_error", message=message)
            )
        else:
            handle.update(status="succeeded")
        handle.update(finished_at=_now())
        try:
            self.store.put(handle.snapshot())
        finally:
            self._forget(handle)

    def _forget(self, handle: JobHandle) -> None:
        """Finished jobs are read from the store from now on."""
        handle.finished.set()
        with self._lock:
            if self._live.get(handle.job_id) is handle:
                del self._live[handle.job_id]

    def close(self) -> None:
        """Stop every job where it is (nothing half-stored: enrolment is the last step and one
        atomic add) and wait for the threads."""
        with self._lock:
            self._closed = True
            handles = list(self._live.values())
        for handle in handles:
            handle.cancelled.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.store.close()
