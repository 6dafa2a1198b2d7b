"""Tracks files, crop geometry and the streamed cut of real video files, without a server.

The scene videos (``bench.video_scenes``) paste each synthetic person's rendered crop where the
ground-truth box says; cutting the ground truth must give those crops back (up to the codec).
That checks the whole cut (decoding, frame numbering, box geometry, clipping and padding at the
frame edge) independently of any model.
"""

from __future__ import annotations

import asyncio
import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.video_scenes import Scene, render_scene
from service.frames import FrameLimits
from service.schemas import ApiError
from service.tracks import (
    Box,
    check_boxes_inside,
    parse_mot,
    plan_tracks,
    resolve_identities,
)
from service.uploads import receive_multipart
from service.video import (
    CROP_SHAPE,
    VideoFile,
    crop_window,
    cut_crop,
    cut_tracklets,
    folder_from_zip,
    sniff_container,
)

LIMITS = FrameLimits(
    max_frames=512,
    max_pixels=1 << 22,
    max_side=8192,
    max_total_pixels=1 << 30,
    allowed_formats=frozenset({"jpeg", "png"}),
    max_zip_entries=1024,
    max_zip_uncompressed_bytes=1 << 26,
)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Scene]:
    folder = tmp_path_factory.mktemp("scenes")
    return {
        suffix: render_scene(folder / f"cam1{suffix}", camera=1, identities=[1, 2, 3, 4], seed=1)
        for suffix in (".mp4", ".avi")
    }


def _mot(text: str, **limits: int):
    return parse_mot(text.encode(), max_tracks=limits.get("tracks", 100), max_frame=10_000)


# ------------------------------------------------------------------------------ tracks files


def test_mot_results_and_ground_truth_lines_parse():
    tracks = _mot(
        "1,3,10.5,20,30,60,0.9,-1,-1,-1\n"
        "2 3 12 21 30 60 1 1 0.8\n"  # whitespace-separated ground truth
        "\n"
        "1,7,100,20,30,60,1\n"
    )
    assert [t.track_id for t in tracks] == [3, 7]
    assert [b.frame for b in tracks[0].boxes] == [1, 2]
    assert tracks[0].boxes[0] == Box(frame=1, x=10.5, y=20, w=30, h=60, line=1)


@pytest.mark.parametrize(
    ("text", "quoted", "why"),
    [
        ("1,1,10,10,30,60\n2,1,abc,10,30,60\n", "'2,1,abc,10,30,60'", "bb_left 'abc'"),
        ("1,1,10,10\n", "'1,1,10,10'", "at least 6"),
        ("0,1,10,10,30,60\n", "'0,1,10,10,30,60'", "whole number from 1"),
        ("1,-1,10,10,30,60\n", "'1,-1,10,10,30,60'", "untracked detection"),
        ("1,1,10,10,0,60\n", "'1,1,10,10,0,60'", "must be positive"),
        ("1,1,10,10,30,nan\n", "'1,1,10,10,30,nan'", "bb_height is nan"),
        ("1,1,10,10,30,60\n1,1,11,10,30,60\n", "'1,1,11,10,30,60'", "already has a box"),
    ],
)
def test_bad_tracks_lines_are_quoted(text: str, quoted: str, why: str):
    with pytest.raises(ApiError) as error:
        _mot(text)
    assert error.value.status == 422 and error.value.code == "invalid_tracks"
    assert quoted in error.value.message and why in error.value.message


def test_tracks_file_limits_and_encoding():
    with pytest.raises(ApiError) as error:
        _mot("".join(f"1,{i},0,0,10,20\n" for i in range(5)), tracks=4)
    assert error.value.status == 413 and error.value.code == "too_many_tracks"
    with pytest.raises(ApiError) as error:
        parse_mot(b"1,1,0,0,10,20\n20000,1,0,0,10,20\n", max_tracks=10, max_frame=10_000)
    assert error.value.code == "video_too_long" and "line 2" in error.value.message
    with pytest.raises(ApiError) as error:
        parse_mot(b"\xff\xfe1,1", max_tracks=10, max_frame=10)
    assert "not UTF-8" in error.value.message
    with pytest.raises(ApiError, match="no boxes"):
        _mot("\n\n")


def test_plans_drop_short_tracks_and_subsample_long_ones_evenly():
    text = "".join(f"{f},1,0,0,10,20\n" for f in range(1, 101))
    text += "".join(f"{f},2,0,0,10,20\n" for f in range(1, 4))
    kept, dropped = plan_tracks(_mot(text), min_frames=5, max_frames=10, max_crops=100)
    assert [p.track.track_id for p in kept] == [1] and dropped[0].track.track_id == 2
    frames = [b.frame for b in kept[0].boxes]
    assert len(frames) == 10 and frames[0] == 1 and frames[-1] == 100
    assert np.ptp(np.diff(frames)) <= 1  # evenly spaced
    with pytest.raises(ApiError) as error:
        plan_tracks(_mot(text), min_frames=1, max_frames=10, max_crops=12)
    assert error.value.code == "too_many_crops"


