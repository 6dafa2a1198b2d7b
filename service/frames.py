"""Turning uploaded bytes into RGB frames, with every limit checked before memory is spent.

Three ways frames arrive: multipart files (in upload order), one zip archive (ordered by entry
name, numerically: ``2.png`` before ``10.png``), or base64 strings in JSON. All of them end in
:func:`decode_frames`, which reads each image's header first (PNG ``IHDR``, JPEG ``SOFn``) and
refuses one that declares too many pixels *before* OpenCV allocates anything, so an image that
claims 60000 x 60000 costs nothing; then its data is checked against that header
(:mod:`service.image_data`) before OpenCV decodes it. Archives are read in memory only: entry
names order the frames and are never used as paths, and their entries are counted from the
central directory (:mod:`service.zip_directory`) before ``zipfile`` parses it.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import struct
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from service.image_data import check_image_data
from service.schemas import ApiError
from service.settings import Settings
from service.zip_directory import BadDirectory, directory_totals

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
# SOFn markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})
_ZIP_CHUNK = 64 * 1024
_DATA_URL = re.compile(r"^data:[^,]{0,100};base64,", re.IGNORECASE)


@dataclass(frozen=True)
class FrameLimits:
    """The limits that apply to one tracklet's frames."""

    max_frames: int
    max_pixels: int
    max_side: int
    max_total_pixels: int
    allowed_formats: frozenset[str]
    max_zip_entries: int
    max_zip_uncompressed_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> FrameLimits:
        return cls(
            max_frames=settings.max_frames_per_tracklet,
            max_pixels=settings.max_pixels_per_frame,
            max_side=settings.max_frame_side,
            max_total_pixels=settings.max_pixels_per_tracklet,
            allowed_formats=frozenset(settings.allowed_formats),
            max_zip_entries=settings.max_zip_entries,
            max_zip_uncompressed_bytes=settings.max_zip_uncompressed_bytes,
        )


@dataclass(frozen=True)
class EncodedFrame:
    """One uploaded image, still encoded. ``label`` names it in error messages."""

    label: str
    data: bytes


@dataclass(frozen=True)
class CheckedFrame:
    """A frame whose header passed :func:`check_frame`: its format and declared size."""

    frame: EncodedFrame
    fmt: str
    width: int
    height: int

    @property
    def pixels(self) -> int:
        return self.width * self.height


def check_frame_count(count: int, limits: FrameLimits) -> None:
    if count == 0:
        raise ApiError(
            400,
            "no_frames",
            "the tracklet has no frames: send multipart files named 'frames', one zip file "
            "named 'archive', or a JSON body with a 'frames' list of base64 images",
        )
    if count > limits.max_frames:
        raise ApiError(
            413,
            "too_many_frames",
            f"the tracklet has {count} frames, more than the limit of {limits.max_frames} "
            "(REID_MAX_FRAMES_PER_TRACKLET): split it or subsample it",
        )


