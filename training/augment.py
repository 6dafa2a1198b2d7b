"""Training clips: a window of a preprocessed tracklet, augmented once per sequence.

Every draw (window, frame subset, crop offset, mirror, colour change, erased rectangle) applies
to all frames of a clip, so the clip stays one consistent view of one walk; what is drawn is
described by :class:`AugmentConfig` and its presets. Short sequences are zero-padded to the clip
length and the padding is masked out of the temporal pooling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model.preprocessing import (
    LUMA,
    PAPER_INPUT,
    InputSpec,
    center_crop,
    mirror,
    random_crop,
)

CLIP_LENGTH = 16
COLOUR_CHANNELS = slice(0, 3)  # Y, U, V (or R, G, B); channels 3-4 are flow
_NORM_EPS = 1e-5


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

    ``rgb`` inputs keep absolute colour, so for them the photometric step is the usual colour
    jitter instead (``colour_jitter``): brightness, contrast, saturation and a per-channel gain
    (a camera's white balance). ``frame_subset_prob`` keeps a random subset of 1..n of a short
    clip's frames, in order, so that tracklets of any length down to one frame are seen.
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
    frame_subset_prob: float = 0.0
    jitter: float = 0.3  # rgb: brightness/contrast/saturation factors in exp(+-jitter)
    channel_gain: float = 0.1  # rgb: per-channel gain in exp(+-channel_gain)

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
    def reid(cls) -> AugmentConfig:
        """``full`` plus random frame subsets: for short tracklets of separate shots."""
        return cls(frame_subset_prob=0.5)

    @classmethod
    def preset(cls, name: str) -> AugmentConfig:
        presets = {"full": cls(), "reid": cls.reid(), "paper": cls.paper(), "none": cls.none()}
        if name not in presets:
            raise ValueError(f"unknown augmentation preset {name!r}; choose {sorted(presets)}")
        return presets[name]


AUGMENT_PRESETS = ("full", "reid", "paper", "none")


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


def colour_jitter(x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Brightness, contrast, saturation and per-channel gain of ``rgb`` clips (in [0, 1])."""
    x = x.copy()
    colour = x[:, COLOUR_CHANNELS]
    factors = np.exp(rng.uniform(-cfg.jitter, cfg.jitter, size=3)).astype(np.float32)
    gains = np.exp(rng.uniform(-cfg.channel_gain, cfg.channel_gain, size=3)).astype(np.float32)
    colour *= factors[0] * gains[None, :, None, None]
    mean = colour.mean(axis=(1, 2, 3), keepdims=True)
    colour = (colour - mean) * factors[1] + mean
    grey = np.tensordot(colour, np.array(LUMA, np.float32), axes=([1], [0]))[:, None]
    colour = grey + (colour - grey) * factors[2]
    x[:, COLOUR_CHANNELS] = np.clip(colour, 0.0, 1.0)
    return x


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


def random_erase(
    x: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig, colour: str = "yuv"
) -> np.ndarray:
    """Erase one rectangle at a fixed place through the whole clip (a static occluder).

    Colour channels get random values from the input's range (normalised, or [0, 1] for
    ``rgb``), flow gets zero (a static occluder does not move).
    """
    x = x.copy()
    h, w = x.shape[2:]
    area = rng.uniform(*cfg.erase_area) * h * w
    aspect = float(np.exp(rng.uniform(np.log(0.3), np.log(3.3))))
    eh = int(min(h, max(1, round(np.sqrt(area * aspect)))))
    ew = int(min(w, max(1, round(np.sqrt(area / aspect)))))
    top = int(rng.integers(0, h - eh + 1))
    left = int(rng.integers(0, w - ew + 1))
    if colour == "rgb":
        fill = rng.uniform(0, 1, size=(1, 3, eh, ew)).astype(x.dtype)
    else:
        fill = rng.normal(0, 1, size=(1, 3, eh, ew)).astype(x.dtype)
    x[:, COLOUR_CHANNELS, top : top + eh, left : left + ew] = fill
    x[:, 3:, top : top + eh, left : left + ew] = 0
    return x


def _frame_subset(length: int, rng: np.random.Generator) -> np.ndarray:
    """A random subset of 1..length frame positions, in order."""
    keep = int(rng.integers(1, length + 1))
    return np.sort(rng.choice(length, size=keep, replace=False))


def make_clip(
    sequence: np.ndarray,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    clip_length: int = CLIP_LENGTH,
    spec: InputSpec = PAPER_INPUT,
) -> tuple[np.ndarray, int]:
    """Cut and augment one training clip -> (float32 (clip_length, 5, *crop), valid frames).

    Frames past ``valid`` are zero padding (sequence shorter than ``clip_length``).
    """
    indices = choose_frames(sequence.shape[0], clip_length, rng, cfg.frame_drop_prob)
    if cfg.frame_subset_prob > 0 and len(indices) > 1 and rng.random() < cfg.frame_subset_prob:
        indices = indices[_frame_subset(len(indices), rng)]
    x = np.asarray(sequence[indices], dtype=np.float32)
    if cfg.photometric_prob > 0 and rng.random() < cfg.photometric_prob:
        x = colour_jitter(x, rng, cfg) if spec.colour == "rgb" else photometric(x, rng, cfg)
    x = random_crop(x, rng, spec.crop_size) if cfg.crop else center_crop(x, spec.crop_size)
    if cfg.mirror_prob > 0 and rng.random() < cfg.mirror_prob:
        x = mirror(x)
    if cfg.erase_prob > 0 and rng.random() < cfg.erase_prob:
        x = random_erase(x, rng, cfg, spec.colour)
    valid = x.shape[0]
    if valid < clip_length:
        pad = np.zeros((clip_length - valid, *x.shape[1:]), dtype=np.float32)
        x = np.concatenate([x, pad])
    return np.ascontiguousarray(x, dtype=np.float32), valid
