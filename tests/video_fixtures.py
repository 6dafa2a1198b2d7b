"""Helpers for the video tests: small scene videos and the POST /videos round trip."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from bench.video_scenes import Scene, render_scene

#: Limits of the video test servers: small, so that violating them is cheap.
VIDEO_ENV: dict[str, str] = {
    "REID_MAX_REQUEST_BYTES": str(4 * 1024 * 1024),
    "REID_MAX_VIDEO_BYTES": str(3 * 1024 * 1024),
    "REID_MAX_VIDEO_TRACKS": "12",
    "REID_MAX_FRAMES_PER_TRACKLET": "16",
    "REID_MAX_EMBEDDED_FRAMES": "16",
    "REID_VIDEO_MIN_TRACK_FRAMES": "6",
    "REID_BATCH_WAIT_MS": "5",
}


def small_scene(path: Path, camera: int, persons: list[int], **options: Any) -> Scene:
    """A 320x240 scene of ``persons`` walking (24 boxes each) and its MOT file beside it."""
    scene = render_scene(path, camera=camera, identities=persons, size=(320, 240), **options)
    scene.write_mot(path.with_suffix(".txt"))
    return scene


def video_files(scene: Scene, tracks: bytes | None = None) -> list[tuple[str, tuple]]:
    mot = tracks if tracks is not None else scene.path.with_suffix(".txt").read_bytes()
    return [
        ("video", (scene.path.name, scene.path.read_bytes(), "application/octet-stream")),
        ("tracks", ("tracks.txt", mot, "text/plain")),
    ]


def wait_job(client: httpx.Client, job: dict, timeout: float = 120.0) -> dict:
    """Poll a video job until it ends; the final job."""
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job still {job['status']} after {timeout} s"
        time.sleep(0.1)
        response = client.get(f"/videos/{job['job_id']}")
        assert response.status_code == 200, response.text
        job = response.json()
    return job


def post_video(
    client: httpx.Client,
    mode: str,
    files: list[tuple[str, tuple]],
    data: dict[str, str],
    key: str | None = None,
) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(f"/videos?mode={mode}", data=data, files=files, headers=headers)


def run_video(
    client: httpx.Client,
    mode: str,
    files: list[tuple[str, tuple]],
    data: dict[str, str],
    key: str | None = None,
) -> dict:
    """POST and wait; the finished job (asserting it was accepted)."""
    response = post_video(client, mode, files, data, key)
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/videos/{response.json()['job_id']}"
    return wait_job(client, response.json())