def sniff_format(data: bytes) -> str | None:
    """The image format from its magic bytes (never from a file name or declared type)."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SIGNATURE):
        return "jpeg"
    return None


def _png_size(data: bytes, label: str) -> tuple[int, int]:
    # Signature (8), then the first chunk must be IHDR: length (4), type (4), width, height.
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ApiError(400, "corrupt_image", f"{label}: PNG without an IHDR header")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def _jpeg_size(data: bytes, label: str) -> tuple[int, int]:
    pos = 2  # after SOI
    end = len(data)
    while pos < end:
        if data[pos] != 0xFF:
            raise ApiError(400, "corrupt_image", f"{label}: JPEG marker stream is corrupt")
        while pos < end and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):  # end of image or start of scan before any frame header
            break
        if pos + 2 > end:
            break
        (length,) = struct.unpack(">H", data[pos : pos + 2])
        if length < 2:
            raise ApiError(400, "corrupt_image", f"{label}: JPEG segment with a bad length")
        if marker in _JPEG_SOF_MARKERS:
            if pos + 7 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 3 : pos + 7])
            return width, height
        pos += length
    raise ApiError(400, "corrupt_image", f"{label}: JPEG without a frame header (truncated?)")


def image_size(data: bytes, fmt: str, label: str = "frame") -> tuple[int, int]:
    """(width, height) as declared by the image header, without decoding any pixel."""
    return _png_size(data, label) if fmt == "png" else _jpeg_size(data, label)


def _check_complete(data: bytes, fmt: str, label: str) -> None:
    """Refuse truncated files: decoders fill a cut-off JPEG with grey instead of failing."""
    if fmt == "jpeg":
        complete = data.rstrip(b"\x00\r\n\t ").endswith(b"\xff\xd9")
    else:
        complete = len(data) >= 12 and data[-8:-4] == b"IEND"
    if not complete:
        raise ApiError(
            400,
            "truncated_image",
            f"{label}: the {fmt.upper()} data ends before its end marker; the upload was cut off "
            "or the file is damaged: send the complete file",
        )


def check_frame(frame: EncodedFrame, limits: FrameLimits) -> tuple[str, int, int]:
    """Format and declared size of one frame; raises :class:`ApiError` on any violation."""
    fmt = sniff_format(frame.data)
    if fmt is None:
        raise ApiError(
            415,
            "unsupported_format",
            f"{frame.label} is not a JPEG or PNG image (checked by its first bytes); "
            f"accepted formats: {', '.join(sorted(limits.allowed_formats))}",
        )
    if fmt not in limits.allowed_formats:
        raise ApiError(
            415,
            "unsupported_format",
            f"{frame.label} is a {fmt.upper()} image; this server accepts only "
            f"{', '.join(sorted(limits.allowed_formats))} (REID_ALLOWED_FORMATS)",
        )
    width, height = image_size(frame.data, fmt, frame.label)
    if width == 0 or height == 0:
        raise ApiError(400, "corrupt_image", f"{frame.label}: the header declares an empty image")
    if width > limits.max_side or height > limits.max_side or width * height > limits.max_pixels:
        raise ApiError(
            413,
            "frame_too_large",
            f"{frame.label} is {width}x{height} pixels; the limit is {limits.max_pixels} pixels "
            f"(REID_MAX_PIXELS_PER_FRAME) and {limits.max_side} per side "
            "(REID_MAX_FRAME_SIDE): send person crops, not full camera frames",
        )
    _check_complete(frame.data, fmt, frame.label)
    return fmt, width, height


def decode_checked(checked: CheckedFrame) -> np.ndarray:
    """A checked frame -> RGB uint8 (H, W, 3), its data first checked against its header.
    Grey and RGBA images become RGB."""
    frame = checked.frame
    check_image_data(frame.data, checked.fmt, frame.label)
    buffer = np.frombuffer(frame.data, dtype=np.uint8)
    try:
        # IMREAD_COLOR gives 8-bit BGR for grey, RGBA and 16-bit inputs alike.
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ApiError(400, "corrupt_image", f"{frame.label} could not be decoded: {exc}") from exc
    if bgr is None or bgr.ndim != 3 or bgr.shape[0] * bgr.shape[1] != checked.pixels:
        raise ApiError(400, "corrupt_image", f"{frame.label} could not be decoded (damaged image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def decode_frame(frame: EncodedFrame, limits: FrameLimits) -> np.ndarray:
    """One image -> RGB uint8 (H, W, 3), every check included."""
    return decode_checked(CheckedFrame(frame, *check_frame(frame, limits)))


def check_frames(frames: Sequence[EncodedFrame], limits: FrameLimits) -> list[CheckedFrame]:
    """Every header checked, and their pixels summed, before anything is decoded: a bad last
    frame costs no decoding, and the total is what admission control reserves."""
    check_frame_count(len(frames), limits)
    checked = [CheckedFrame(frame, *check_frame(frame, limits)) for frame in frames]
    total = sum(item.pixels for item in checked)
    if total > limits.max_total_pixels:
        # Frames are decoded whole before preprocessing shrinks them, so the sum is what a
        # request costs in memory; tiny, highly compressible PNGs could otherwise claim gigabytes.
        raise ApiError(
            413,
            "tracklet_too_large",
            f"the tracklet's frames hold {total} pixels in all, more than the limit of "
            f"{limits.max_total_pixels} (REID_MAX_PIXELS_PER_TRACKLET): send smaller crops "
            "or fewer frames",
        )
    return checked


def decode_frames(frames: Sequence[EncodedFrame], limits: FrameLimits) -> list[np.ndarray]:
    """Check every header first, then decode."""
    return [decode_checked(item) for item in check_frames(frames, limits)]


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key ordering ``frame2`` before ``frame10``."""
    parts = re.split(r"(\d+)", name.lower())
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in parts if part)


