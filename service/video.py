"""Camera footage -> person crops, streamed: one frame decoded at a time, crops only where a kept
track has a box, each track handed on as soon as its last box is cropped.

Frames come from a video file (any container and codec OpenCV's bundled FFmpeg reads) or from a
MOT sequence's ``img1/`` folder (a zip, or the frame files themselves), numbered from 1 as the
tracks file numbers them.

Crops are cut as the training crops were made, so the network sees what it learned from: the
box is widened (or heightened) about its centre to the training crops' aspect, and enlarged so
that the person fills :data:`PERSON_FRACTION` of its height (the synthetic renderer draws persons
at 0.70-0.92 of the crop height); the part inside the frame is resized to fit
:data:`CROP_SHAPE` (area averaging when shrinking, as preprocessing does) and the part outside is
padded by repeating the border pixels. The 128 x 64 crops then go through
:func:`model.preprocessing.prepare_tracklet` like any uploaded tracklet.
"""

from __future__ import annotations

import configparser
import math
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from service.frames import EncodedFrame, FrameLimits, check_frame, decode_frame
from service.schemas import ApiError
from service.tracks import Box, TrackPlan, frame_past_end

#: (H, W) of the training crops (i-LIDS-VID's and the synthetic renderer's 128 x 64).
CROP_SHAPE: tuple[int, int] = (128, 64)
#: Share of the crop height a person's box fills in the training crops.
PERSON_FRACTION = 0.81
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_DIGITS = re.compile(r"\d+")

