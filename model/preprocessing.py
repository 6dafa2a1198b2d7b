"""Frames -> network input, shared by training and serving (NumPy + OpenCV, never torch).

What a model takes is an :class:`InputSpec`: the frame size, the network crop, what the three
colour channels carry and what the two flow channels carry. ``PAPER_INPUT`` is the paper's input
(and the default of every function here); a model card records its spec as
``InputSpec.config()`` and the service rebuilds the spec from the card with
``InputSpec.from_config``, so a model is always served the input it was trained on.

The pipeline, per tracklet (frames in the order given):

1. validate every frame (grey HxW / HxWx1, RGB HxWx3, RGBA HxWx4; uint8, or float in [0, 1]);
2. convert to float32 RGB in [0, 1] and resize to the spec's frame size (paper: 64x48, H x W);
3. colour ``yuv`` (paper): RGB -> YUV (BT.601, the matrix Torch's ``image.rgb2yuv`` used), then
   every channel of every frame to zero mean and unit variance (standard deviation floored at
   NORM_EPSILON); colour ``rgb``: RGB in [0, 1] as it is (the network normalises it, so a
   model pretrained on ImageNet statistics sees them, and absolute colour survives);
4. flow ``lucas-kanade``: dense pyramidal Lucas-Kanade optical flow on the luma of each frame
   against the previous one (the first frame gets zero flow), always computed at FLOW_SIZE
   (64x48) in pixels of that size, divided by FLOW_SCALE_PX, clipped to [-1, 1], and resized to
   the frame size when that differs; flow ``zero``: both channels 0 (for tracklets whose frames
   are not consecutive video frames, where flow between them measures no motion);
5. stack to float32 (T, 5, H, W): three colour channels, flow_x, flow_y.

Cropping (random for training, central for serving) and mirroring are separate steps on that
array so that training draws its augmentation once per sequence. The reasons behind every
number are in docs/preprocessing.md; ``InputSpec.config()`` lists every setting that changes
the output, so that an exported model can be checked against the code that serves it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model.flow import (
    FLOW_ITERATIONS,
    FLOW_LEVELS,
    FLOW_REGULARISER,
    FLOW_SCALE_PX,
    FLOW_WINDOW,
    FLOW_WINDOW_SIGMA,
    lucas_kanade_flow,
)

FRAME_SIZE: tuple[int, int] = (64, 48)  # (H, W) after resize, paper input
CROP_SIZE: tuple[int, int] = (56, 40)  # (H, W) network input, paper input
CHANNELS: tuple[str, ...] = ("Y", "U", "V", "flow_x", "flow_y")  # paper input
COLOUR_CHANNELS = {"yuv": ("Y", "U", "V"), "rgb": ("R", "G", "B")}
FLOW_CHANNELS: tuple[str, ...] = ("flow_x", "flow_y")
FLOW_X: int = CHANNELS.index("flow_x")
FLOW_Y: int = CHANNELS.index("flow_y")
COLOUR_MODES: tuple[str, ...] = tuple(COLOUR_CHANNELS)
FLOW_MODES: tuple[str, ...] = ("lucas-kanade", "zero")
# Flow is always measured on the paper's 64x48 luma: its pyramid, window and scale were tuned
# there (docs/preprocessing.md), its cost does not grow with the input size, and a flow value
# means the same speed whatever size the colour channels are.
FLOW_SIZE: tuple[int, int] = FRAME_SIZE

# Bump whenever any output of preprocess_frames/prepare_tracklet changes for the same input: the
# service refuses a model whose card records a different preprocessing configuration.
PREPROCESSING_VERSION = "1"

# A channel whose standard deviation is below one 8-bit grey level (in [0, 1] units) carries no
# signal above quantisation noise; flooring the divisor there keeps flat and nearly flat frames
# from being blown up to unit variance (and a flat frame from giving 0/0).
NORM_EPSILON = 1.0 / 255.0

# BT.601 luma weights; U and V are scaled colour differences. They are computed from differences
# of R, G, B (see _rgb_to_yuv) so that grey pixels give exactly U = V = 0.
LUMA = (0.299, 0.587, 0.114)
_U_SCALE = 0.492
_V_SCALE = 0.877


def _flow_record(spec: InputSpec) -> dict[str, Any]:
    if spec.flow == "zero":
        return {"method": "zero: both flow channels are 0 for every frame"}
    record: dict[str, Any] = {
        "method": "dense pyramidal Lucas-Kanade",
        "image": "luma Y in [0, 1] at frame_size, before normalisation",
        "pairs": "frame t against frame t-1, sampled on frame t's grid",
        "first_frame": "zero",
        "gradient": "Scharr of the current frame, per pyramid level",
        "pyramid_levels": FLOW_LEVELS,
        "pyramid_downsample": "INTER_AREA, factor 2",
        "iterations_per_level": FLOW_ITERATIONS,
        "window": "gaussian",
        "window_size": FLOW_WINDOW,
        "window_sigma": FLOW_WINDOW_SIGMA,
        "regulariser": FLOW_REGULARISER,
        "scale_px": FLOW_SCALE_PX,
        "clip": [-1.0, 1.0],
    }
    if spec.frame_size != FLOW_SIZE:
        record["image"] = f"luma Y in [0, 1] resized to {list(FLOW_SIZE)} (INTER_AREA)"
        record["resized_to_frame_size"] = "INTER_LINEAR, values unchanged (units of flow_size)"
        record["flow_size"] = list(FLOW_SIZE)
    return record


def _colour_record(spec: InputSpec) -> dict[str, Any]:
    if spec.colour == "rgb":
        return {
            "colour_space": {"name": "RGB", "range": [0.0, 1.0]},
            "normalisation": {"kind": "none here: the network normalises its input"},
        }
    return {
        "colour_space": {
            "name": "YUV BT.601",
            "luma": list(LUMA),
            "u_scale": _U_SCALE,
            "v_scale": _V_SCALE,
        },
        "normalisation": {
            "kind": "per frame, per channel: (x - mean) / max(std, epsilon)",
            "epsilon": NORM_EPSILON,
        },
    }


def _size(value: Any, name: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be two integers (H, W), got {value!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return h, w


@dataclass(frozen=True)
class InputSpec:
    """What one model takes as input; ``PAPER_INPUT`` is the paper's (64x48 frames, 56x40
    crops, standardised YUV, Lucas-Kanade flow)."""

    frame_size: tuple[int, int] = FRAME_SIZE
    crop_size: tuple[int, int] = CROP_SIZE
    colour: str = "yuv"
    flow: str = "lucas-kanade"

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_size", _size(self.frame_size, "frame_size"))
        object.__setattr__(self, "crop_size", _size(self.crop_size, "crop_size"))
        if self.colour not in COLOUR_MODES:
            raise ValueError(f"colour must be one of {COLOUR_MODES}, got {self.colour!r}")
        if self.flow not in FLOW_MODES:
            raise ValueError(f"flow must be one of {FLOW_MODES}, got {self.flow!r}")
        if any(c > f for c, f in zip(self.crop_size, self.frame_size, strict=True)):
            raise ValueError(f"crop {self.crop_size} is larger than the frame {self.frame_size}")

    @property
    def channels(self) -> tuple[str, ...]:
        return (*COLOUR_CHANNELS[self.colour], *FLOW_CHANNELS)

    def config(self) -> dict[str, Any]:
        """Every setting that changes the network input, JSON-serialisable.

        The exported model card stores this dict; the service rebuilds the spec from it and
        refuses a record that this code would not reproduce exactly.
        """
        return {
            "version": PREPROCESSING_VERSION,
            "input": "frames in tracklet order; RGB(A) or grey; uint8 or float in [0, 1]",
            "frame_size": list(self.frame_size),
            "crop_size": list(self.crop_size),
            "test_crop": "center",
            "channels": list(self.channels),
            "resize": "INTER_AREA when shrinking either side, else INTER_LINEAR; float32 in [0, 1]",
            **_colour_record(self),
            "flow": _flow_record(self),
            "mirror": "flip width, negate flow_x",
        }

    @classmethod
    def from_config(cls, record: Mapping[str, Any]) -> InputSpec:
        """The spec a card's ``preprocessing`` record describes; ``ValueError`` naming the
        difference when this code would not produce exactly that record."""
        if not isinstance(record, Mapping):
            raise ValueError(f"a preprocessing record is a JSON object, got {type(record)}")
        channels = list(record.get("channels") or [])
        colour = next((m for m, c in COLOUR_CHANNELS.items() if list(c) == channels[:3]), None)
        method = str((record.get("flow") or {}).get("method", ""))
        flow = "zero" if method.startswith("zero") else "lucas-kanade"
        if colour is None:
            raise ValueError(f"unknown colour channels {channels[:3]}")
        spec = cls(record.get("frame_size"), record.get("crop_size"), colour, flow)
        expected = spec.config()
        differing = sorted(
            k for k in set(expected) | set(record) if expected.get(k) != record.get(k)
        )
        if differing:
            raise ValueError(
                f"preprocessing version {record.get('version')!r} is not what this code runs "
                f"(version {PREPROCESSING_VERSION!r}); settings that differ: {', '.join(differing)}"
            )
        return spec


PAPER_INPUT = InputSpec()


def preprocessing_config(spec: InputSpec = PAPER_INPUT) -> dict[str, Any]:
    """``spec.config()``: the record a model card stores for its input."""
    return spec.config()


# --------------------------------------------------------------------------------------------
# Input validation and conversion


def _as_rgb01(frame: object, index: int) -> np.ndarray:
    """One frame -> float32 RGB (h, w, 3) in [0, 1]; ValueError naming the frame otherwise."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame {index}: expected a numpy array, got {type(frame).__name__}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        channels = 1
    elif frame.ndim == 3 and frame.shape[2] in (3, 4):
        channels = frame.shape[2]
    else:
        raise ValueError(
            f"frame {index}: expected shape (H, W), (H, W, 1), (H, W, 3) RGB or (H, W, 4) RGBA, "
            f"got {frame.shape}"
        )
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"frame {index}: empty image of shape {frame.shape}")
    if frame.dtype == np.uint8:
        rgb = frame.astype(np.float32) * np.float32(1.0 / 255.0)
    elif np.issubdtype(frame.dtype, np.floating):
        rgb = frame.astype(np.float32)
        lo, hi = float(np.min(rgb)), float(np.max(rgb))
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"frame {index}: float frames must be finite and in [0, 1], got values in "
                f"[{lo}, {hi}] (uint8 frames are taken as 0..255)"
            )
    else:
        raise ValueError(
            f"frame {index}: expected dtype uint8 or float in [0, 1], got {frame.dtype}"
        )
    if channels == 1:
        return np.repeat(rgb[:, :, None], 3, axis=2)
    # Alpha is dropped, not composited: tracklet crops are opaque, and an arbitrary background
    # colour would be a made-up input the network never saw in training.
    return rgb[:, :, :3]


