"""Idempotent enrolment survives ``kill -9`` and a restart, on both gallery backends.

* A retry after a kill answers the first answer and stores nothing more, for /tracklets,
  /tracklets/batch and /videos.
* The worst instant: the gallery stored the tracklets but the process died before recording the
  answer (simulated exactly by deleting the recorded answers while the service is down). The
  retry finds the tracklets by their derived ids.
* A client enrolling with retries while the server is killed mid-way ends with exactly one
  tracklet per enrolment.

The server has API keys on: keys are scoped by API key, and enrolling a video needs a write key.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fixtures import (
    ServiceProcess,
    b64,
    encoded_frames,
    multipart_files,
    requires_milvus,
)
from video_fixtures import VIDEO_ENV, post_video, small_scene, video_files, wait_job

from service.client import ReidClient

pytestmark = pytest.mark.slow  # kills and restarts servers: tens of seconds

WRITE, READ = "write-key-1", "read-key-1"


def _server(model: Path, root: Path, backend: str) -> ServiceProcess:
    env = {**VIDEO_ENV, "REID_API_KEYS_WRITE": WRITE, "REID_API_KEYS_READ": READ}
    if backend == "milvus":
        env |= {"REID_GALLERY_BACKEND": "milvus", "REID_MILVUS_URI": str(root / "milvus.db")}
    return ServiceProcess(model, root / "data", env)


@pytest.fixture(params=["faiss", pytest.param("milvus", marks=requires_milvus)])
def server(
    request: pytest.FixtureRequest, exported_model: Path, tmp_path: Path
) -> Iterator[ServiceProcess]:
    process = _server(exported_model, tmp_path, request.param)
    process.start()
    yield process
    process.stop()


def _kill_and_restart(server: ServiceProcess) -> None:
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(60)
    server.start()


def _count(client: httpx.Client) -> int:
    return int(client.get("/readyz").json()["gallery"]["count"])


def _requests(scene_files: list) -> list[tuple[str, dict]]:
    """(path, httpx arguments) of one enrolment of each kind."""
    return [
        (
            "/tracklets",
            {
                "data": {"identity": "solo"},
                "files": multipart_files(encoded_frames(700, 4)),
                "headers": {"Idempotency-Key": "k-tracklet"},
            },
        ),
        (
            "/tracklets/batch",
            {
                "json": {
                    "tracklets": [
                        {"identity": f"pair{i}", "frames": b64(encoded_frames(710 + i))}
                        for i in range(2)
                    ]
                },
                "headers": {"Idempotency-Key": "k-batch"},
            },
        ),
        (
            "/videos?mode=enroll",
            {
                "data": {"camera": "door"},
                "files": scene_files,
                "headers": {"Idempotency-Key": "k-video"},
            },
        ),
    ]


def _answer(client: httpx.Client, path: str, arguments: dict) -> dict:
    response = client.post(path, **arguments)
    assert response.status_code in (201, 202), response.text
    body = response.json()
    return wait_job(client, body) if path.startswith("/videos") else body


def test_retries_after_kill_9_answer_the_first_answer(server: ServiceProcess, tmp_path: Path):
    scene = small_scene(tmp_path / "door.avi", 1, [5, 6])
    requests = _requests(video_files(scene))
    with server.client(headers={"X-API-Key": WRITE}) as client:
        first = [_answer(client, path, arguments) for path, arguments in requests]
        assert first[2]["status"] == "succeeded", first[2]["error"]
        count = _count(client)
        assert count == 1 + 2 + 2

    _kill_and_restart(server)
    with server.client(headers={"X-API-Key": WRITE}) as client:
        replays = [_answer(client, path, arguments) for path, arguments in requests]
        assert replays == first and _count(client) == count

    # The worst instant: stored in the gallery, answer never recorded.
    server.stop()
    for name, table in (("idempotency.sqlite3", "answers"), ("video-jobs.sqlite3", "jobs")):
        with sqlite3.connect(server.data_dir / name) as db:
            assert db.execute(f"DELETE FROM {table}").rowcount >= 1
    server.start()
    with server.client(headers={"X-API-Key": WRITE}) as client:
        rebuilt = [_answer(client, path, arguments) for path, arguments in requests]
        assert rebuilt[0] == first[0] and rebuilt[1] == first[1]
        assert rebuilt[2]["status"] == "succeeded", rebuilt[2]["error"]
        assert [t["tracklet_id"] for t in rebuilt[2]["tracks"]] == [
            t["tracklet_id"] for t in first[2]["tracks"]
        ]
        assert _count(client) == count


def test_keys_are_scoped_by_api_key_and_videos_need_a_write_key(
    server: ServiceProcess, tmp_path: Path
):
    scene = small_scene(tmp_path / "gate.mp4", 1, [7])
    with server.client(headers={"X-API-Key": READ}) as reader:
        refused = post_video(reader, "enroll", video_files(scene), {"camera": "gate"})
        assert refused.status_code == 403
        mine = post_video(reader, "query", video_files(scene), {"camera": "gate"}, key="same")
        assert mine.status_code == 202, mine.text
        assert wait_job(reader, mine.json())["status"] == "succeeded"
    with server.client(headers={"X-API-Key": WRITE}) as writer:
        # The same Idempotency-Key and body under another API key is another client's request.
        theirs = post_video(writer, "query", video_files(scene), {"camera": "gate"}, key="same")
        assert theirs.status_code == 202 and "idempotent-replayed" not in theirs.headers
        assert theirs.json()["job_id"] != mine.json()["job_id"]
        enroll = post_video(writer, "enroll", video_files(scene), {"camera": "gate"})
        assert wait_job(writer, enroll.json())["status"] == "succeeded"


def test_a_client_retrying_through_a_kill_enrolls_each_tracklet_once(server: ServiceProcess):
    total = 24
    acknowledged: list[str] = []
    errors: list[BaseException] = []

    def enroll_all() -> None:
        try:
            with ReidClient(server.url, WRITE, retries=40, backoff_s=0.25) as client:
                for i in range(total):
                    answer = client.enroll(encoded_frames(600 + i, 3), identity=f"p{i:02d}")
                    acknowledged.append(answer.tracklet_id)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=enroll_all)
    worker.start()
    while len(acknowledged) < total // 3 and worker.is_alive():
        threading.Event().wait(0.05)
    _kill_and_restart(server)  # mid-way: some request is usually in flight
    worker.join(180)
    assert not worker.is_alive() and not errors, errors
    with ReidClient(server.url, WRITE) as client:
        identities = {item.identity: item.num_tracklets for item in client.iter_identities()}
    assert identities == {f"p{i:02d}": 1 for i in range(total)}
    assert len(set(acknowledged)) == total