def test_identities_map_every_kept_track():
    kept, _ = plan_tracks(
        _mot("1,4,0,0,10,20\n1,9,0,0,10,20\n"), min_frames=1, max_frames=5, max_crops=10
    )
    assert resolve_identities(kept, None, "gate") == {4: "gate:4", 9: "gate:9"}
    assert resolve_identities(kept, {"4": "ann", "9": "bob"}, "gate") == {4: "ann", 9: "bob"}
    with pytest.raises(ApiError) as error:
        resolve_identities(kept, {"4": "ann"}, "gate")
    assert error.value.code == "unmapped_track" and "track 9" in error.value.message


def test_a_box_entirely_outside_the_frame_is_refused_with_its_line():
    tracks = _mot("1,1,-30,10,40,80\n2,1,700,10,40,80\n")  # first partly in view, then out
    with pytest.raises(ApiError) as error:
        check_boxes_inside(tracks, 640, 480)
    assert error.value.code == "box_outside_frame" and "line 2" in error.value.message


# ---------------------------------------------------------------------------- crop geometry


def test_crop_window_has_the_training_aspect_and_margin():
    left, _, width, height = crop_window(Box(1, 100, 50, 40, 162, 1))
    assert width / height == pytest.approx(CROP_SHAPE[1] / CROP_SHAPE[0])
    assert height == pytest.approx(200.0) and left + width / 2 == pytest.approx(120.0)
    _, _, width, height = crop_window(Box(1, 0, 0, 300, 100, 1))  # wider than tall
    assert width == pytest.approx(300.0) and height == pytest.approx(600.0)


def test_cut_pads_outside_the_frame_with_the_border_and_bounds_memory():
    frame = np.zeros((100, 100, 3), np.uint8)
    frame[:, :50] = (200, 0, 0)
    frame[:, 50:] = (0, 0, 200)
    crop = cut_crop(frame, Box(1, -40, 10, 32, 81, 1))  # left part outside the frame
    assert crop.shape == (*CROP_SHAPE, 3)
    assert (crop[:, 0] == (200, 0, 0)).all()  # replicated border, not black
    huge = cut_crop(frame, Box(1, -1e7, -1e7, 2e7, 2e7, 1))  # no 1e7-pixel buffer on the way
    assert huge.shape == (*CROP_SHAPE, 3)


