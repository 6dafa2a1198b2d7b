"""A zip archive's entry count and declared sizes, read from its central directory by walking
the fixed-size headers, before ``zipfile`` parses anything.

``zipfile.ZipFile`` builds an object for every entry of the central directory when it opens an
archive: a 61 MB zip of 700,000 empty entries took 10 s and 300 MB before the entry limit could
even be applied. This walk stops one entry past the limit, so a request costs at most
``REID_MAX_ZIP_ENTRIES`` header reads, and it sums the uncompressed sizes the entries declare so
that an archive too large to inflate is refused before any entry is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_EOCD = b"PK\x05\x06"
_ZIP64_LOCATOR = b"PK\x06\x07"
_ZIP64_EOCD = b"PK\x06\x06"
_CENTRAL = b"PK\x01\x02"
_EOCD_SIZE = 22
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD_SIZE = 56
_CENTRAL_SIZE = 46
_MAX_COMMENT = 0xFFFF
#: A 32-bit size field holding this means "see the zip64 extra field": more than 4 GiB.
_ZIP64_MARK = 0xFFFFFFFF


class BadDirectory(ValueError):
    """The central directory cannot be found or read."""


@dataclass(frozen=True)
class DirectoryTotals:
    entries: int  # counted, and never past the limit + 1
    declared_bytes: int  # uncompressed sizes of the counted entries


def _find_eocd(data: bytes) -> int:
    """Where the end-of-central-directory record starts, found the way ``zipfile`` finds it:
    at the very end when the archive has no comment, else the last signature in the final
    64 KiB."""
    tail = len(data) - _EOCD_SIZE
    if tail >= 0 and data[tail : tail + 4] == _EOCD and data[-2:] == b"\0\0":
        return tail
    eocd = data.rfind(_EOCD, max(0, tail - _MAX_COMMENT))
    if eocd < 0 or eocd + _EOCD_SIZE > len(data):
        raise BadDirectory("no end-of-central-directory record (not a zip file, or cut off)")
    return eocd


def _directory_span(data: bytes) -> tuple[int, int]:
    """(offset, size) of the central directory: like ``zipfile``, it is taken to end where the
    end record (or the zip64 end record before it) begins."""
    end = _find_eocd(data)
    (size,) = struct.unpack_from("<L", data, end + 12)
    locator = end - _ZIP64_LOCATOR_SIZE
    if locator >= 0 and data[locator : locator + 4] == _ZIP64_LOCATOR:
        end = locator - _ZIP64_EOCD_SIZE
        if end < 0 or data[end : end + 4] != _ZIP64_EOCD:
            raise BadDirectory("a zip64 locator without its zip64 end record")
        (size,) = struct.unpack_from("<Q", data, end + 40)
    start = end - size
    if start < 0:
        raise BadDirectory("the central directory's declared size runs past the start of the file")
    return start, size


def directory_totals(data: bytes, max_entries: int) -> DirectoryTotals:
    """Count the central directory's entries (stopping at ``max_entries + 1``) and add up the
    uncompressed sizes they declare."""
    start, size = _directory_span(data)
    pos, end = start, start + size
    entries = declared = 0
    while pos < end and entries <= max_entries:
        if data[pos : pos + 4] != _CENTRAL or pos + _CENTRAL_SIZE > end:
            raise BadDirectory(f"central directory entry {entries} is corrupt")
        (uncompressed,) = struct.unpack_from("<L", data, pos + 24)
        name, extra, comment = struct.unpack_from("<HHH", data, pos + 28)
        # A zip64 size is at least 4 GiB: counting it as that refuses it as surely.
        declared += uncompressed if uncompressed != _ZIP64_MARK else 1 << 32
        pos += _CENTRAL_SIZE + name + extra + comment
        entries += 1
    return DirectoryTotals(entries, declared)
