"""How the process's C allocator keeps memory. Two glibc defaults make a service that decodes
and preprocesses large requests in worker threads hold far more than it uses:

* each thread that contends for the heap gets an arena of its own (up to 8 per core), and every
  arena keeps its own peak;
* the threshold above which an allocation gets its own mapping (returned to the system when
  freed) rises to the size of any such block freed, up to 32 MiB: after the first large request,
  frames, base64 strings and NumPy arrays come from the heap, which fragments and keeps growing.

With ``REID_MALLOC_TUNING`` (the default) the service caps the arenas at 2 and fixes the mmap
threshold at 4 MiB and the trim threshold at 32 MiB. History, all from bench/attack.py and
``python -m bench query`` (docs/service.md, "Limits and hostile input" and "Speed settings"):
three 67 MB JSON queries in a row left 503 MiB over the idle server without the threshold fixed,
354 MiB with it fixed at 128 KiB; but at 128 KiB every array over 128 KiB was a fresh mapping
whose pages fault in on every request (0.5 ms a MB here: a 16-frame query's preprocessing took
9.1 ms served against 1.2 ms in a plain process). At 4 MiB, with ONNX Runtime's arena split
into 64-frame calls (:mod:`service.onnx_session`), the whole attack suite peaked at 478 MiB over
the idle server (the bound is 600) and that preprocessing takes 0.9 ms. 128 KiB was not
measured again with the split arena.
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
# In small in-process experiments, decoding and preprocessing a 16-frame query took 4.1-5.9 ms
# with the mmap threshold at 4 MiB alone, 2.7-4.3 ms with this trim threshold too.
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