def _resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    # INTER_AREA integrates the source pixels when shrinking (no aliasing of the texture that
    # both appearance and flow depend on); it is blocky when enlarging, where linear is better.
    shrinking = rgb.shape[0] > h or rgb.shape[1] > w
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(rgb), (w, h), interpolation=interpolation)
    return np.clip(out, 0.0, 1.0, out=out)


def _rgb_to_yuv(rgb: np.ndarray) -> np.ndarray:
    """(..., 3) RGB -> (..., 3) YUV, BT.601 (as Torch's image.rgb2yuv), U and V centred on 0."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    wr, wg, wb = LUMA
    y = wr * r + wg * g + wb * b
    # B - Y and R - Y written as differences so that R = G = B gives exactly 0 (no rounding noise
    # that normalisation would otherwise amplify for grey input).
    u = _U_SCALE * (wr * (b - r) + wg * (b - g))
    v = _V_SCALE * (wg * (r - g) + wb * (r - b))
    return np.stack([y, u, v], axis=-1).astype(np.float32, copy=False)


def _standardise(x: np.ndarray) -> np.ndarray:
    """(T, C, H, W): each (frame, channel) plane to zero mean, unit variance (std floored)."""
    planes = np.ascontiguousarray(x, dtype=np.float32).reshape(x.shape[0] * x.shape[1], -1)
    # float64 accumulation: the mean of a constant plane is then exactly that constant, so flat
    # frames give exact zeros rather than rounding residue.
    mean = planes.mean(axis=1, dtype=np.float64, keepdims=True).astype(np.float32)
    centred = planes - mean
    std = np.sqrt(np.mean(np.square(centred), axis=1, dtype=np.float64, keepdims=True))
    centred *= (1.0 / np.maximum(std, NORM_EPSILON)).astype(np.float32)
    return centred.reshape(x.shape)


# --------------------------------------------------------------------------------------------
# Public pipeline


def _luma(rgb: np.ndarray) -> np.ndarray:
    wr, wg, wb = LUMA
    return np.ascontiguousarray(wr * rgb[..., 0] + wg * rgb[..., 1] + wb * rgb[..., 2])


def _flow(luma: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """(T, h, w) luma at FLOW_SIZE -> (T, 2, H, W) scaled, clipped flow at ``frame_size``."""
    t = luma.shape[0]
    flow = np.zeros((t, 2, *luma.shape[1:]), dtype=np.float32)  # frame 0: no previous frame
    for i in range(1, t):
        flow[i, 0], flow[i, 1] = lucas_kanade_flow(luma[i - 1], luma[i])
    flow *= np.float32(1.0 / FLOW_SCALE_PX)
    np.clip(flow, -1.0, 1.0, out=flow)
    if tuple(luma.shape[1:]) == frame_size:
        return flow
    h, w = frame_size
    planes = flow.reshape(t * 2, *luma.shape[1:])
    resized = [cv2.resize(p, (w, h), interpolation=cv2.INTER_LINEAR) for p in planes]
    return np.stack(resized).reshape(t, 2, h, w)


def preprocess_frames(frames: Sequence[np.ndarray], spec: InputSpec = PAPER_INPUT) -> np.ndarray:
    """RGB/grey/RGBA uint8 (or float in [0, 1]) frames of any size, in tracklet order ->
    float32 (T, 5, H, W) at the spec's frame size: three colour channels, flow_x, flow_y.

    Frames may differ in size and channel count (each is converted on its own). Raises
    ValueError with the offending frame's index for an empty sequence, a wrong dtype, ndim or
    channel count, or float values outside [0, 1].
    """
    if isinstance(frames, np.ndarray) and frames.ndim not in (3, 4):
        raise ValueError(
            f"a frame stack must be (T, H, W) or (T, H, W, C), got an array of shape {frames.shape}"
        )
    if len(frames) == 0:
        raise ValueError("empty frame sequence: a tracklet needs at least one frame")
    sources = [_as_rgb01(frame, i) for i, frame in enumerate(frames)]
    rgb = np.stack([_resize(source, spec.frame_size) for source in sources])
    t, h, w = rgb.shape[:3]
    out = np.empty((t, len(spec.channels), h, w), dtype=np.float32)
    if spec.colour == "yuv":
        yuv = _rgb_to_yuv(rgb)  # (T, H, W, 3)
        out[:, :3] = _standardise(yuv.transpose(0, 3, 1, 2))
    else:
        out[:, :3] = rgb.transpose(0, 3, 1, 2)
    if spec.flow == "zero":
        out[:, FLOW_X:] = 0.0
        return out
    if spec.frame_size == FLOW_SIZE:
        # The paper input: the flow image is the Y channel before standardisation.
        luma = np.ascontiguousarray(yuv[..., 0]) if spec.colour == "yuv" else _luma(rgb)
    else:
        luma = _luma(np.stack([_resize(source, FLOW_SIZE) for source in sources]))
    out[:, FLOW_X:] = _flow(luma, spec.frame_size)
    return out


def _check_layout(x: np.ndarray) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.shape[1] != len(CHANNELS):
        shape = getattr(x, "shape", None)
        raise ValueError(f"expected a (T, {len(CHANNELS)}, H, W) array, got shape {shape}")


def _crop(x: np.ndarray, top: int, left: int, size: tuple[int, int]) -> np.ndarray:
    ch, cw = size
    return np.ascontiguousarray(x[:, :, top : top + ch, left : left + cw])


def _room(x: np.ndarray, size: tuple[int, int]) -> tuple[int, int]:
    _check_layout(x)
    h, w = x.shape[2:]
    if h < size[0] or w < size[1]:
        raise ValueError(f"cannot crop {tuple(size)} out of {(h, w)}")
    return h - size[0], w - size[1]


def center_crop(x: np.ndarray, size: tuple[int, int] = CROP_SIZE) -> np.ndarray:
    """(T, 5, H, W) -> (T, 5, *size): the central crop, the test/serving view."""
    rows, cols = _room(x, size)
    return _crop(x, rows // 2, cols // 2, size)


def random_crop(
    x: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = CROP_SIZE
) -> np.ndarray:
    """(T, 5, H, W) -> (T, 5, *size) at a uniformly drawn offset, the same for every frame
    (the flow channels describe motion within one fixed window, so all frames share it)."""
    rows, cols = _room(x, size)
    return _crop(x, int(rng.integers(0, rows + 1)), int(rng.integers(0, cols + 1)), size)


def mirror(x: np.ndarray) -> np.ndarray:
    """Horizontal flip of a (T, 5, H, W) array: flips W and negates flow_x (motion to the right
    becomes motion to the left); flow_y is unchanged. Works before or after cropping."""
    _check_layout(x)
    out = np.ascontiguousarray(x[..., ::-1])
    out[:, FLOW_X] *= -1.0
    return out


def prepare_tracklet(frames: Sequence[np.ndarray], spec: InputSpec = PAPER_INPUT) -> np.ndarray:
    """The serving path: frames -> contiguous float32 (T, 5, *spec.crop_size)."""
    return center_crop(preprocess_frames(frames, spec), spec.crop_size)


def read_frame(path: str | os.PathLike[str]) -> np.ndarray:
    """Image file -> RGB uint8 (H, W, 3) (OpenCV decodes to BGR; this converts).

    Grey files come back as three equal channels and alpha is dropped, as preprocess_frames
    would do anyway. Raises FileNotFoundError or ValueError naming the file.
    """
    p = Path(path)
    try:
        data = np.fromfile(p, dtype=np.uint8)  # not cv2.imread: it returns None for every failure
    except FileNotFoundError:
        raise FileNotFoundError(f"frame file not found: {p}") from None
    except OSError as exc:
        raise ValueError(f"cannot read frame file {p}: {exc}") from exc
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(f"cannot decode frame file {p}: not an image format OpenCV reads")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
