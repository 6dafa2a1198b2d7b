"""Video ingestion: frames per second from a camera video and its tracks to embeddings (decode +
crop + preprocess + embed), stage by stage and through ``POST /videos`` as served.

The video is a synthetic scene (``bench.video_scenes``): persons walking across a 1280 x 720 view,
written as MPEG-4 Part 2 (``mp4v``, the encoder OpenCV's bundled FFmpeg has; H.264 decodes at a
similar cost), with each person's ground-truth track as the tracker's MOT file.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2

from bench.common import Context
from bench.report import PartResult, Table
from bench.video_scenes import Scene, render_scene

DESCRIPTION = (
    "A {w} x {h} video of {tracks} persons walking through one camera view ({frames} frames, "
    "{boxes} boxes, `mp4v`), with their tracks as a MOT file. Stage rows run the service's own "
    "functions one after the other in one thread (`service.video.VideoFile`/`cut_tracklets`, "
    "`model.preprocessing.prepare_tracklet`, the service's `Encoder`); the last row is "
    "`POST /videos?mode=enroll` through the app (upload, checks, then the job, which overlaps "
    "decoding with preprocessing and embedding in the service's thread pools), timed until the "
    "job has enrolled every track. Video frames/s counts every decoded frame; crops/s the boxes "
    "cut, preprocessed and embedded."
)


def _scene(context: Context) -> Scene:
    quick = context.config.quick
    folder = Path(tempfile.mkdtemp(prefix="video-", dir=context.config.workdir))
    if quick:
        return render_scene(
            folder / "scene.mp4",
            camera=1,
            identities=[1, 2],
            size=(320, 180),
            track_frames=12,
            lanes=2,
            seed=context.config.seed,
        )
    return render_scene(
        folder / "scene.mp4",
        camera=1,
        identities=list(range(1, 11)),
        size=(1280, 720),
        track_frames=120,
        lanes=3,
        seed=context.config.seed + 1,
    )


def _stages(scene: Scene, model: Path) -> list[tuple[str, float]]:
    from model.preprocessing import prepare_tracklet
    from service.encoder import Encoder
    from service.frames import FrameLimits
    from service.settings import Settings
    from service.tracks import parse_mot, plan_tracks
    from service.video import VideoFile, cut_tracklets

    settings = Settings(model_path=model)
    limits = FrameLimits.from_settings(settings)
    mot = "\n".join(scene.mot_lines()).encode()
    tracks = parse_mot(mot, max_tracks=1000, max_frame=10**6)
    plans, _ = plan_tracks(tracks, min_frames=1, max_frames=512, max_crops=10**6)

    t0 = time.perf_counter()
    source = VideoFile(scene.path, limits)
    for _ in source.frames(scene.num_frames, set(range(1, scene.num_frames + 1))):
        pass
    source.close()
    t1 = time.perf_counter()
    source = VideoFile(scene.path, limits)
    cut = list(cut_tracklets(source, plans, "the video"))
    source.close()
    decoded = time.perf_counter()
    encoder = Encoder(model, max_embedded_frames=settings.max_embedded_frames)
    t2 = time.perf_counter()
    prepared = [prepare_tracklet(crops, encoder.spec) for _, crops in cut]
    t3 = time.perf_counter()
    encoder.embed(prepared[:1], "enroll")  # warm-up: ONNX Runtime's first call allocates
    t4 = time.perf_counter()
    for tracklet in prepared:
        encoder.embed([tracklet], "enroll")
    t5 = time.perf_counter()
    return [
        ("decode every frame", t1 - t0),
        ("decode + crop the boxes (`cut_tracklets`)", decoded - t1),
        ("preprocess (`prepare_tracklet`, flow included)", t3 - t2),
        ("embed (ONNX Runtime, one track per call)", t5 - t4),
        ("decode + crop + preprocess + embed, one thread", (decoded - t1) + (t3 - t2) + (t5 - t4)),
    ]


def _served(scene: Scene, model: Path, workdir: Path) -> float:
    """Seconds from POST /videos to the finished enrolment job, through the app."""
    from fastapi.testclient import TestClient

    from service.api import create_app
    from service.settings import Settings

    data_dir = Path(tempfile.mkdtemp(prefix="served-", dir=workdir))
    app = create_app(Settings(model_path=model, data_dir=data_dir))
    files = {
        "video": (scene.path.name, scene.path.read_bytes()),
        "tracks": ("tracks.txt", "\n".join(scene.mot_lines()).encode()),
    }
    with TestClient(app) as client:
        started = time.perf_counter()
        job = client.post("/videos?mode=enroll", data={"camera": "bench"}, files=files).json()
        while job["status"] in ("queued", "running"):
            time.sleep(0.02)
            job = client.get(f"/videos/{job['job_id']}").json()
        elapsed = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise RuntimeError(f"the video job failed: {job['error']}")
    return elapsed


def run(context: Context) -> PartResult:
    started = time.perf_counter()
    scene = _scene(context)
    model = context.served_model_path()
    boxes = sum(len(track.boxes) for track in scene.tracks)
    table = Table(
        f"Video ingestion, {scene.width} x {scene.height}, {len(scene.tracks)} tracks",
        ["stage", "seconds", "video frames/s", "crops/s"],
    )
    rows = [
        *_stages(scene, model),
        ("POST /videos, enroll (served)", _served(scene, model, context.config.workdir)),
    ]
    for name, seconds in rows:
        table.add(name, seconds, scene.num_frames / seconds, boxes / seconds)
    table.notes.append(
        f"{scene.num_frames} frames at {scene.fps:g} frames/s ({scene.num_frames / scene.fps:.0f} "
        f"s of video), {boxes} boxes; OpenCV threads: {cv2.getNumThreads()}; ONNX Runtime "
        "threads: its default. One run each (the stages are seconds long)."
    )
    description = DESCRIPTION.format(
        w=scene.width,
        h=scene.height,
        tracks=len(scene.tracks),
        frames=scene.num_frames,
        boxes=boxes,
    )
    part = PartResult(
        name="video",
        title="6. Video ingestion",
        description=description,
        tables=[table],
        raw={
            "rows": [{"stage": n, "seconds": s} for n, s in rows],
            "frames": scene.num_frames,
            "boxes": boxes,
            "size": [scene.width, scene.height],
        },
    )
    part.seconds = time.perf_counter() - started
    return part