def _unsafe_name(name: str) -> bool:
    normalized = name.replace("\\", "/")
    return (
        normalized.startswith("/")
        or re.match(r"^[A-Za-z]:", normalized) is not None
        or ".." in normalized.split("/")
        or "\x00" in normalized
    )


def _ignored_entry(info: zipfile.ZipInfo) -> bool:
    """Directories and operating-system litter (``__MACOSX/``, ``.DS_Store``) are not frames."""
    parts = info.filename.replace("\\", "/").split("/")
    return info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith(".")


def read_zip(data: bytes, limits: FrameLimits) -> list[EncodedFrame]:
    """The image entries of a zip archive, in natural name order, read in memory.

    Sizes are checked twice: the declared sizes before reading anything, then the bytes actually
    inflated, entry by entry, so a header that lies about its size cannot exhaust memory.
    """
    _check_directory(data, limits)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        infos = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, OSError, EOFError) as exc:
        raise ApiError(400, "bad_archive", f"archive is not a readable zip file: {exc}") from exc
    for info in infos:
        if _unsafe_name(info.filename):
            raise ApiError(
                400,
                "unsafe_archive_path",
                f"archive entry {info.filename!r} is an absolute path or climbs out with '..': "
                "zip the frames with plain relative names",
            )
    entries = [info for info in infos if not _ignored_entry(info)]
    check_frame_count(len(entries), limits)
    budget = limits.max_zip_uncompressed_bytes
    entries.sort(key=lambda info: natural_key(info.filename))

    frames: list[EncodedFrame] = []
    inflated = 0
    for info in entries:
        if info.flag_bits & 0x1:
            raise ApiError(400, "bad_archive", f"archive entry {info.filename!r} is encrypted")
        content = bytearray()
        try:
            with archive.open(info) as stream:
                while chunk := stream.read(_ZIP_CHUNK):
                    content += chunk
                    inflated += len(chunk)
                    if inflated > budget:
                        raise _archive_too_large(inflated, budget)
                    if len(content) > info.file_size:
                        raise ApiError(
                            400,
                            "bad_archive",
                            f"archive entry {info.filename!r} inflates beyond its declared size",
                        )
        except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError, ValueError) as exc:
            raise ApiError(
                400, "bad_archive", f"archive entry {info.filename!r} cannot be read: {exc}"
            ) from exc
        frames.append(EncodedFrame(label=f"archive entry {info.filename!r}", data=bytes(content)))
    return frames


def _check_directory(data: bytes, limits: FrameLimits) -> None:
    """Entry count and declared sizes, from the central directory, before ``zipfile`` parses
    it (and builds one object per entry, however many there are)."""
    try:
        totals = directory_totals(data, limits.max_zip_entries)
    except BadDirectory as exc:
        raise ApiError(400, "bad_archive", f"archive is not a readable zip file: {exc}") from exc
    if totals.entries > limits.max_zip_entries:
        raise ApiError(
            413,
            "archive_too_many_entries",
            f"archive has more than {limits.max_zip_entries} entries, the limit "
            "(REID_MAX_ZIP_ENTRIES)",
        )
    if totals.declared_bytes > limits.max_zip_uncompressed_bytes:
        raise _archive_too_large(totals.declared_bytes, limits.max_zip_uncompressed_bytes)


def _archive_too_large(size: int, budget: int) -> ApiError:
    return ApiError(
        413,
        "archive_too_large",
        f"archive inflates to at least {size} bytes, more than the limit of {budget} bytes "
        "(REID_MAX_ZIP_UNCOMPRESSED_BYTES)",
    )


def decode_base64_frames(items: Sequence[str], limits: FrameLimits) -> list[EncodedFrame]:
    """Base64 strings (optionally ``data:image/...;base64,`` URLs) -> encoded frames."""
    check_frame_count(len(items), limits)
    frames = []
    for index, item in enumerate(items):
        # Line-wrapped base64 (the `base64` tool wraps at 76 columns) is accepted.
        text = "".join(_DATA_URL.sub("", item.strip(), count=1).split())
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ApiError(
                400, "bad_base64", f"frames[{index}] is not valid base64 ({exc})"
            ) from exc
        frames.append(EncodedFrame(label=f"frames[{index}]", data=data))
    return frames
