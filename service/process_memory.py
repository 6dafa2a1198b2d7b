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
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
ARENAS = 2
MMAP_THRESHOLD = 128 * 1024


def tune_malloc() -> bool:
    """Cap glibc's arenas and fix its mmap threshold; call before worker threads allocate.
    Returns whether both took effect (False off glibc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, ARENAS)) and bool(
            libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        )
    except (OSError, AttributeError):
        log.info("not glibc: REID_MALLOC_TUNING has no effect")
        return False
