"""Write a synthetic dataset in the i-LIDS-VID layout, and the `synth` CLI command.

Layout (identical to the public i-LIDS-VID release, so the same loader reads both)::

    OUT/i-LIDS-VID/sequences/cam1/person001/cam1_person001_00042.png ...
    OUT/train-test people splits/train_test_splits_ilidsvid.mat      (ls_set, 10 x N, 1-based)
    OUT/synthetic.json                                               (seed, version, attributes)

Output depends only on the arguments (never on `workers`): every tracklet is rendered from its
own seed-derived generator and written by whichever worker renders it.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from training.synthetic.tracklet import (
    FRAME_SHAPE,
    camera_site,
    derive_rng,
    person_appearance,
    split_rng,
    synthesize_tracklet,
    tracklet_info,
    tracklet_length,
)

GENERATOR_VERSION = "1.1"
DATASET_DIR = "i-LIDS-VID"
SPLITS_DIR = "train-test people splits"
SPLITS_FILE = "train_test_splits_ilidsvid.mat"
CAMERAS = (1, 2)
_KEY_FIRST_FRAME = 9
_MAT_HEADER_TEXT = 116
_MAT_HEADER = b"MATLAB 5.0 MAT-file, Platform: posix, Created by: astpn-reid synthetic generator"


def person_name(identity: int) -> str:
    return f"person{identity:03d}"


def frame_name(camera: int, identity: int, frame_number: int) -> str:
    return f"cam{camera}_{person_name(identity)}_{frame_number:05d}.png"


def _first_frame_number(identity: int, camera: int, seed: int) -> int:
    """Real i-LIDS-VID sequences start at arbitrary frame numbers; so do ours."""
    return int(derive_rng(seed, _KEY_FIRST_FRAME, identity, camera).integers(0, 1500))


def _write_identity(job: tuple[Path, int, int, int, int, int]) -> dict:
    """Render and write both cameras of one identity; returns its record for synthetic.json."""
    root, identity, seed, min_frames, max_frames, sites = job
    record: dict = {
        "identity": identity,
        "name": person_name(identity),
        "attributes": person_appearance(identity, seed).summary(),
        "tracklets": {},
    }
    for camera in CAMERAS:
        n = tracklet_length(identity, camera, seed, min_frames, max_frames)
        frames = synthesize_tracklet(identity, camera, n, seed, sites)
        folder = root / DATASET_DIR / "sequences" / f"cam{camera}" / person_name(identity)
        folder.mkdir(parents=True, exist_ok=True)
        first = _first_frame_number(identity, camera, seed)
        for i, frame in enumerate(frames):
            path = folder / frame_name(camera, identity, first + i)
            if not cv2.imwrite(str(path), np.ascontiguousarray(frame[..., ::-1])):
                raise OSError(f"could not write {path}")
        info = tracklet_info(identity, camera, n, seed, sites)
        record["tracklets"][f"cam{camera}"] = {"frames": n, "first_frame": first, **info}
    return record


def _worker_init() -> None:
    cv2.setNumThreads(1)  # the pool is the parallelism; OpenCV threads would oversubscribe


def make_splits(num_identities: int, num_splits: int, seed: int) -> np.ndarray:
    """i-LIDS-VID `ls_set`: each row a random permutation of 1..N; first half test."""
    rng = split_rng(seed)
    return np.stack([rng.permutation(num_identities) + 1 for _ in range(num_splits)]).astype(
        np.float64
    )


def generate_dataset(
    out_dir: str | Path,
    num_identities: int = 300,
    seed: int = 0,
    min_frames: int = 20,
    max_frames: int = 150,
    workers: int = 2,
    num_splits: int = 10,
    overwrite: bool = False,
    progress: bool = True,
    sites_per_camera: int = 8,
) -> Path:
    """Render the dataset into `out_dir` and return `out_dir` (the folder holding i-LIDS-VID).

    Refuses to write into an existing `i-LIDS-VID` folder unless `overwrite`, which deletes the
    previous sequences first so stale persons from a bigger earlier run cannot linger.
    """
    from scipy.io import savemat  # training-only dependency

    if num_identities < 2:
        raise ValueError("need at least 2 identities (a train and a test half)")
    if not 1 <= min_frames <= max_frames:
        raise ValueError("need 1 <= min_frames <= max_frames")
    if num_splits < 1 or workers < 1 or sites_per_camera < 1:
        raise ValueError("num_splits, workers and sites_per_camera must be >= 1")
    root = Path(out_dir)
    dataset = root / DATASET_DIR
    if dataset.exists() and any(dataset.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{dataset} exists; pass overwrite=True (--overwrite)")
        shutil.rmtree(dataset)
    root.mkdir(parents=True, exist_ok=True)
    jobs = [
        (root, i, seed, min_frames, max_frames, sites_per_camera)
        for i in range(1, num_identities + 1)
    ]
    bar = tqdm(total=num_identities, desc="synth persons", unit="person", disable=not progress)
    records: list[dict] = []
    if workers == 1:
        for job in jobs:
            records.append(_write_identity(job))
            bar.update()
    else:
        # Each worker builds the (cached) camera sites once; "spawn" keeps workers independent
        # of whatever the parent imported (torch, threads).
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_worker_init) as pool:
            for record in pool.imap(_write_identity, jobs, chunksize=1):
                records.append(record)
                bar.update()
    bar.close()

    splits_dir = root / SPLITS_DIR
    splits_dir.mkdir(exist_ok=True)
    ls_set = make_splits(num_identities, num_splits, seed)
    buffer = io.BytesIO()
    savemat(buffer, {"ls_set": ls_set})
    data = bytearray(buffer.getvalue())
    # scipy stamps "Created on: <date>" into the 116-byte text header; readers ignore that
    # text, so a fixed one makes the file as reproducible as the frames.
    data[:_MAT_HEADER_TEXT] = _MAT_HEADER.ljust(_MAT_HEADER_TEXT, b" ")
    (splits_dir / SPLITS_FILE).write_bytes(bytes(data))
    lengths = [t["frames"] for r in records for t in r["tracklets"].values()]
    meta = {
        "generator": "astpn-reid synthetic pedestrians",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "num_identities": num_identities,
        "cameras": list(CAMERAS),
        "frame_size": list(FRAME_SHAPE),
        "min_frames": min_frames,
        "max_frames": max_frames,
        "num_splits": num_splits,
        "num_tracklets": len(lengths),
        "num_frames": int(sum(lengths)),
        "sites_per_camera": sites_per_camera,
        "camera_sites": {
            f"cam{c}": [
                {"kind": site.kind, **site.model.summary()}
                for site in (camera_site(c, seed, v) for v in range(sites_per_camera))
            ]
            for c in CAMERAS
        },
        "persons": records,
    }  # no timings or paths: the file is as reproducible as the frames
    (root / "synthetic.json").write_text(json.dumps(meta, indent=1))
    return root


def preview_grid(root: str | Path, persons: int = 6, frames: int = 5) -> np.ndarray:
    """RGB image: one row per person (the first ``persons``), ``frames`` evenly spaced frames
    from camera 1, a gap, then camera 2 — what a generated dataset looks like."""
    from model.preprocessing import read_frame

    base = Path(root) / DATASET_DIR / "sequences"
    h, w = FRAME_SHAPE
    rows = []
    for identity in range(1, persons + 1):
        cells = []
        for camera in CAMERAS:
            folder = base / f"cam{camera}" / person_name(identity)
            paths = sorted(folder.glob("*.png"))
            if not paths:
                raise FileNotFoundError(f"no frames in {folder}")
            picks = np.linspace(0, len(paths) - 1, frames).round().astype(int)
            cells.extend(read_frame(paths[int(i)]) for i in picks)
            cells.append(np.full((h, w // 4, 3), 255, np.uint8))
        rows.append(np.hstack(cells[:-1]))
    return np.vstack(rows)


# ----------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `synth` to `python -m training`."""
    parser = subparsers.add_parser(
        "synth",
        description=(
            "Render synthetic walking pedestrians seen by two cameras, written exactly like "
            "i-LIDS-VID (sequences/cam{1,2}/personNNN/*.png, 128x64 RGB) with a train/test "
            "split file and a synthetic.json of per-person attributes. Same seed and options "
            "give byte-identical files, whatever --workers is."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder (receives i-LIDS-VID/, 'train-test people splits/' and synthetic.json)",
    )
    parser.add_argument(
        "--identities",
        type=int,
        default=300,
        help="number of persons, each seen once by each camera",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="dataset seed: persons, scenes, cameras and splits derive from it",
    )
    parser.add_argument("--min-frames", type=int, default=20, help="shortest tracklet length")
    parser.add_argument("--max-frames", type=int, default=150, help="longest tracklet length")
    parser.add_argument(
        "--workers",
        type=int,
        default=2,
        help="parallel rendering processes (does not change the output)",
    )
    parser.add_argument(
        "--splits", type=int, default=10, help="rows of the random train/test split table ls_set"
    )
    parser.add_argument(
        "--sites-per-camera",
        type=int,
        default=8,
        help="scenes (place, light, camera model) each camera number films, one drawn per "
        "person: more sites teach the model to ignore backgrounds and colour casts; 1 gives "
        "i-LIDS-VID's two fixed scenes",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing i-LIDS-VID folder under --out"
    )
    parser.add_argument(
        "--preview",
        type=Path,
        help="also write a PNG grid of the first six persons (camera 1 left, camera 2 right)",
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    root = generate_dataset(
        args.out,
        num_identities=args.identities,
        seed=args.seed,
        min_frames=args.min_frames,
        max_frames=args.max_frames,
        workers=args.workers,
        num_splits=args.splits,
        overwrite=args.overwrite,
        sites_per_camera=args.sites_per_camera,
    )
    meta = json.loads((root / "synthetic.json").read_text())
    if args.preview:
        grid = preview_grid(root, persons=min(6, args.identities))
        cv2.imwrite(str(args.preview), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))
        print(f"preview: {args.preview}")
    print(
        f"synth: {meta['num_identities']} persons x {len(meta['cameras'])} cameras, "
        f"{meta['num_frames']} frames in {time.perf_counter() - started:.1f}s -> {root}"
    )
    return 0
