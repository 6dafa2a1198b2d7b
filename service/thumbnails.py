"""Thumbnails kept at enrolment: which frames, at what size, as what JPEG.

The frames are shrunk right after decoding (in the decode worker, while the full-size images are
in memory anyway), so only small copies wait for the network; once the network has said which
frames mattered, :func:`make_thumbnails` picks and encodes a few of them. The gallery stores them
with the tracklet (:class:`service.gallery.Thumbnail`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from service.gallery import MAX_THUMBNAIL_BYTES, Thumbnail

#: Qualities tried in turn until a JPEG fits MAX_THUMBNAIL_BYTES (only noise-like images at the
#: largest size need more than the first).
_QUALITIES = (85, 70, 50, 30, 15)


@dataclass(frozen=True)
class ThumbnailConfig:
    """``REID_THUMBNAIL_*``: how many thumbnails per tracklet and their longest side."""

    count: int
    max_side: int


def shrink(image: np.ndarray, max_side: int) -> np.ndarray:
    """An RGB copy whose longest side is at most ``max_side`` (never enlarged)."""
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2RGB)
    return np.ascontiguousarray(image)


def pick_frames(attention: np.ndarray, count: int) -> list[int]:
    """The frames worth showing, in frame order: the one the network weighted most, then the
    first and the last (where the person enters and leaves), then the next most weighted."""
    frames = int(attention.shape[0])
    by_weight = [int(i) for i in np.argsort(-attention, kind="stable")]
    chosen: list[int] = []
    for frame in [by_weight[0], 0, frames - 1, *by_weight[1:]]:
        if len(chosen) == min(count, frames):
            break
        if frame not in chosen:
            chosen.append(frame)
    return sorted(chosen)


def encode_jpeg(image: np.ndarray) -> bytes:
    """RGB -> JPEG of at most MAX_THUMBNAIL_BYTES, at the best quality that fits."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    for quality in _QUALITIES:
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and buffer.size <= MAX_THUMBNAIL_BYTES:
            return buffer.tobytes()
    raise ValueError(
        f"a {image.shape[1]}x{image.shape[0]} thumbnail does not fit {MAX_THUMBNAIL_BYTES} "
        "bytes even at the lowest quality: lower REID_THUMBNAIL_MAX_SIDE"
    )


def make_thumbnails(
    previews: Sequence[np.ndarray], attention: np.ndarray, config: ThumbnailConfig
) -> list[Thumbnail]:
    """Thumbnails of the picked frames of a tracklet (``previews``: every frame, shrunk)."""
    if len(previews) != attention.shape[0]:
        raise ValueError(f"{len(previews)} frames but {attention.shape[0]} attention weights")
    return [
        Thumbnail(frame_index=frame, jpeg=encode_jpeg(previews[frame]))
        for frame in pick_frames(attention, config.count)
    ]