# Containers recognised by their first bytes. Anything else is refused before FFmpeg sees it:
# FFmpeg also reads text formats (HLS playlists, concat scripts) that name other files or URLs.
_MAGIC: tuple[tuple[str, Callable[[bytes], bool]], ...] = (
    ("MP4/MOV/3GP", lambda b: b[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")),
    ("AVI", lambda b: b[:4] == b"RIFF" and b[8:12] in (b"AVI ", b"AVIX")),
    ("Matroska/WebM", lambda b: b[:4] == b"\x1a\x45\xdf\xa3"),
    ("MPEG-TS", lambda b: len(b) > 376 and b[0] == b[188] == b[376] == 0x47),
    ("MPEG-PS", lambda b: b[:4] == b"\x00\x00\x01\xba"),
    ("FLV", lambda b: b[:3] == b"FLV"),
    ("ASF/WMV", lambda b: b[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")),
    ("Ogg", lambda b: b[:4] == b"OggS"),
    (
        "MPEG video or H.264/HEVC stream",
        lambda b: b[:4] in (b"\x00\x00\x01\xb3", b"\x00\x00\x00\x01"),
    ),
    ("MJPEG stream", lambda b: b[:3] == b"\xff\xd8\xff"),
)


@dataclass(frozen=True)
class FrameGeometry:
    width: int
    height: int
    frame_count: int | None  # None: the container does not say
    fps: float | None


# ----------------------------------------------------------------------------------- cropping


def crop_window(box: Box) -> tuple[float, float, float, float]:
    """(left, top, width, height) of the region cut for ``box``, in frame pixels."""
    aspect = CROP_SHAPE[1] / CROP_SHAPE[0]
    height = box.h / PERSON_FRACTION
    width = height * aspect
    if box.w > width:  # a wide box (arms out, a bicycle): keep all of it, grow the height
        width = box.w
        height = width / aspect
    cx, cy = box.x + box.w / 2.0, box.y + box.h / 2.0
    return cx - width / 2.0, cy - height / 2.0, width, height


def cut_crop(frame: np.ndarray, box: Box) -> np.ndarray:
    """The training-shaped crop (``CROP_SHAPE``, same channels as ``frame``) of ``box``.

    Resizing happens before padding, so even a box far larger than the frame costs no more than
    one crop of memory."""
    out_h, out_w = CROP_SHAPE
    left, top, width, height = crop_window(box)
    sx, sy = out_w / width, out_h / height
    fh, fw = frame.shape[:2]
    # Visible part in frame pixels, and where it lands in the crop.
    x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
    x1, y1 = min(fw, math.ceil(left + width)), min(fh, math.ceil(top + height))
    if x1 <= x0 or y1 <= y0:  # a frame smaller than the first one (a resolution change)
        raise ApiError(
            422,
            "box_outside_frame",
            f"tracks line {box.line}: the box on frame {box.frame} lies outside that "
            f"{fw}x{fh} frame",
        )
    c0 = min(max(round((x0 - left) * sx), 0), out_w - 1)
    r0 = min(max(round((y0 - top) * sy), 0), out_h - 1)
    c1 = min(max(round((x1 - left) * sx), c0 + 1), out_w)
    r1 = min(max(round((y1 - top) * sy), r0 + 1), out_h)
    visible = frame[y0:y1, x0:x1]
    shrinking = visible.shape[0] > r1 - r0 or visible.shape[1] > c1 - c0
    inter = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    part = cv2.resize(np.ascontiguousarray(visible), (c1 - c0, r1 - r0), interpolation=inter)
    if part.ndim == 2 and frame.ndim == 3:
        part = part[:, :, None]
    if (r0, r1, c0, c1) == (0, out_h, 0, out_w):
        return part
    return cv2.copyMakeBorder(part, r0, out_h - r1, c0, out_w - c1, cv2.BORDER_REPLICATE)


# ------------------------------------------------------------------------------ frame sources


def sniff_container(head: bytes) -> str | None:
    """The container named by a file's first bytes, or ``None`` when it is none we accept."""
    for name, test in _MAGIC:
        if test(head):
            return name
    return None


class VideoFile:
    """A video on disk read by OpenCV's FFmpeg backend, frame by frame."""

    def __init__(self, path: Path, limits: FrameLimits) -> None:
        with path.open("rb") as handle:
            head = handle.read(512)
        if sniff_container(head) is None:
            raise ApiError(
                415,
                "unsupported_video",
                "the video is not in a container this server reads (checked by its first "
                "bytes): send MP4/MOV, AVI, MKV/WebM, MPEG-TS/PS, FLV, WMV or Ogg, or the "
                "frames as an img1/ zip",
            )
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            raise ApiError(
                422,
                "unreadable_video",
                "the video cannot be opened: it is damaged or its codec "
                "is unknown to FFmpeg; re-encode it (e.g. ffmpeg -i in -c:v libx264 out.mp4)",
            )
        self._capture = capture
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        _check_frame_size(width, height, limits)
        self.geometry = FrameGeometry(
            width=width,
            height=height,
            frame_count=count if count > 0 else None,
            fps=fps if math.isfinite(fps) and 0 < fps < 1000 else None,
        )

    #: Frames come as OpenCV decodes them; only the small crops are converted to RGB.
    bgr = True

    def frames(self, last: int, wanted: set[int]) -> Iterator[tuple[int, np.ndarray | None]]:
        """(number, BGR frame or None when not wanted) for frames 1..last; stops early at the
        end of the video (the caller checks it got ``last``)."""
        for number in range(1, last + 1):
            if number in wanted:
                ok, bgr = self._capture.read()
                if not ok or bgr is None:
                    return
                yield number, bgr
            else:
                # grab() demuxes and decodes but skips the colour conversion and copy.
                if not self._capture.grab():
                    return
                yield number, None

    def close(self) -> None:
        self._capture.release()


def _check_frame_size(width: int, height: int, limits: FrameLimits) -> None:
    if width <= 0 or height <= 0:
        raise ApiError(422, "unreadable_video", "the video has no readable video stream")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ApiError(
            413,
            "frame_too_large",
            f"the video's frames are {width}x{height} pixels; the limit is {limits.max_pixels} "
            f"pixels (REID_MAX_PIXELS_PER_FRAME) and {limits.max_side} per side "
            "(REID_MAX_FRAME_SIDE): downscale the video and its boxes",
        )


def frame_number(name: str) -> int | None:
    """MOT's ``img1/000042.jpg`` -> 42: the last run of digits in the file name."""
    runs = _DIGITS.findall(PurePosixPath(name.replace("\\", "/")).stem)
    return int(runs[-1]) if runs else None


@dataclass(frozen=True)
class _Entry:
    number: int
    name: str
    read: Callable[[], bytes]


class FrameFolder:
    """Numbered frame images (MOT's ``img1/``) from a zip or from uploaded files."""

    def __init__(
        self,
        entries: Sequence[_Entry],
        fps: float | None,
        limits: FrameLimits,
        archive: zipfile.ZipFile | None = None,
    ) -> None:
        self._archive = archive
        if not entries:
            raise ApiError(
                400,
                "no_frames",
                "no frame images (.jpg, .jpeg, .png) were sent: zip the sequence's img1/ "
                "folder, or send each frame as a 'frames' file named by its number",
            )
        by_number: dict[int, _Entry] = {}
        for entry in entries:
            if entry.number in by_number:
                raise ApiError(
                    400,
                    "duplicate_frame",
                    f"frames {by_number[entry.number].name!r} and {entry.name!r} both have "
                    f"number {entry.number}",
                )
            by_number[entry.number] = entry
        self._entries = by_number
        self._limits = limits
        first = by_number[min(by_number)]
        _, width, height = check_frame(EncodedFrame(first.name, first.read()), limits)
        self.geometry = FrameGeometry(width, height, max(by_number), fps)

    bgr = False  # decode_frame gives RGB

    def missing(self, numbers: Sequence[int]) -> int | None:
        """The first of ``numbers`` that has no image."""
        return next((n for n in numbers if n not in self._entries), None)

    def frames(self, last: int, wanted: set[int]) -> Iterator[tuple[int, np.ndarray | None]]:
        for number in range(1, last + 1):
            if number not in wanted:
                yield number, None
                continue
            entry = self._entries.get(number)
            if entry is None:  # checked when the job was accepted; kept as a guard
                raise ApiError(422, "missing_frame", f"frame {number} has no image")
            yield number, decode_frame(EncodedFrame(entry.name, entry.read()), self._limits)

    def close(self) -> None:
        if self._archive is not None:
            self._archive.close()


def folder_from_files(
    files: Sequence[tuple[str, Path]], fps: float | None, limits: FrameLimits
) -> FrameFolder:
    """Uploaded frame files (name, path on disk), numbered by their names."""
    entries = []
    for name, path in files:
        number = frame_number(name)
        if number is None:
            raise ApiError(
                400, "unnumbered_frame", f"frame file {name!r} has no frame number in its name"
            )
        entries.append(_Entry(number, name, path.read_bytes))
    return FrameFolder(entries, fps, limits)


def folder_from_zip(path: Path, fps: float | None, limits: FrameLimits) -> FrameFolder:
    """A zip of a MOT sequence (``img1/`` and maybe ``seqinfo.ini``) or of bare frames. Entries
    are read one at a time, only for frames with boxes; names are never used as paths."""
    try:
        archive = zipfile.ZipFile(path)
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ApiError(400, "bad_archive", f"archive is not a readable zip file: {exc}") from exc
    images = [
        info
        for info in infos
        if not info.is_dir()
        and not info.filename.startswith("__MACOSX/")
        and not PurePosixPath(info.filename).name.startswith(".")
        and info.filename.lower().endswith(IMAGE_SUFFIXES)
    ]
    in_img1 = [info for info in images if "img1" in PurePosixPath(info.filename).parts[:-1]]
    images = in_img1 or images
    fps = fps or _seqinfo_fps(archive, infos)
    budget = limits.max_zip_uncompressed_bytes
    entries = []
    for info in images:
        number = frame_number(info.filename)
        if number is None:
            raise ApiError(
                400, "unnumbered_frame", f"archive entry {info.filename!r} has no frame number"
            )
        if info.file_size > budget:
            raise ApiError(
                413,
                "frame_too_large",
                f"archive entry {info.filename!r} inflates to {info.file_size} bytes, more "
                f"than {budget} (REID_MAX_ZIP_UNCOMPRESSED_BYTES)",
            )
        entries.append(_Entry(number, info.filename, _zip_reader(archive, info)))
    return FrameFolder(entries, fps, limits, archive)


def _zip_reader(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            with archive.open(info) as stream:
                data = stream.read(info.file_size + 1)
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as exc:
            raise ApiError(
                400, "bad_archive", f"archive entry {info.filename!r} cannot be read: {exc}"
            ) from exc
        if len(data) > info.file_size:
            raise ApiError(
                400, "bad_archive", f"archive entry {info.filename!r} inflates beyond its size"
            )
        return data

    return read


def _seqinfo_fps(archive: zipfile.ZipFile, infos: Sequence[zipfile.ZipInfo]) -> float | None:
    """MOT's ``seqinfo.ini`` says ``frameRate=30``; None when there is none or it is bad."""
    info = next((i for i in infos if PurePosixPath(i.filename).name == "seqinfo.ini"), None)
    if info is None or info.file_size > 64 * 1024:
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read_string(archive.read(info).decode("utf-8", "replace"))
        rate = float(parser.get("Sequence", "frameRate"))
    except (configparser.Error, ValueError, zipfile.BadZipFile, OSError):
        return None
    return rate if math.isfinite(rate) and rate > 0 else None


# ------------------------------------------------------------------------------------- cutting


FrameSource = VideoFile | FrameFolder


def cut_tracklets(
    source: FrameSource,
    plans: Sequence[TrackPlan],
    what: str,
    on_frame: Callable[[int], None] | None = None,
) -> Iterator[tuple[TrackPlan, list[np.ndarray]]]:
    """Decode frames in order up to the last planned box and yield each track's RGB crops
    (``CROP_SHAPE``) as soon as its last box is cut. Only frames holding a planned box are
    converted and cropped; decoding stops after the last one.

    Raises :class:`ApiError` ``frame_past_end`` when the frames run out before a box's frame.
    """
    if not plans:
        return
    by_frame: dict[int, list[tuple[int, Box]]] = {}
    for index, plan in enumerate(plans):
        for box in plan.boxes:
            by_frame.setdefault(box.frame, []).append((index, box))
    ends: dict[int, list[int]] = {}
    for index, plan in enumerate(plans):
        ends.setdefault(plan.boxes[-1].frame, []).append(index)
    last = max(by_frame)
    crops: dict[int, list[np.ndarray]] = {}
    reached = 0
    for number, frame in source.frames(last, set(by_frame)):
        reached = number
        if frame is not None:
            for index, box in by_frame.get(number, ()):
                crop = cut_crop(frame, box)
                if source.bgr:
                    crop = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB)
                crops.setdefault(index, []).append(crop)
        for index in ends.get(number, ()):
            yield plans[index], crops.pop(index)
        if on_frame is not None:
            on_frame(number)
    if reached < last:
        index, box = by_frame[min(f for f in by_frame if f > reached)][0]
        raise frame_past_end(plans[index].track.track_id, box, reached, what)
