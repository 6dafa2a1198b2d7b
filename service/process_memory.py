"""How the process's C allocator keeps memory. Two glibc defaults make a service that decodes
and preprocesses large requests in worker threads hold far more than it uses:

* each thread that contends for the heap gets an arena of its own (up to 8 per core), and every
  arena keeps its own peak;
* the threshold above which an allocation gets its own mapping (returned to the system when
  freed) rises to the size of any such block freed, up to 32 MiB: after the first large request,
  frames, base64 strings and NumPy arrays come from the heap, which fragments and keeps growing.

With ``REID_MALLOC_TUNING`` (the default) the service caps the arenas at 2 and fixes the
threshold at 128 KiB. Three 67 MB JSON queries in a row (bench/attack.py): 503 MiB over the
idle server without the threshold fixed, 354 MiB with it (docs/service.md, "Limits and hostile
input").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# glibc's mallopt parameter numbers (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 4 * 1024 * 1024
# Fixing the mmap threshold also fixes the trim threshold at glibc's 128 KiB: the heap would then
# hand its top back after nearly every request and fault the same pages in again on the next.
TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_malloc() -> bool:
    """Cap glibc's arenas and fix its mmap threshold; call before worker threads allocate.
    Returns whether both took effect (False off glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return all(
            libc.mallopt(parameter, value)
            for parameter, value in (
                (_M_ARENA_MAX, ARENAS),
                (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            )
        )
    except (OSError, AttributeError):
        log.info("not glibc: REID_MALLOC_TUNING has no effect")
        return False