def test_containers_are_recognised_by_their_first_bytes(scenes: dict[str, Scene]):
    assert sniff_container(scenes[".mp4"].path.read_bytes()[:512]) == "MP4/MOV/3GP"
    assert sniff_container(scenes[".avi"].path.read_bytes()[:512]) == "AVI"
    assert sniff_container(b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n") is None
    assert sniff_container(b"ffconcat version 1.0\nfile '/etc/passwd'\n") is None


# ----------------------------------------------------------------------- cutting real videos


def _cut(scene: Scene, source=None) -> dict[int, np.ndarray]:
    mot = "\n".join(scene.mot_lines()).encode()
    plans, _ = plan_tracks(
        parse_mot(mot, max_tracks=10, max_frame=1000), min_frames=1, max_frames=512, max_crops=1e6
    )
    source = source or VideoFile(scene.path, LIMITS)
    try:
        return {
            plan.track.track_id: np.stack(crops)
            for plan, crops in cut_tracklets(source, plans, "the video")
        }
    finally:
        source.close()


@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_cut_gives_back_the_pasted_crops(scenes: dict[str, Scene], suffix: str):
    scene = scenes[suffix]
    source = VideoFile(scene.path, LIMITS)
    assert (source.geometry.width, source.geometry.height) == (scene.width, scene.height)
    assert source.geometry.frame_count == scene.num_frames and source.geometry.fps == 25.0
    cut = _cut(scene, source)
    assert sorted(cut) == [t.track_id for t in scene.tracks]
    for track in scene.tracks:
        crops = cut[track.track_id].astype(np.float32)
        truth = np.stack(track.crops).astype(np.float32)
        assert crops.shape == truth.shape == (len(track.boxes), *CROP_SHAPE, 3)
        # The codec and the resampling leave a few grey levels; another person's crop (or the
        # wrong frame of this one) is far more different, so the cut is aligned and in order.
        error = np.abs(crops - truth).mean(axis=(1, 2, 3))
        assert error.mean() < 8.0, error
        pairwise = np.abs(crops[:, None] - truth[None]).mean(axis=(2, 3, 4))
        assert (pairwise.argmin(axis=1) == np.arange(len(crops))).mean() >= 0.9


def test_a_video_shorter_than_its_tracks_fails_at_the_missing_frame(scenes, tmp_path):
    scene = scenes[".avi"]
    mot = "\n".join(scene.mot_lines()) + f"\n{scene.num_frames + 5},1,10,10,30,60\n"
    plans, _ = plan_tracks(
        parse_mot(mot.encode(), max_tracks=10, max_frame=1000),
        min_frames=1,
        max_frames=512,
        max_crops=1e6,
    )
    with pytest.raises(ApiError) as error:
        list(cut_tracklets(VideoFile(scene.path, LIMITS), plans, "the video"))
    assert error.value.code == "frame_past_end"
    assert f"video has {scene.num_frames} frames" in error.value.message


def _img1_zip(scene: Scene, seqinfo: bool) -> bytes:
    capture = cv2.VideoCapture(str(scene.path))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        number = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            number += 1
            archive.writestr(f"SEQ-01/img1/{number:06d}.jpg", cv2.imencode(".jpg", bgr)[1])
        if seqinfo:
            archive.writestr("SEQ-01/seqinfo.ini", "[Sequence]\nname=SEQ-01\nframeRate=12.5\n")
        archive.writestr("SEQ-01/gt/gt.txt", "not frames")
    return buffer.getvalue()


def test_an_img1_zip_cuts_like_the_video(scenes: dict[str, Scene], tmp_path: Path):
    scene = scenes[".avi"]
    path = tmp_path / "seq.zip"
    path.write_bytes(_img1_zip(scene, seqinfo=True))
    folder = folder_from_zip(path, None, LIMITS)
    assert folder.geometry.fps == 12.5 and folder.geometry.frame_count == scene.num_frames
    from_frames, from_video = _cut(scene, folder), _cut(scene)
    for track_id, crops in from_video.items():
        # JPEG re-encoding of the frames is the only difference.
        difference = np.abs(from_frames[track_id].astype(float) - crops).mean()
        assert difference < 4.0


def test_the_upload_fingerprint_ignores_the_multipart_boundary(tmp_path: Path):
    import httpx

    fingerprints = []
    for _ in range(2):
        request = httpx.Request(
            "POST",
            "http://x/videos",
            data={"camera": "c"},
            files=[("video", ("v.mp4", b"\x00" * 70_000)), ("tracks", ("t.txt", b"1,1,0,0,1,1"))],
        )
        body = request.read()

        async def stream(body: bytes = body):
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        upload = asyncio.run(
            receive_multipart(request.headers["content-type"], stream(), tmp_path, max_files=3)
        )
        assert upload.fields == {"camera": "c"}
        assert [(f.field, f.size) for f in upload.files] == [("video", 70_000), ("tracks", 11)]
        fingerprints.append(upload.fingerprint())
        upload.cleanup()
    assert fingerprints[0] == fingerprints[1]
    assert list(tmp_path.iterdir()) == []


def test_crop_shape_is_the_training_crop_shape():
    from training.synthetic import FRAME_SHAPE

    assert CROP_SHAPE == FRAME_SHAPE


def test_a_full_job_line_answers_503_with_retry_after(tmp_path: Path):
    import threading
    from datetime import UTC, datetime

    from service.jobs import JobHandle, JobRegistry, JobStore
    from service.video_schemas import VideoJob, VideoProgress

    def handle(job_id: str) -> JobHandle:
        return JobHandle(
            VideoJob(
                job_id=job_id,
                status="queued",
                mode="query",
                camera="c",
                source="v",
                width=1,
                height=1,
                fps=None,
                progress=VideoProgress(),
                created_at=datetime.now(UTC),
            )
        )

    release = threading.Event()
    registry = JobRegistry(JobStore(tmp_path / "jobs.sqlite3", 60), workers=1, max_jobs=1)
    first = handle("a")
    registry.submit(first, lambda h: release.wait(10))
    with pytest.raises(ApiError) as error:
        registry.submit(handle("b"), lambda h: None)
    assert error.value.status == 503 and error.value.headers == {"Retry-After": "30"}
    release.set()
    assert first.finished.wait(10)
    assert registry.get("a").status == "succeeded"  # now read from the store
    registry.submit(handle("b"), lambda h: None)  # the line has room again
    registry.close()
    assert JobStore(tmp_path / "jobs.sqlite3", 60).get("a").status == "succeeded"
