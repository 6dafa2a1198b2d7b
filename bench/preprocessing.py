"""Preprocessing cost per frame: decoding, resizing, colour conversion and normalisation,
optical flow (ours against OpenCV's Farneback and DIS at the same 64 x 48 size), and the whole
``prepare_tracklet`` the service runs.

Frames are rendered by the synthetic pedestrian generator (a person walking through a scene,
128 x 64 as tracker crops are), so flow timings see real motion rather than noise. Only public
functions of ``model.preprocessing`` and ``service.frames`` are timed; the resize row times the
OpenCV call preprocessing makes (float32, INTER_AREA), and the colour row times
``preprocess_frames`` on one frame already at 64 x 48 (conversion to float, YUV and the
per-channel standardisation; a single frame has no flow).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import cv2
import numpy as np
from tqdm import tqdm

from bench.common import Context, ms, time_calls
from bench.report import PartResult, Table

DESCRIPTION = (
    "Per-frame cost of each preprocessing step, on frames of a synthetic pedestrian walking "
    "through a scene (128 x 64, as tracker crops are; real motion for the flow rows) and the "
    "same frames enlarged to 512 x 256 (a crop from a high-resolution camera). Only public "
    "functions of `model.preprocessing` and `service.frames` are timed; the resize row times "
    "the OpenCV call preprocessing makes, the colour row `preprocess_frames` of one frame "
    "already at 64 x 48."
)
LARGE_CROP = (512, 256)  # (H, W): a person crop from a high-resolution camera


def _encode(rgb: np.ndarray, fmt: str) -> bytes:
    ok, buffer = cv2.imencode(f".{fmt}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a {fmt} image")
    return buffer.tobytes()


def _frames(count: int, seed: int) -> list[np.ndarray]:
    from training.synthetic.tracklet import synthesize_tracklet

    return synthesize_tracklet(identity=seed % 1000, camera=1, num_frames=count, seed=seed)


def _luma64(rgb: np.ndarray) -> np.ndarray:
    """The image the flow runs on: BT.601 luma in [0, 1] at 64 x 48."""
    from model.preprocessing import FRAME_SIZE

    small = cv2.resize(
        rgb.astype(np.float32) / 255.0, FRAME_SIZE[::-1], interpolation=cv2.INTER_AREA
    )
    return np.ascontiguousarray(small @ np.float32([0.299, 0.587, 0.114]))


def run(context: Context) -> PartResult:
    from model.preprocessing import FRAME_SIZE, lucas_kanade_flow, prepare_tracklet
    from service.frames import EncodedFrame, FrameLimits, decode_frame, decode_frames

    config = context.config
    started = time.perf_counter()
    steps = 16
    frames = _frames(steps, config.seed)
    large = [cv2.resize(f, LARGE_CROP[::-1], interpolation=cv2.INTER_CUBIC) for f in frames]
    limits = FrameLimits(
        max_frames=10_000,
        max_pixels=1 << 30,
        max_side=1 << 15,
        max_total_pixels=1 << 40,
        allowed_formats=frozenset({"jpeg", "png"}),
        max_zip_entries=10_000,
        max_zip_uncompressed_bytes=1 << 40,
    )
    h, w = FRAME_SIZE
    lumas = [_luma64(f) for f in frames]
    luma8 = [np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8) for y in lumas]
    dis_fast = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    dis_medium = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    def cycle(items: list, fn: Callable) -> Callable[[], object]:
        """Go through the tracklet's frames (or pairs) so no single frame is favoured."""
        state = {"i": 0}

        def call() -> object:
            i = state["i"] = (state["i"] + 1) % len(items)
            return fn(items[i])

        return call

    rows: list[tuple[str, str, Callable[[], object], int]] = []
    for name, images in (("128 x 64", frames), (f"{LARGE_CROP[0]} x {LARGE_CROP[1]}", large)):
        for fmt in ("jpeg", "png"):
            encoded = [EncodedFrame(f"frame.{fmt}", _encode(img, fmt)) for img in images]
            rows.append(
                (
                    f"decode {fmt.upper()} {name}",
                    f"`service.frames.decode_frame` (header checks, cv2.imdecode, BGR->RGB); "
                    f"{np.mean([len(e.data) for e in encoded]) / 1024:.1f} KiB per frame",
                    cycle(encoded, lambda e: decode_frame(e, limits)),
                    1,
                )
            )
    for name, images in (("128 x 64", frames), (f"{LARGE_CROP[0]} x {LARGE_CROP[1]}", large)):
        floats = [img.astype(np.float32) / np.float32(255.0) for img in images]
        rows.append(
            (
                f"resize {name} -> 64 x 48",
                "cv2.resize of the float32 frame, INTER_AREA (as preprocessing)",
                cycle(floats, lambda f: cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA)),
                1,
            )
        )
    small = [cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    rows.append(
        (
            "to float + YUV + standardise (64 x 48)",
            "`preprocess_frames` of one 64 x 48 frame (one frame: no flow)",
            cycle(small, lambda f: prepare_one(f)),
            1,
        )
    )
    pairs = list(itertools.pairwise(lumas))
    pairs8 = list(itertools.pairwise(luma8))
    rows.extend(
        [
            (
                "optical flow: dense Lucas-Kanade (ours)",
                "`lucas_kanade_flow`, 3 levels, 2 iterations, float32 luma",
                cycle(pairs, lambda p: lucas_kanade_flow(p[0], p[1])),
                1,
            ),
            (
                "optical flow: OpenCV Farneback",
                "`calcOpticalFlowFarneback(0.5, 3 levels, win 9, 3 it, poly 5/1.1)`, uint8 luma",
                cycle(
                    pairs8,
                    lambda p: cv2.calcOpticalFlowFarneback(
                        p[0], p[1], None, 0.5, 3, 9, 3, 5, 1.1, 0
                    ),
                ),
                1,
            ),
            (
                "optical flow: OpenCV DIS (fast preset)",
                "`DISOpticalFlow` PRESET_FAST, uint8 luma",
                cycle(pairs8, lambda p: dis_fast.calc(p[0], p[1], None)),
                1,
            ),
            (
                "optical flow: OpenCV DIS (medium preset)",
                "`DISOpticalFlow` PRESET_MEDIUM, uint8 luma",
                cycle(pairs8, lambda p: dis_medium.calc(p[0], p[1], None)),
                1,
            ),
            (
                f"prepare_tracklet, {steps} frames 128 x 64",
                "`model.preprocessing.prepare_tracklet` (the service's preprocessing), per frame",
                lambda: prepare_tracklet(frames),
                steps,
            ),
        ]
    )
    jpegs = [EncodedFrame(f"{i}.jpg", _encode(f, "jpg")) for i, f in enumerate(frames)]
    rows.append(
        (
            f"decode + prepare_tracklet, {steps} JPEG 128 x 64",
            "`decode_frames` then `prepare_tracklet`: the service's per-request CPU work before "
            "the network, per frame",
            lambda: prepare_tracklet(decode_frames(jpegs, limits)),
            steps,
        )
    )

    table = Table(
        "Preprocessing per frame",
        ["step", "how", "ms / frame", "p95 ms / frame", "frames/s (one thread)"],
    )
    raw_rows = []
    for name, how, fn, per_call in tqdm(
        rows, desc="preprocessing", unit="step", disable=not config.progress
    ):
        timing = time_calls(
            fn,
            min_seconds=config.min_seconds / 2,
            min_runs=20 if not config.quick else 3,
            warmup=2,
        )
        per_frame = timing.median / per_call
        table.add(name, how, ms(per_frame), ms(timing.percentile(95) / per_call), 1 / per_frame)
        raw_rows.append({"step": name, "frames_per_call": per_call, **timing.as_dict()})
    table.notes.append(
        f"One thread calling; OpenCV's own thread pool: {cv2.getNumThreads()} threads "
        "(the service does not change it). Flow rows: one pair of consecutive frames at "
        "64 x 48; Farneback and DIS get 8-bit luma because they need it (the conversion is "
        "not timed). Median and 95th percentile over repeated calls."
    )
    part = PartResult(
        name="preprocessing",
        title="2. Preprocessing",
        description=DESCRIPTION,
        tables=[table],
        raw={"rows": raw_rows, "opencv_threads": cv2.getNumThreads()},
    )
    part.seconds = time.perf_counter() - started
    return part


def prepare_one(frame: np.ndarray) -> np.ndarray:
    """Colour conversion and standardisation of one frame through the public pipeline."""
    from model.preprocessing import preprocess_frames

    return preprocess_frames([frame])
