"""Camera videos of synthetic pedestrians with their ground-truth tracks in MOT format.

Several persons walk across one camera view in lanes (one band of rows each); every person is the
synthetic renderer's tracklet of that person in that camera (``synthesize_tracklet``: the person
cropped by a tracker box, with the camera's light, optics and noise), pasted into the frame where
the person walks, over the camera site's panorama. The ground-truth box of a person is the tight
box the service expects from a tracker: centred in the pasted crop, ``PERSON_FRACTION`` of its
height. Cutting that box the way the service does therefore gives back the pasted crop, up to the
video codec, which makes the cut checkable without any model.

Used by the video tests and the video-ingestion benchmark; written with OpenCV's FFmpeg
(``mp4v`` in .mp4, ``MJPG`` in .avi).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from service.video import CROP_SHAPE, PERSON_FRACTION

FOURCC = {".mp4": "mp4v", ".avi": "MJPG"}


@dataclass
class SceneTrack:
    track_id: int
    identity: int  # the synthetic person
    first_frame: int  # MOT numbering, from 1
    boxes: list[tuple[float, float, float, float]] = field(default_factory=list)  # x, y, w, h
    crops: list[np.ndarray] = field(default_factory=list)  # RGB 128x64, as pasted

    @property
    def last_frame(self) -> int:
        return self.first_frame + len(self.boxes) - 1


@dataclass
class Scene:
    path: Path
    tracks: list[SceneTrack]
    width: int
    height: int
    fps: float
    num_frames: int

    def mot_lines(self) -> list[str]:
        """Ground truth as a tracker would write it (MOTChallenge results, frame order)."""
        rows = []
        for track in self.tracks:
            for offset, (x, y, w, h) in enumerate(track.boxes):
                frame = track.first_frame + offset
                rows.append((frame, track.track_id, x, y, w, h))
        rows.sort()
        return [f"{f},{t},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,-1,-1,-1" for f, t, x, y, w, h in rows]

    def write_mot(self, path: Path) -> Path:
        path.write_text("\n".join(self.mot_lines()) + "\n")
        return path


def _background(camera: int, seed: int, width: int, height: int) -> np.ndarray:
    from training.synthetic.tracklet import camera_site

    panorama = camera_site(camera, seed).panorama  # float RGB (340, 2000)
    span = min(panorama.shape[1], round(panorama.shape[0] * width / height))
    view = cv2.resize(panorama[:, :span], (width, height), interpolation=cv2.INTER_AREA)
    return np.clip(view * 255.0 + 0.5, 0, 255).astype(np.uint8)


def render_scene(
    path: Path,
    *,
    camera: int,
    identities: list[int],
    track_ids: list[int] | None = None,
    seed: int = 1,
    size: tuple[int, int] = (480, 360),
    fps: float = 25.0,
    track_frames: int = 24,
    lanes: int = 3,
) -> Scene:
    """Write ``path`` (.mp4 or .avi): ``identities`` walk across camera ``camera``'s view, one
    after another in ``lanes`` bands of rows (the next person of a lane enters when the one
    before is half-way across, at the same speed, so nobody overlaps). Each track has
    ``track_frames`` boxes; tracks enter partly outside the frame (clipped and padded by the
    service). ``track_ids`` defaults to 1, 2, ...; the frames are ``size`` (W, H)."""
    from training.synthetic import synthesize_tracklet

    width, height = size
    band = height // lanes
    crop_h = int(band * 0.95) // 2 * 2  # even: the crop width is exactly half of it
    crop_w = crop_h * CROP_SHAPE[1] // CROP_SHAPE[0]
    step = (width - crop_w * 0.4) / (track_frames - 1)  # from 30 % outside to 30 % outside
    ids = track_ids or list(range(1, len(identities) + 1))
    tracks = []
    for index, (identity, track_id) in enumerate(zip(identities, ids, strict=True)):
        lane, turn = index % lanes, index // lanes
        track = SceneTrack(track_id, identity, 1 + turn * (track_frames // 2))
        track.crops = synthesize_tracklet(identity, camera, track_frames, seed=seed)
        for t in range(track_frames):
            left = round(-crop_w * 0.3 + step * t)
            if lane % 2:  # every other lane walks right to left
                left = width - crop_w - left
            top = lane * band + (band - crop_h) // 2
            box_h = crop_h * PERSON_FRACTION
            box_w = box_h * 0.4
            cx, cy = left + crop_w / 2.0, top + crop_h / 2.0
            track.boxes.append((cx - box_w / 2.0, cy - box_h / 2.0, box_w, box_h))
        tracks.append(track)
    num_frames = max(track.last_frame for track in tracks)
    _write(path, tracks, _background(camera, seed, width, height), fps, num_frames)
    return Scene(path, tracks, width, height, fps, num_frames)


def _paste(frame: np.ndarray, crop: np.ndarray, box: tuple[float, float, float, float]) -> None:
    x, y, w, h = box
    crop_h = round(h / PERSON_FRACTION)
    crop_w = crop_h * CROP_SHAPE[1] // CROP_SHAPE[0]
    left, top = round(x + w / 2.0 - crop_w / 2.0), round(y + h / 2.0 - crop_h / 2.0)
    patch = cv2.resize(crop, (crop_w, crop_h), interpolation=cv2.INTER_LINEAR)
    x0, y0 = max(left, 0), max(top, 0)
    x1, y1 = min(left + crop_w, frame.shape[1]), min(top + crop_h, frame.shape[0])
    if x1 > x0 and y1 > y0:
        frame[y0:y1, x0:x1] = patch[y0 - top : y1 - top, x0 - left : x1 - left]


def _write(
    path: Path, tracks: list[SceneTrack], background: np.ndarray, fps: float, num_frames: int
) -> None:
    height, width = background.shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*FOURCC[path.suffix.lower()])
    writer = cv2.VideoWriter(str(path), fourcc, fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path.suffix} videos here")
    try:
        for number in range(1, num_frames + 1):
            frame = background.copy()
            for track in tracks:
                offset = number - track.first_frame
                if 0 <= offset < len(track.boxes):
                    _paste(frame, track.crops[offset], track.boxes[offset])
            writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    finally:
        writer.release()
