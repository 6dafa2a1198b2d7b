"""Training data: preprocessed tracklets in memory, loaded once and cached on disk.

Decode + preprocess happens once per tracklet, on the *full* sequence, so the optical flow of
every frame is computed against its true predecessor; sub-sequences are cut afterwards
(``training.augment``). The result is kept as float16 (T, 5, H, W) -- half the memory of
float32 and exact enough for values normalised to unit variance or in [0, 1]. An optional
on-disk cache (one ``.npy`` per tracklet, named by a hash of the frame paths, their sizes and
mtimes, and the model's ``InputSpec.config()``) makes repeated runs start in seconds; stale
entries are never reused because any change in the frames or in the preprocessing changes the
name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.preprocessing import (
    CROP_SIZE,
    PAPER_INPUT,
    InputSpec,
    center_crop,
    preprocess_frames,
    read_frame,
)

# ----------------------------------------------------------------------------- loading / cache


def tracklet_cache_key(frames: Sequence[Path | str], spec: InputSpec = PAPER_INPUT) -> str:
    """Name of a tracklet's cache entry: changes when any frame file or the preprocessing does."""
    digest = hashlib.sha256()
    digest.update(json.dumps(spec.config(), sort_keys=True, default=str).encode())
    for frame in frames:
        stat = os.stat(frame)
        digest.update(f"{os.fspath(frame)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def preprocess_tracklet(frames: Sequence[Path | str], spec: InputSpec = PAPER_INPUT) -> np.ndarray:
    """Decode and preprocess a whole tracklet -> float16 (T, 5, *spec.frame_size)."""
    images = [read_frame(f) for f in frames]
    return preprocess_frames(images, spec).astype(np.float16)


def _load_one(
    frames: Sequence[Path | str], cache_dir: Path | None, mmap: bool, spec: InputSpec
) -> np.ndarray:
    if cache_dir is None:
        return preprocess_tracklet(frames, spec)
    path = cache_dir / f"{tracklet_cache_key(frames, spec)}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r" if mmap else None)
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # truncated by an interrupted run: rebuild it
    array = preprocess_tracklet(frames, spec)
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)  # atomic: concurrent runs never read half-written entries
    return np.load(path, mmap_mode="r") if mmap else array


def load_sequences(
    tracklets: Sequence[object],
    *,
    cache_dir: str | Path | None = None,
    workers: int = 1,
    mmap: bool = False,
    desc: str = "preprocessing",
    progress: bool = True,
    spec: InputSpec = PAPER_INPUT,
) -> list[np.ndarray]:
    """Preprocess every tracklet (objects with a ``frames`` attribute) once.

    ``mmap=True`` (needs ``cache_dir``) memory-maps the cache files instead of holding every
    sequence in RAM: MARS preprocessed is ~35 GB in float16. ``workers > 1`` uses threads;
    OpenCV releases the GIL in decoding, colour conversion and the flow computation.
    """
    if mmap and cache_dir is None:
        raise ValueError("mmap needs a cache_dir")
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    frame_lists = [tuple(t.frames) for t in tracklets]  # type: ignore[attr-defined]
    bar = tqdm(total=len(frame_lists), desc=desc, unit="seq", disable=not progress)

    def job(frames: tuple[Path, ...]) -> np.ndarray:
        if not frames:
            raise ValueError("tracklet without frames")
        result = _load_one(frames, cache, mmap, spec)
        bar.update(1)
        return result

    try:
        if workers <= 1:
            return [job(f) for f in frame_lists]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(job, frame_lists))
    finally:
        bar.close()


def evaluation_view(
    sequence: np.ndarray, max_frames: int = 128, crop_size: tuple[int, int] = CROP_SIZE
) -> np.ndarray:
    """Evaluation input: the first ``max_frames`` frames, central crop -> float32."""
    x = np.asarray(sequence[:max_frames], dtype=np.float32)
    return np.ascontiguousarray(center_crop(x, crop_size))
