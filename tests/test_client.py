"""``ReidClient`` and ``reid-client`` against a real service process.

The retry test puts a proxy between client and server that forwards the first enrolment to the
server and then hangs up without passing the answer back: the server has stored the tracklet,
the client saw a connection error. Its retry must return the stored answer, not enroll again.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_fixtures import ROOT, ServiceProcess, encoded_frames, person_frames
from video_fixtures import VIDEO_ENV, small_scene

from bench.server import free_port
from service.client import ReidClient, ReidError


@pytest.fixture(scope="module")
def server(exported_model: Path, tmp_path_factory: pytest.TempPathFactory):
    process = ServiceProcess(exported_model, tmp_path_factory.mktemp("client") / "data", VIDEO_ENV)
    process.start()
    yield process
    process.stop()


class AnswerDroppingProxy:
    """TCP proxy to ``target`` that, for the first ``drops`` connections, relays the request,
    waits until the server starts answering, then closes both sides."""

    def __init__(self, target_port: int, drops: int) -> None:
        self.target_port = target_port
        self.drops = drops
        self.dropped = 0
        self.answered = 0  # dropped connections on which the server had answered
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        drop = self.dropped < self.drops
        self.dropped += drop

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for s in (source, sink):
                    s.close()

        threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
        if drop:
            # The server answers: it has done the work; nobody hears it. shutdown, not just
            # close, wakes the pump's recv; the pump may have closed a side already.
            with contextlib.suppress(OSError):
                self.answered += len(upstream.recv(1))
            for side in (client, upstream):
                with contextlib.suppress(OSError):
                    side.shutdown(socket.SHUT_RDWR)
                side.close()
            return
        pump(upstream, client)

    def close(self) -> None:
        self._listener.close()


def _gallery_count(server: ServiceProcess) -> int:
    with server.client() as http:
        return int(http.get("/readyz").json()["gallery"]["count"])


def test_a_retry_after_a_lost_answer_does_not_enroll_twice(server: ServiceProcess):
    before = _gallery_count(server)
    proxy = AnswerDroppingProxy(server.port, drops=1)
    try:
        with ReidClient(f"http://127.0.0.1:{proxy.port}", backoff_s=0.05) as client:
            answer = client.enroll(encoded_frames(500, 4), identity="lost-answer", camera="c1")
    finally:
        proxy.close()
    assert proxy.dropped == proxy.answered == 1  # the server did answer the lost attempt
    assert _gallery_count(server) == before + 1
    with ReidClient(server.url) as client:
        detail = client.identities(0, 1000)
        assert {i.identity: i.num_tracklets for i in detail.items}["lost-answer"] == 1
        assert client.delete("lost-answer").deleted_tracklets == 1
    assert answer.num_frames == 4


def test_an_unreachable_server_is_one_clear_error():
    client = ReidClient(f"http://127.0.0.1:{free_port()}", retries=1, backoff_s=0.01)
    with client, pytest.raises(ReidError) as error:
        client.identities()
    assert error.value.code == "unreachable"


def test_client_enrolls_queries_and_deletes_typed(server: ServiceProcess, tmp_path: Path):
    scene = small_scene(tmp_path / "cam.mp4", 1, [31, 32])
    progress = []
    with ReidClient(server.url, poll_s=0.05) as client:
        arrays = person_frames(510, 4)  # RGB arrays
        enrolled = client.enroll(arrays, identity="arrays", camera="desk")
        assert enrolled.identity == "arrays" and len(enrolled.attention) == 4
        found = client.query(arrays, top_k=1, cameras=["desk"])
        assert found.matches[0].tracklet_id == enrolled.tracklet_id
        job = client.enroll_video(
            scene.path,
            scene.path.with_suffix(".txt"),
            "hall",
            identities={t.track_id: f"walker{t.identity}" for t in scene.tracks},
            on_progress=progress.append,
        )
        assert job.status == "succeeded" and [t.identity for t in job.tracks] == [
            "walker31",
            "walker32",
        ]
        answer = client.query_video(
            scene.path, scene.path.with_suffix(".txt"), "hall2", top_k=2, cameras=["hall"]
        )
        assert [t.matches[0].identity for t in answer.tracks] == ["walker31", "walker32"]
        assert client.delete("walker31").deleted_tracklets == 1
        with pytest.raises(ReidError) as error:
            client.delete("walker31")
        assert error.value.status == 404 and error.value.code == "identity_not_found"
    assert progress and progress[-1].status == "succeeded"


def _write_folder(root: Path) -> None:
    """ROOT/<camera>/<identity>/<frames>, one identity with two tracklet sub-folders."""
    for camera, seeds in (("cam1", {"amy": [520], "bo": [521]}), ("cam2", {"amy": [522, 523]})):
        for identity, tracklets in seeds.items():
            for seed in tracklets:
                folder = root / camera / identity
                if len(tracklets) > 1:
                    folder = folder / f"t{seed}"
                folder.mkdir(parents=True, exist_ok=True)
                for i, frame in enumerate(person_frames(seed, 3)):
                    cv2.imwrite(str(folder / f"f_{i + 1:03d}.png"), frame[..., ::-1])


def _cli(server: ServiceProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.client_cli", "--url", server.url, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_enroll_folder_twice_enrolls_once(server: ServiceProcess, tmp_path: Path):
    _write_folder(tmp_path / "crops")
    before = _gallery_count(server)
    first = _cli(server, "enroll-folder", str(tmp_path / "crops"))
    assert first.returncode == 0, first.stderr
    assert "enrolled 4 tracklets of 2 identities from 2 cameras" in first.stdout
    assert "enrolling" in first.stderr  # the progress bar
    again = _cli(server, "enroll-folder", str(tmp_path / "crops"), "--no-progress")
    assert again.returncode == 0, again.stderr
    assert _gallery_count(server) == before + 4  # the rerun replayed every enrolment
    query = _cli(
        server,
        "query",
        *sorted(str(p) for p in (tmp_path / "crops/cam1/bo").iterdir()),
        "--top-k",
        "1",
    )
    assert query.returncode == 0, query.stderr
    assert query.stdout.startswith("1. bo score")


@pytest.mark.slow  # three CLI processes
def test_cli_video_enroll_then_query(server: ServiceProcess, tmp_path: Path):
    scene = small_scene(tmp_path / "cli.avi", 2, [41, 42], track_ids=[7, 9])
    tracks = str(scene.path.with_suffix(".txt"))
    enroll = _cli(
        server,
        "video",
        str(scene.path),
        "--tracks",
        tracks,
        "--camera",
        "cli-cam",
        "--enroll",
        "--start-time",
        "2026-01-01T10:00:00+00:00",
    )
    assert enroll.returncode == 0, enroll.stderr
    assert "track 7 (frames 1-24): enrolled as cli-cam:7" in enroll.stdout
    assert "uploading" in enroll.stderr and "decoding" in enroll.stderr
    query = _cli(
        server,
        "video",
        str(scene.path),
        "--tracks",
        tracks,
        "--camera",
        "cli-q",
        "--query",
        "--cameras",
        "cli-cam",
        "--top-k",
        "1",
        "--no-progress",
    )
    assert query.returncode == 0, query.stderr
    assert "track 9 (frames 1-24): cli-cam:9" in query.stdout
    bad = _cli(
        server,
        "video",
        str(scene.path),
        "--tracks",
        str(scene.path),
        "--camera",
        "x",
        "--query",
        "--no-progress",
    )
    assert bad.returncode == 1 and "(422 invalid_tracks)" in bad.stderr
    frames_dir = tmp_path / "img1"
    frames_dir.mkdir()
    capture = cv2.VideoCapture(str(scene.path))
    number = 0
    while (frame := capture.read())[0]:
        number += 1
        cv2.imwrite(str(frames_dir / f"{number:06d}.jpg"), frame[1])
    folder = _cli(
        server,
        "video",
        str(frames_dir),
        "--tracks",
        tracks,
        "--camera",
        "cli-f",
        "--query",
        "--cameras",
        "cli-cam",
        "--top-k",
        "1",
        "--json",
    )
    assert folder.returncode == 0, folder.stderr
    assert '"identity": "cli-cam:7"' in folder.stdout


def test_frames_as_arrays_paths_and_bytes_are_the_same_tracklet(tmp_path: Path):
    from service.client import _encode_frame

    frame = np.zeros((8, 4, 3), np.uint8)
    frame[..., 0] = 255  # red in RGB
    name, data = _encode_frame(frame, 3)
    assert name == "000003.png"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert (decoded[..., 2] == 255).all()  # stored as red (BGR on disk)
    path = tmp_path / "x.png"
    path.write_bytes(data)
    assert _encode_frame(path, 0) == ("x.png", data)
    assert _encode_frame(data, 1) == ("000001", data)
