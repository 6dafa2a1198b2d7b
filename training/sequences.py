"""Training data: preprocessed tracklets in memory, balanced Siamese pairs, clip augmentation.

Decode + preprocess happens once per tracklet, on the *full* sequence, so the optical flow of
every frame is computed against its true predecessor; sub-sequences are cut afterwards. The
result is kept as float16 (T, 5, 64, 48) -- half the memory of float32 and exact enough for
values normalised to unit variance. An optional on-disk cache (one ``.npy`` per tracklet, named
by a hash of the frame paths, their sizes and mtimes, and ``preprocessing_config()``) makes
repeated runs start in seconds; stale entries are never reused because any change in the
frames or in the preprocessing changes the name.

Pair sampling (paper §4.1.1): every epoch each training person with sequences in at least two
cameras anchors exactly one positive pair (its sequences in two different cameras) and one
negative pair (its sequence in one camera vs. another person's sequence in a different camera),
and positives and negatives alternate, so any even-sized mini-batch is balanced.

Everything random is drawn from ``np.random.default_rng((seed, epoch, ...))`` so a run is
reproducible from its seed and a resumed run sees the same pairs and clips as an uninterrupted
one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from model.preprocessing import (
    CROP_SIZE,
    center_crop,
    mirror,
    preprocess_frames,
    preprocessing_config,
    random_crop,
    read_frame,
)

CLIP_LENGTH = 16
COLOUR_CHANNELS = slice(0, 3)  # Y, U, V; channels 3-4 are flow
_NORM_EPS = 1e-5


# ----------------------------------------------------------------------------- loading / cache


def tracklet_cache_key(frames: Sequence[Path | str]) -> str:
    """Name of a tracklet's cache entry: changes when any frame file or the preprocessing does."""
    digest = hashlib.sha256()
    digest.update(json.dumps(preprocessing_config(), sort_keys=True, default=str).encode())
    for frame in frames:
        stat = os.stat(frame)
        digest.update(f"{os.fspath(frame)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def preprocess_tracklet(frames: Sequence[Path | str]) -> np.ndarray:
    """Decode and preprocess a whole tracklet -> float16 (T, 5, 64, 48)."""
    images = [read_frame(f) for f in frames]
    return preprocess_frames(images).astype(np.float16)


def _load_one(frames: Sequence[Path | str], cache_dir: Path | None, mmap: bool) -> np.ndarray:
    if cache_dir is None:
        return preprocess_tracklet(frames)
    path = cache_dir / f"{tracklet_cache_key(frames)}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r" if mmap else None)
        except (ValueError, OSError):
            path.unlink(missing_ok=True)  # truncated by an interrupted run: rebuild it
    array = preprocess_tracklet(frames)
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
        result = _load_one(frames, cache, mmap)
        bar.update(1)
        return result

    try:
        if workers <= 1:
            return [job(f) for f in frame_lists]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(job, frame_lists))
    finally:
        bar.close()


# ----------------------------------------------------------------------------- pair sampling


@dataclass(frozen=True)
class Pair:
    """Indices into the training tracklet list; ``positive`` = same person."""

    probe: int
    gallery: int
    positive: bool


