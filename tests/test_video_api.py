"""POST /videos and its job through a real service process (a randomly initialised model: the
tests rely only on an identical tracklet being nearer than other persons).

Enrolment and query from .mp4 and .avi files, from an img1/ zip and from frame files; the time
of each tracklet from the frame rate; dropped and subsampled tracks; every bad input as a 4xx
with nothing enrolled; a job that fails half-way enrolls nothing; idempotent retries.
"""

from __future__ import annotations

import io
import json
import sqlite3
import zipfile
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import cv2
import httpx
import pytest
from service_fixtures import ServiceProcess, encoded_frames, gallery_count, multipart_files
from video_fixtures import VIDEO_ENV, post_video, run_video, small_scene, video_files, wait_job

from bench.video_scenes import Scene

START = "2026-03-01T08:00:00Z"
PERSONS = [1, 2, 3, 4]


@pytest.fixture(scope="module")
def video_service(
    exported_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    server = ServiceProcess(exported_model, tmp_path_factory.mktemp("video") / "data", VIDEO_ENV)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scene]:
    folder = tmp_path_factory.mktemp("scenes")
    return {
        "cam1": small_scene(folder / "cam1.mp4", 1, PERSONS, track_ids=[3, 5, 8, 13]),
        "cam2": small_scene(folder / "cam2.avi", 2, PERSONS, track_ids=[21, 22, 23, 24]),
    }


@pytest.fixture
def client(video_service: ServiceProcess) -> Iterator[httpx.Client]:
    with video_service.client() as http:
        yield http


def _with_short_track(scene: Scene) -> bytes:
    mot = scene.path.with_suffix(".txt").read_text()
    return (mot + "".join(f"{f},99,40,40,20,50,1,-1,-1,-1\n" for f in (2, 3, 4))).encode()


def test_enroll_a_video_then_query_with_it(client: httpx.Client, scenes: dict[str, Scene]):
    scene = scenes["cam1"]
    before = gallery_count(client)
    names = {"3": "ann", "5": "ben", "8": "cat", "13": "dan"}
    job = run_video(
        client,
        "enroll",
        video_files(scene, _with_short_track(scene)),
        {
            "camera": "lobby",
            "start_time": START,
            "identities": json.dumps(names),
            "metadata": '{"site": "north"}',
        },
    )
    assert job["status"] == "succeeded", job["error"]
    assert (job["width"], job["height"], job["fps"]) == (320, 240, 25.0)
    assert job["progress"]["frames_decoded"] == job["progress"]["frames_total"] == 36
    assert [t["track_id"] for t in job["tracks"]] == [3, 5, 8, 13]
    assert [d["track_id"] for d in job["dropped_tracks"]] == [99]
    assert "3 boxes, fewer than the minimum of 6" in job["dropped_tracks"][0]["reason"]
    assert gallery_count(client) == before + 4
    for track, truth in zip(job["tracks"], scene.tracks, strict=True):
        assert track["identity"] == names[str(truth.track_id)]
        assert (track["first_frame"], track["last_frame"]) == (truth.first_frame, truth.last_frame)
        assert track["num_boxes"] == 24 and track["num_frames"] == 16  # REID_MAX_FRAMES_PER_...
        start = datetime.fromisoformat(START) + timedelta(seconds=(truth.first_frame - 1) / 25)
        assert datetime.fromisoformat(track["start_time"]) == start
        stored = client.get(f"/tracklets/{track['tracklet_id']}").json()
        assert stored["camera"] == "lobby" and stored["num_frames"] == 16
        assert stored["metadata"]["site"] == "north"
        assert stored["metadata"]["track"]["id"] == truth.track_id
        assert stored["metadata"]["track"]["source"] == "cam1.mp4"
        # Thumbnails of the track's crops, as an uploaded tracklet keeps them.
        assert len(stored["thumbnails"]) == 3
        picture = client.get(stored["thumbnails"][0]["url"])
        assert picture.status_code == 200 and picture.content.startswith(b"\xff\xd8")

    answer = run_video(
        client, "query", video_files(scene), {"camera": "lobby2", "top_k": "3", "cameras": "lobby"}
    )
    assert answer["status"] == "succeeded", answer["error"]
    for track in answer["tracks"]:
        assert track["tracklet_id"] is None and len(track["matches"]) == 3
        assert track["matches"][0]["identity"] == names[str(track["track_id"])]
        assert {m["camera"] for m in track["matches"]} == {"lobby"}
    assert gallery_count(client) == before + 4  # a query enrolls nothing


def _img1_zip(scene: Scene, seqinfo: bool = True) -> bytes:
    capture = cv2.VideoCapture(str(scene.path))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        number = 0
        while (frame := capture.read())[0]:
            number += 1
            archive.writestr(f"seq/img1/{number:06d}.jpg", cv2.imencode(".jpg", frame[1])[1])
        if seqinfo:
            archive.writestr("seq/seqinfo.ini", "[Sequence]\nframeRate=12.5\n")
    return buffer.getvalue()


