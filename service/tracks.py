"""A tracker's output in the MOT Challenge text format, and which boxes of it become tracklets.

One line per box: ``frame,id,bb_left,bb_top,bb_width,bb_height,conf,x,y,z`` (MOTChallenge
results, as BoxMOT, ByteTrack and DeepSORT write them; ground-truth files have ``conf,class,
visibility`` instead of the last four). Only the first six values are used: frames count from 1,
boxes are in pixels of the video frame. Values may be separated by commas or by whitespace.

Every problem is an :class:`~service.schemas.ApiError` that quotes the first bad line, so the
caller can find it in their file.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from service.encoder import subsample_indices
from service.schemas import ApiError

_SEPARATORS = re.compile(r"[,\s]+")
_FIELDS = ("frame", "id", "bb_left", "bb_top", "bb_width", "bb_height")
_QUOTE_CHARS = 120


@dataclass(frozen=True)
class Box:
    """One tracker box: frame number (from 1), top-left corner and size in pixels."""

    frame: int
    x: float
    y: float
    w: float
    h: float
    line: int  # 1-based line of the tracks file, for error messages


@dataclass(frozen=True)
class Track:
    """All boxes of one track id, in frame order."""

    track_id: int
    boxes: tuple[Box, ...]

    @property
    def first_frame(self) -> int:
        return self.boxes[0].frame

    @property
    def last_frame(self) -> int:
        return self.boxes[-1].frame


@dataclass(frozen=True)
class TrackPlan:
    """A kept track and the boxes that will be cropped (all of them, or evenly subsampled)."""

    track: Track
    boxes: tuple[Box, ...]


@dataclass(frozen=True)
class DroppedTrack:
    track: Track
    reason: str


def _quote(line: str) -> str:
    text = line if len(line) <= _QUOTE_CHARS else line[:_QUOTE_CHARS] + "..."
    return repr(text)


def _bad_line(number: int, line: str, why: str) -> ApiError:
    return ApiError(
        422,
        "invalid_tracks",
        f"tracks line {number}: {_quote(line)} is not MOT format "
        f"(frame,id,bb_left,bb_top,bb_width,bb_height,...): {why}",
    )


def _integral(value: float) -> bool:
    return math.isfinite(value) and value == int(value)


def parse_line(number: int, line: str) -> tuple[Box, int] | None:
    """One line -> its box and track id (``None`` for a blank line)."""
    stripped = line.strip()
    if not stripped:
        return None
    parts = _SEPARATORS.split(stripped)
    if len(parts) < len(_FIELDS):
        raise _bad_line(number, line, f"{len(parts)} values, at least 6 are needed")
    values = []
    for name, text in zip(_FIELDS, parts, strict=False):
        try:
            value = float(text)
        except ValueError:
            raise _bad_line(number, line, f"{name} {text!r} is not a number") from None
        if not math.isfinite(value):
            raise _bad_line(number, line, f"{name} is {text}")
        values.append(value)
    frame, track_id, x, y, w, h = values
    if not _integral(frame) or frame < 1:
        raise _bad_line(number, line, f"frame {parts[0]} is not a whole number from 1")
    if track_id == -1:
        raise _bad_line(
            number,
            line,
            "id -1 marks an untracked detection (a MOT det.txt): run a tracker first and send "
            "its output, where every box has a track id",
        )
    if not _integral(track_id) or track_id < 0:
        raise _bad_line(number, line, f"id {parts[1]} is not a whole number from 0")
    if w <= 0 or h <= 0:
        raise _bad_line(
            number, line, f"the box is {parts[4]}x{parts[5]}: width and height must be positive"
        )
    return Box(frame=int(frame), x=x, y=y, w=w, h=h, line=number), int(track_id)


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ApiError(
            422,
            "invalid_tracks",
            f"the tracks file is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x}): "
            "send the tracker's MOT .txt file",
        ) from exc


def parse_mot(data: bytes, *, max_tracks: int, max_frame: int) -> list[Track]:
    """The tracks of a MOT file, by track id. Raises :class:`ApiError` naming the first bad
    line: not MOT, a box given twice for one frame and id, a frame past ``max_frame``."""
    boxes: dict[int, dict[int, Box]] = {}
    for number, line in enumerate(_text(data).splitlines(), start=1):
        parsed = parse_line(number, line)
        if parsed is None:
            continue
        box, track_id = parsed
        if box.frame > max_frame:
            raise ApiError(
                413,
                "video_too_long",
                f"tracks line {number}: frame {box.frame} is past the limit of {max_frame} "
                "frames (REID_MAX_VIDEO_FRAMES): cut the video and its tracks into shorter parts",
            )
        track = boxes.setdefault(track_id, {})
        if box.frame in track:
            first = track[box.frame].line
            raise _bad_line(
                number,
                line,
                f"track {track_id} already has a box on frame {box.frame} (line {first}): one "
                "box per track and frame",
            )
        track[box.frame] = box
        if len(boxes) > max_tracks:
            raise ApiError(
                413,
                "too_many_tracks",
                f"the tracks file has more than {max_tracks} tracks (REID_MAX_VIDEO_TRACKS); "
                f"the first past the limit is track {track_id} on line {number}: split it",
            )
    if not boxes:
        raise ApiError(
            422, "invalid_tracks", "the tracks file has no boxes: send the tracker's MOT output"
        )
    return [
        Track(track_id, tuple(by_frame[f] for f in sorted(by_frame)))
        for track_id, by_frame in sorted(boxes.items())
    ]


def plan_tracks(
    tracks: list[Track], *, min_frames: int, max_frames: int, max_crops: int
) -> tuple[list[TrackPlan], list[DroppedTrack]]:
    """Which tracks become tracklets: those with at least ``min_frames`` boxes, each evenly
    subsampled to at most ``max_frames`` boxes (first and last kept)."""
    kept: list[TrackPlan] = []
    dropped: list[DroppedTrack] = []
    for track in tracks:
        if len(track.boxes) < min_frames:
            reason = f"{len(track.boxes)} boxes, fewer than the minimum of {min_frames}"
            dropped.append(DroppedTrack(track, reason))
            continue
        chosen = subsample_indices(len(track.boxes), max_frames)
        kept.append(TrackPlan(track, tuple(track.boxes[i] for i in chosen)))
    crops = sum(len(plan.boxes) for plan in kept)
    if crops > max_crops:
        raise ApiError(
            413,
            "too_many_crops",
            f"the kept tracks have {crops} boxes to crop (each track at most {max_frames}), more "
            f"than the limit of {max_crops} per video (REID_MAX_VIDEO_CROPS): split the video, "
            "or raise min_track_frames to drop short tracks",
        )
    return kept, dropped


def check_boxes_inside(tracks: Sequence[Track], width: int, height: int) -> None:
    """Refuse a box with no pixel inside the frame (a box partly outside is clipped and padded,
    as a person walking into view is)."""
    for track in tracks:
        for box in track.boxes:
            if box.x >= width or box.y >= height or box.x + box.w <= 0 or box.y + box.h <= 0:
                raise ApiError(
                    422,
                    "box_outside_frame",
                    f"tracks line {box.line}: track {track.track_id}'s box on frame "
                    f"{box.frame} (x={box.x:g}, y={box.y:g}, w={box.w:g}, h={box.h:g}) lies "
                    f"entirely outside the {width}x{height} frame: are the tracks from this "
                    "video, at this resolution?",
                )


def check_frames_exist(tracks: Sequence[Track], frame_count: int, what: str) -> None:
    """Refuse a box on a frame past the end of the video (``frame_count`` frames)."""
    for track in tracks:
        if track.last_frame > frame_count:
            raise frame_past_end(track.track_id, track.boxes[-1], frame_count, what)


def frame_past_end(track_id: int, box: Box, frame_count: int, what: str) -> ApiError:
    return ApiError(
        422,
        "frame_past_end",
        f"tracks line {box.line}: track {track_id} has a box on frame {box.frame}, but {what} "
        f"has {frame_count} frames: are the tracks from this video?",
    )


def resolve_identities(
    plans: list[TrackPlan], mapping: Mapping[str, str] | None, camera: str
) -> dict[int, str]:
    """The identity each kept track is enrolled under: ``mapping[str(track id)]``, or
    ``<camera>:<track id>`` without a mapping. A mapping must name every kept track and only
    tracks of the file (dropped ones may be named)."""
    if mapping is None:
        return {plan.track.track_id: f"{camera}:{plan.track.track_id}" for plan in plans}
    known: dict[int, str] = {}
    for key, identity in mapping.items():
        try:
            track_id = int(key)
        except ValueError:
            raise ApiError(
                422,
                "invalid_identities",
                f"identities key {key!r} is not a track id: map track ids to identities, "
                'e.g. {"1": "alice", "7": "bob"}',
            ) from None
        known[track_id] = identity
    missing = [plan.track.track_id for plan in plans if plan.track.track_id not in known]
    if missing:
        raise ApiError(
            422,
            "unmapped_track",
            f"track {missing[0]} maps to no identity ({len(missing)} kept tracks are not in "
            f"identities: {missing[:10]}): map every kept track, or leave identities out to "
            f"enroll each track as '{camera}:<track id>'",
        )
    return {plan.track.track_id: known[plan.track.track_id] for plan in plans}


def check_mapping_tracks(mapping: Mapping[str, str] | None, tracks: list[Track]) -> None:
    """A mapping naming a track id that the tracks file lacks is a mistake worth reporting."""
    if not mapping:
        return
    ids = {track.track_id for track in tracks}
    for key in mapping:
        if key.strip().lstrip("-").isdigit() and int(key) not in ids:
            raise ApiError(
                422,
                "unknown_track",
                f"identities names track {key}, which is not in the tracks file "
                f"({len(ids)} tracks, ids {min(ids)}..{max(ids)})",
            )