class PairSampler:
    """Balanced positive/negative pairs, one positive and one negative per person per epoch.

    ``labels[i]`` is tracklet i's training label (0..num_ids-1), ``cameras[i]`` its camera.
    Persons seen by a single camera cannot form a cross-camera positive; they still serve as
    the *other* person of negatives. ``fixed_probe_camera=True`` always puts the
    lower-numbered camera in the probe branch (the paper's camera-1 probe); by default the
    order is random so the attention's probe/gallery roles do not learn camera-specific
    statistics -- the service enrolls and queries from arbitrary cameras.
    """

    def __init__(
        self,
        labels: Sequence[int],
        cameras: Sequence[int],
        seed: int = 0,
        *,
        fixed_probe_camera: bool = False,
    ) -> None:
        if len(labels) != len(cameras):
            raise ValueError("labels and cameras must have the same length")
        self.seed = seed
        self.fixed_probe_camera = fixed_probe_camera
        by_person: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (label, camera) in enumerate(zip(labels, cameras, strict=True)):
            by_person[int(label)][int(camera)].append(index)
        self._by_person = {p: dict(cams) for p, cams in by_person.items()}
        self.anchors = sorted(p for p, cams in self._by_person.items() if len(cams) >= 2)
        if not self.anchors:
            raise ValueError("no person has sequences in two cameras: no positive pairs")
        if len(self._by_person) < 2:
            raise ValueError("need at least two persons for negative pairs")
        self._persons = sorted(self._by_person)

    def __len__(self) -> int:
        """Pairs per epoch."""
        return 2 * len(self.anchors)

    def _pick(self, rng: np.random.Generator, person: int, camera: int) -> int:
        options = self._by_person[person][camera]
        return options[int(rng.integers(len(options)))]

    def epoch(self, epoch: int) -> list[Pair]:
        """The epoch's pairs: positive, negative, positive, ... (deterministic per seed/epoch)."""
        rng = np.random.default_rng((self.seed, epoch, 0x5A17))
        pairs: list[Pair] = []
        for anchor in rng.permutation(self.anchors):
            anchor = int(anchor)
            cams = sorted(self._by_person[anchor])
            c1, c2 = (int(c) for c in rng.choice(cams, size=2, replace=False))
            if self.fixed_probe_camera:
                c1, c2 = min(c1, c2), max(c1, c2)
            pairs.append(Pair(self._pick(rng, anchor, c1), self._pick(rng, anchor, c2), True))

            other = anchor
            while other == anchor:
                other = self._persons[int(rng.integers(len(self._persons)))]
            # The paper's negative: anchor in one camera, the other person in another camera
            # (the test condition); fall back to any camera if the other person has no other.
            other_cams = [c for c in sorted(self._by_person[other]) if c != c1]
            if not other_cams:
                other_cams = sorted(self._by_person[other])
            c_other = other_cams[int(rng.integers(len(other_cams)))]
            pairs.append(Pair(self._pick(rng, anchor, c1), self._pick(rng, other, c_other), False))
        return pairs


# ----------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sequence training augmentation (each draw applies to every frame of a clip).

    Preprocessing normalises every colour channel of every frame to zero mean and unit
    variance, which erases any per-frame *affine* colour change: brightness, contrast,
    saturation and U/V offsets do nothing. What survives, and what is used here:
    a non-linear tone curve on Y (gamma-like: changes the relative brightness of dark and
    bright parts), an illumination ramp across the frame (uneven lighting, shadow), a hue
    rotation in the U/V plane (mixes chroma channels: changes which clothes look alike),
    pixel noise, and random erasing (an occluder through the whole clip). The colour
    channels are re-normalised per frame afterwards so the network sees the same statistics
    as at test time.
    """

    crop: bool = True
    mirror_prob: float = 0.5
    photometric_prob: float = 0.5
    tone_strength: float = 0.5  # tone curve exponent drawn in exp(+-strength)
    ramp_strength: float = 0.5  # illumination ramp amplitude, in Y standard deviations
    hue_max_radians: float = 0.5
    noise_std: float = 0.1
    erase_prob: float = 0.5
    erase_area: tuple[float, float] = (0.05, 0.3)
    frame_drop_prob: float = 0.05  # temporal jitter: skip a frame inside the clip window

    @classmethod
    def paper(cls) -> AugmentConfig:
        """Only what the paper did: random crop and mirror."""
        return cls(photometric_prob=0.0, erase_prob=0.0, frame_drop_prob=0.0)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all: central crop, no mirror (deterministic clips)."""
        return cls(
            crop=False, mirror_prob=0.0, photometric_prob=0.0, erase_prob=0.0, frame_drop_prob=0.0
        )

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        presets = {"full": cls(), "paper": cls.paper(), "none": cls.none()}
        if name not in presets:
            raise ValueError(f"unknown augmentation preset {name!r}; choose {sorted(presets)}")
        return presets[name]