def test_img1_frames_as_zip_or_files_give_the_video_s_tracks(
    client: httpx.Client, scenes: dict[str, Scene]
):
    scene = scenes["cam2"]
    mot = ("tracks", ("gt.txt", scene.path.with_suffix(".txt").read_bytes(), "text/plain"))
    data = {"camera": "platform", "top_k": "2", "start_time": START}
    by_zip = run_video(client, "query", [("archive", ("seq.zip", _img1_zip(scene))), mot], data)
    assert by_zip["status"] == "succeeded", by_zip["error"]
    assert by_zip["fps"] == 12.5 and by_zip["source"] == "seq.zip"
    frames = []
    with zipfile.ZipFile(io.BytesIO(_img1_zip(scene))) as archive:
        for name in archive.namelist():
            if name.endswith(".jpg"):
                frames.append(("frames", (Path(name).name, archive.read(name), "image/jpeg")))
    by_files = run_video(client, "query", [*frames, mot], {**data, "fps": "12.5"})
    assert by_files["status"] == "succeeded", by_files["error"]
    for one, other, truth in zip(by_zip["tracks"], by_files["tracks"], scene.tracks, strict=True):
        assert one["track_id"] == other["track_id"] == truth.track_id
        start = datetime.fromisoformat(START) + timedelta(seconds=(truth.first_frame - 1) / 12.5)
        assert datetime.fromisoformat(one["start_time"]) == start
        assert [m["tracklet_id"] for m in one["matches"]] == [
            m["tracklet_id"] for m in other["matches"]
        ]


def _zip_without_fps(scene: Scene) -> list[tuple[str, tuple]]:
    return [("archive", ("seq.zip", _img1_zip(scene, seqinfo=False))), video_files(scene)[1]]


def _bad_requests(scene: Scene) -> list[tuple[str, dict, list, str | None, int, str, str]]:
    """(mode, fields, files, idempotency key, status, code, a fragment of the message)."""
    good = video_files(scene)
    mot = scene.path.with_suffix(".txt").read_text()
    tracks = lambda text: [good[0], ("tracks", ("t.txt", text.encode(), "text/plain"))]  # noqa: E731
    video = lambda data: [("video", ("v.mp4", data, "video/mp4")), good[1]]  # noqa: E731
    fake_mp4 = b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 20
    first = mot.splitlines()[0]
    c = {"camera": "x"}
    return [
        ("query", c, tracks(mot + "7,3,abc,1,2,3\n"), None, 422, "invalid_tracks", "'7,3,abc"),
        ("query", c, video(b"\x00garbage" * 100), None, 415, "unsupported_video", "container"),
        ("query", c, video(b"#EXTM3U\nhttp://x/y.ts\n"), None, 415, "unsupported_video", "MP4"),
        ("query", c, video(fake_mp4), None, 422, "unreadable_video", "cannot be opened"),
        (
            "query",
            c,
            tracks(mot + "9,40,400,10,20,40\n"),
            None,
            422,
            "box_outside_frame",
            "320x240",
        ),
        (
            "query",
            c,
            tracks(mot + "99,3,10,10,20,40\n"),
            None,
            422,
            "frame_past_end",
            "has 36 frames",
        ),
        ("enroll", {**c, "identities": '{"3": "a"}'}, good, None, 422, "unmapped_track", "track 5"),
        (
            "enroll",
            {**c, "identities": '{"3": "a", "77": "b"}'},
            good,
            None,
            422,
            "unknown_track",
            "track 77",
        ),
        ("enroll", {**c, "top_k": "3"}, good, None, 422, "invalid_request", "top_k"),
        ("query", {**c, "mode": "query"}, good, None, 400, "bad_request", "query string"),
        ("query", {}, good, None, 422, "invalid_request", "camera"),
        ("query", c, good[:1], None, 400, "no_tracks", "'tracks'"),
        ("query", c, good[1:], None, 400, "bad_request", "exactly one"),
        (
            "query",
            {**c, "start_time": START},
            _zip_without_fps(scene),
            None,
            422,
            "no_frame_rate",
            "fps",
        ),
        (
            "query",
            c,
            tracks("".join(f"1,{i},0,0,9,9\n" for i in range(13))),
            None,
            413,
            "too_many_tracks",
            "REID_MAX_VIDEO_TRACKS",
        ),
        (
            "query",
            {**c, "min_track_frames": "50"},
            good,
            None,
            422,
            "no_tracks_kept",
            "min_track_frames",
        ),
        (
            "query",
            c,
            video(b"\x00" * (3 * 1024 * 1024 + 1)),
            None,
            413,
            "request_too_large",
            "REID_MAX_VIDEO_BYTES",
        ),
        ("enroll", c, good, "bad key with spaces", 400, "invalid_idempotency_key", "ASCII"),
        (
            "query",
            c,
            tracks(first + "\n" + first + "\n"),
            None,
            422,
            "invalid_tracks",
            "already has a box",
        ),
    ]


