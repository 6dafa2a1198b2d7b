"""An image's data checked against what its header declares, before the real decoder runs.

Headers are checked first (:func:`service.frames.check_frame`): they bound what a frame may
*claim*. These checks bound what its data may *do*:

* **PNG**: the pixel data (the IDAT chunks, one deflate stream) must inflate to exactly the size
  the header implies (rows of filter byte + pixels, per Adam7 pass when interlaced). OpenCV's
  decoder inflates the whole stream whatever the header says: a 10 x 10 PNG carrying 1.2 GB of
  compressed zeros took 3.4 s to accept. Here inflation stops one byte past the declared size,
  output discarded as it comes, so such a file costs its declared size and no more.
* **JPEG**: the scans must decode without a single warning (libjpeg-turbo in strict mode, at 1/8
  scale, so the check costs a fraction of the decode). Decoders fill a cut-off scan with grey
  and carry on, even when the cut is hidden by an end-of-image marker appended to the file; data
  between the last scan and that marker is refused for the same reason.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import simplejpeg

from service.schemas import ApiError

_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x0, y0, dx, dy).
_ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)
_INFLATE_STEP = 1 << 16


def _corrupt(label: str, why: str) -> ApiError:
    return ApiError(400, "corrupt_image", f"{label}: {why}")


def _truncated(label: str, fmt: str, why: str) -> ApiError:
    return ApiError(
        400,
        "truncated_image",
        f"{label}: the {fmt} data is incomplete ({why}); the upload was cut off or the file "
        "is damaged: send the complete file",
    )


def png_raw_size(
    width: int, height: int, bit_depth: int, colour_type: int, interlaced: bool
) -> int:
    """Bytes the pixel data inflates to: each row is a filter byte plus its packed pixels."""
    bits = _PNG_CHANNELS[colour_type] * bit_depth

    def rows(w: int, h: int) -> int:
        return h * (1 + (w * bits + 7) // 8) if w and h else 0

    if not interlaced:
        return rows(width, height)
    return sum(
        rows(
            (width - x0 + dx - 1) // dx if width > x0 else 0,
            (height - y0 + dy - 1) // dy if height > y0 else 0,
        )
        for x0, y0, dx, dy in _ADAM7
    )


def _png_chunks(data: bytes, label: str) -> Iterator[tuple[bytes, memoryview]]:
    view = memoryview(data)
    pos = 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        kind = bytes(view[pos + 4 : pos + 8])
        end = pos + 12 + length
        if end > len(data):
            raise _truncated(label, "PNG", f"the {kind.decode('latin-1')!r} chunk is cut off")
        yield kind, view[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            return
        pos = end
    raise _truncated(label, "PNG", "no IEND chunk")


def _png_declared(data: bytes, label: str) -> int:
    width, height = struct.unpack_from(">II", data, 16)
    bit_depth, colour_type, _, _, interlace = data[24:29]
    if colour_type not in _PNG_CHANNELS or bit_depth not in (1, 2, 4, 8, 16):
        raise _corrupt(label, "PNG header with an invalid colour type or bit depth")
    return png_raw_size(width, height, bit_depth, colour_type, interlace == 1)


def check_png_data(data: bytes, label: str) -> None:
    """The IDAT stream inflates to exactly the size the header declares."""
    declared = _png_declared(data, label)
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for kind, chunk in _png_chunks(data, label):
            pending: bytes | memoryview = chunk if kind == b"IDAT" and not inflater.eof else b""
            while len(pending):
                produced += len(inflater.decompress(pending, _INFLATE_STEP))
                if produced > declared:
                    raise _corrupt(
                        label,
                        "the PNG's pixel data is larger than its header declares "
                        f"({declared} bytes): refused before decoding",
                    )
                pending = inflater.unconsumed_tail
    except zlib.error as exc:
        raise _corrupt(label, f"the PNG's pixel data cannot be inflated ({exc})") from exc
    if produced < declared:
        raise _truncated(label, "PNG", f"{produced} of {declared} bytes of pixel data")


def check_jpeg_data(data: bytes, label: str) -> None:
    """The JPEG decodes without a warning (a premature end, extraneous data, a corrupt scan)."""
    try:
        _, _, colourspace, _ = simplejpeg.decode_jpeg_header(data)
        # Grey is the cheapest output; CMYK files cannot be converted to it.
        target = "CMYK" if colourspace in ("CMYK", "YCCK") else "GRAY"
        simplejpeg.decode_jpeg(data, target, min_height=1, min_width=1, min_factor=8, strict=True)
    except ValueError as exc:
        why = str(exc).strip()
        if "premature end" in why.lower():
            raise _truncated(label, "JPEG", why) from exc
        raise _corrupt(label, f"the JPEG data is damaged ({why})") from exc


def check_image_data(data: bytes, fmt: str, label: str) -> None:
    """:func:`check_png_data` or :func:`check_jpeg_data`, by ``fmt``."""
    if fmt == "png":
        check_png_data(data, label)
    else:
        check_jpeg_data(data, label)
