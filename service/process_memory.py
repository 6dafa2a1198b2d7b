"""How the process's C allocator keeps memory: glibc gives each thread that contends for the
heap an arena of its own (up to 8 per core), and every arena keeps its own peak. A service whose
worker threads take turns decoding and preprocessing large requests then holds the sum of those
peaks: under 8 concurrent batch attacks, 571 MiB over idle with glibc's default against 372 MiB
with two arenas (docs/service.md, "Limits and hostile input").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at ``arenas`` (0: leave glibc's default). Call before worker
    threads allocate. Returns whether the cap is in force (False off glibc)."""
    if arenas <= 0:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        log.info("not glibc: REID_MALLOC_ARENAS has no effect")
        return False