def test_bad_input_gets_a_clear_4xx_and_enrolls_nothing(
    client: httpx.Client, video_service: ServiceProcess, scenes: dict[str, Scene]
):
    before = gallery_count(client)
    for mode, fields, files, key, status, code, fragment in _bad_requests(scenes["cam1"]):
        response = post_video(client, mode, files, fields, key)
        assert response.status_code == status, (code, response.text)
        error = response.json()["error"]
        assert error["code"] == code and fragment in error["message"], error
    assert client.post("/videos?mode=watch", files=video_files(scenes["cam1"])).status_code == 422
    missing = client.get("/videos/no-such-job")
    assert missing.status_code == 404 and "Idempotency-Key" in missing.json()["error"]["message"]
    assert gallery_count(client) == before
    assert not list((video_service.data_dir / "uploads").glob("upload-*"))  # no files left


def test_a_job_failing_half_way_enrolls_nothing(
    client: httpx.Client, video_service: ServiceProcess, scenes: dict[str, Scene]
):
    # An AVI cut short: its header still says 36 frames, so the request is accepted, and the
    # frames run out while the last tracks are decoded, after the first ones were embedded.
    scene = scenes["cam2"]
    data = scene.path.read_bytes()
    cut = data[: int(len(data) * 0.8)]
    before = gallery_count(client)
    files = [("video", ("cut.avi", cut, "video/x-msvideo")), video_files(scene)[1]]
    job = run_video(client, "enroll", files, {"camera": "cut"})
    assert job["status"] == "failed"
    assert job["error"]["status"] == 422 and job["error"]["code"] == "frame_past_end"
    # Half-way: the first tracks (frames 1-24) had been cut and sent to the network.
    assert 24 <= job["progress"]["frames_decoded"] < 36
    assert job["tracks"] == [] and gallery_count(client) == before
    assert not list((video_service.data_dir / "uploads").glob("upload-*"))


# -------------------------------------------------------------------------------- idempotency


def test_a_retried_enrolment_returns_the_first_answer(client: httpx.Client):
    before = gallery_count(client)
    files = multipart_files(encoded_frames(900, 4))
    headers = {"Idempotency-Key": "retry-enroll-1"}
    first = client.post("/tracklets", data={"identity": "once"}, files=files, headers=headers)
    again = client.post("/tracklets", data={"identity": "once"}, files=files, headers=headers)
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert gallery_count(client) == before + 1
    other = client.post("/tracklets", data={"identity": "twice"}, files=files, headers=headers)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    plain = client.post("/tracklets", data={"identity": "once"}, files=files)
    assert plain.json()["tracklet_id"] != first.json()["tracklet_id"]  # no key: a new tracklet


def test_a_retry_after_a_crash_between_storing_and_answering_enrolls_nothing(
    client: httpx.Client, video_service: ServiceProcess
):
    """The first attempt stored the tracklets but its answer was never recorded (the process
    died in between): the retry must find them by their derived ids."""
    body = {"tracklets": [{"identity": f"b{i}", "frames": _b64(910 + i)} for i in range(3)]}
    headers = {"Idempotency-Key": "batch-crash-1"}
    first = client.post("/tracklets/batch", json=body, headers=headers)
    assert first.status_code == 201, first.text
    count = gallery_count(client)
    with sqlite3.connect(video_service.data_dir / "idempotency.sqlite3") as db:
        assert db.execute("DELETE FROM answers WHERE key = 'batch-crash-1'").rowcount == 1
    again = client.post("/tracklets/batch", json=body, headers=headers)
    assert again.status_code == 201, again.text
    assert "idempotent-replayed" not in again.headers  # rebuilt from the gallery, not replayed
    assert again.json() == first.json()
    assert gallery_count(client) == count


def _b64(seed: int) -> list[str]:
    from service_fixtures import b64

    return b64(encoded_frames(seed, 4))


def test_a_retried_video_enrolment_answers_the_same_job(
    client: httpx.Client, scenes: dict[str, Scene]
):
    scene = scenes["cam2"]
    before = gallery_count(client)
    data = {"camera": "retried"}
    first = run_video(client, "enroll", video_files(scene), data, key="video-key-1")
    assert first["status"] == "succeeded", first["error"]
    again = post_video(client, "enroll", video_files(scene), data, key="video-key-1")
    assert again.status_code == 202 and again.headers["idempotent-replayed"] == "true"
    assert wait_job(client, again.json()) == first
    assert gallery_count(client) == before + 4
    other = post_video(client, "enroll", video_files(scene), {"camera": "else"}, "video-key-1")
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