AUGMENT_PRESETS = ("full", "paper", "none")


def choose_frames(
    length: int, clip_length: int, rng: np.random.Generator, drop_prob: float = 0.0
) -> np.ndarray:
    """Indices of a random window of consecutive frames (with occasional dropped frames).

    Sequences shorter than ``clip_length`` return all their frames: the caller pads the clip
    and masks the padding out of the temporal pooling. Because the recurrent layer is causal
    and the padding comes last, this is exactly the embedding of the short sequence -- no
    looped or repeated frames with flow that does not match them.
    """
    if length <= clip_length:
        return np.arange(length)
    extra = 0
    if drop_prob > 0:
        extra = int(rng.binomial(clip_length, drop_prob))
        extra = min(extra, length - clip_length)
    window = clip_length + extra
    start = int(rng.integers(0, length - window + 1))
    indices = np.arange(start, start + window)
    if extra:
        # Keep the window's first frame so the clip starts where it was drawn.
        dropped = rng.choice(np.arange(1, window), size=extra, replace=False)
        indices = np.delete(indices, dropped)
    return indices


def _colour_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    colour = x[:, COLOUR_CHANNELS]
    return colour.mean(axis=(2, 3), keepdims=True), colour.std(axis=(2, 3), keepdims=True)


def _restore_colour_stats(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """Give each frame's colour channels back the mean/std they had before augmenting, in place.

    Usually that is 0/1; for a nearly flat channel preprocessing floors the divisor and the std
    stays below 1 -- re-standardising to 1 would blow chroma noise up to full-scale colour.
    """
    new_mean, new_std = _colour_stats(x)
    x[:, COLOUR_CHANNELS] = (x[:, COLOUR_CHANNELS] - new_mean) / (new_std + _NORM_EPS) * std + mean


def photometric(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Colour augmentation that survives per-frame normalisation (see AugmentConfig)."""
    x = x.copy()
    t, _, h, w = x.shape
    mean, std = _colour_stats(x)
    y = x[:, 0]
    # Tone curve on Y: map the frame's Y to [0, 1], raise to a power, back. Monotone, non-affine.
    lo = y.min(axis=(1, 2), keepdims=True)
    hi = y.max(axis=(1, 2), keepdims=True)
    unit = (y - lo) / np.maximum(hi - lo, _NORM_EPS)
    gamma = float(np.exp(rng.uniform(-cfg.tone_strength, cfg.tone_strength)))
    y = unit**gamma
    y = (y - y.mean(axis=(1, 2), keepdims=True)) / (y.std(axis=(1, 2), keepdims=True) + _NORM_EPS)
    # (the ramp below is in units of this unit-variance Y; the final restore rescales it)
    # Illumination ramp in a random direction.
    angle = rng.uniform(0, 2 * np.pi)
    rows = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    cols = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    ramp = np.cos(angle) * rows + np.sin(angle) * cols
    y = y + rng.uniform(0, cfg.ramp_strength) * ramp[None]
    x[:, 0] = y
    # Hue rotation in the (U, V) plane.
    theta = rng.uniform(-cfg.hue_max_radians, cfg.hue_max_radians)
    u, v = x[:, 1].copy(), x[:, 2].copy()
    x[:, 1] = np.cos(theta) * u - np.sin(theta) * v
    x[:, 2] = np.sin(theta) * u + np.cos(theta) * v
    if cfg.noise_std > 0:
        x[:, COLOUR_CHANNELS] += rng.normal(0, cfg.noise_std, size=(t, 3, h, w)).astype(x.dtype)
    _restore_colour_stats(x, mean, std)
    return x


def random_erase(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Erase one rectangle at a fixed place through the whole clip (a static occluder).

    Colour channels get random values from the normalised range, flow gets zero (a static
    occluder does not move).
    """
    x = x.copy()
    h, w = x.shape[2:]
    area = rng.uniform(*cfg.erase_area) * h * w
    aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
    eh = int(min(h, max(1, round(np.sqrt(area * aspect)))))
    ew = int(min(w, max(1, round(np.sqrt(area / aspect)))))
    top = int(rng.integers(0, h - eh + 1))
    left = int(rng.integers(0, w - ew + 1))
    fill = rng.normal(0, 1, size=(1, 3, eh, ew)).astype(x.dtype)
    x[:, COLOUR_CHANNELS, top : top + eh, left : left + ew] = fill
    x[:, 3:, top : top + eh, left : left + ew] = 0
    return x


def make_clip(
    sequence: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    clip_length: int = CLIP_LENGTH,
) -> tuple[np.ndarray, int]:
    """Cut and augment one training clip -> (float32 (clip_length, 5, 56, 40), valid frames).

    Frames past ``valid`` are zero padding (sequence shorter than ``clip_length``).
    """
    indices = choose_frames(sequence.shape[0], clip_length, rng, cfg.frame_drop_prob)
    x = np.asarray(sequence[indices], dtype=np.float32)
    if cfg.photometric_prob > 0 and rng.random() < cfg.photometric_prob:
        x = photometric(x, rng, cfg)
    x = random_crop(x, rng) if cfg.crop else center_crop(x)
    if cfg.mirror_prob > 0 and rng.random() < cfg.mirror_prob:
        x = mirror(x)
    if cfg.erase_prob > 0 and rng.random() < cfg.erase_prob:
        x = random_erase(x, rng, cfg)
    valid = x.shape[0]
    if valid < clip_length:
        pad = np.zeros((clip_length - valid, *x.shape[1:]), dtype=np.float32)
        x = np.concatenate([x, pad])
    return np.ascontiguousarray(x, dtype=np.float32), valid


@dataclass
class PairBatch:
    """A mini-batch of pairs as NumPy arrays (converted to tensors by the trainer)."""

    probe: np.ndarray  # (B, L, 5, 56, 40) float32
    gallery: np.ndarray
    probe_mask: np.ndarray  # (B, L) bool, True = real frame
    gallery_mask: np.ndarray
    probe_labels: np.ndarray  # (B,) int64 training labels
    gallery_labels: np.ndarray
    positive: np.ndarray  # (B,) bool


def build_pair_batch(
    pairs: Sequence[Pair],
    sequences: Sequence[np.ndarray],
    labels: Sequence[int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    clip_length: int = CLIP_LENGTH,
) -> PairBatch:
    """Clips for a list of pairs; crop/mirror/erasing drawn independently for each sequence."""
    b = len(pairs)
    h, w = CROP_SIZE
    probe = np.zeros((b, clip_length, 5, h, w), dtype=np.float32)
    gallery = np.zeros_like(probe)
    p_mask = np.zeros((b, clip_length), dtype=bool)
    g_mask = np.zeros_like(p_mask)
    for i, pair in enumerate(pairs):
        probe[i], n_p = make_clip(sequences[pair.probe], rng, cfg, clip_length)
        gallery[i], n_g = make_clip(sequences[pair.gallery], rng, cfg, clip_length)
        p_mask[i, :n_p] = True
        g_mask[i, :n_g] = True
    return PairBatch(
        probe=probe,
        gallery=gallery,
        probe_mask=p_mask,
        gallery_mask=g_mask,
        probe_labels=np.array([labels[p.probe] for p in pairs], dtype=np.int64),
        gallery_labels=np.array([labels[p.gallery] for p in pairs], dtype=np.int64),
        positive=np.array([p.positive for p in pairs], dtype=bool),
    )


def batch_rng(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
    """Generator for one mini-batch's augmentation: a resumed run redraws the same clips."""
    return np.random.default_rng((seed, epoch, batch_index, 0xC11B))


def evaluation_view(sequence: np.ndarray, max_frames: int = 128) -> np.ndarray:
    """Evaluation input: the first ``max_frames`` frames, central crop -> float32."""
    x = np.asarray(sequence[:max_frames], dtype=np.float32)
    return np.ascontiguousarray(center_crop(x))
