"""How the process's C allocator keeps memory. Two glibc defaults make a service that decodes
and preprocesses large requests in worker threads hold far more than it uses:

* each thread that contends for the heap gets an arena of its own (up to 8 per core), and every
  arena keeps its own peak;
* the threshold above which an allocation gets its own mapping (returned to the system when
  freed) rises to the size of any such block freed, up to 32 MiB: after the first large request,
  frames, base64 strings and NumPy arrays come from the heap, which fragments and keeps growing.

With ``REID_MALLOC_TUNING`` (the default) the service caps the arenas at 2 and fixes the mmap
threshold at 128 KiB and the trim threshold at 32 MiB. History, all from bench/attack.py and
``python -m bench query`` (docs/service.md, "Limits and hostile input" and "Speed settings"):
three 67 MB JSON queries in a row left 503 MiB over the idle server without the threshold fixed,
354 MiB with it fixed at 128 KiB. While ONNX Runtime's arena was off, every tensor over 128 KiB
was a fresh mapping faulting its pages in on each call (a 16-frame query's network took 42 ms
served against 25 in a plain process), so the threshold was raised to 4 MiB; but then the 255
frames and base64 strings of a 67 MB query fragment the heap, and that attack reached 578-665
MiB over idle, past the 600 MiB bound (it failed CI once). With the arena on
(:mod:`service.onnx_session`) 128 KiB costs no measurable time: a served 16-frame query took
31.4-34 ms p50 at 128 KiB and 32.7-41.4 ms at 4 MiB, in alternating runs.
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
MMAP_THRESHOLD = 128 * 1024
# Fixing the mmap threshold also fixes the trim threshold at glibc's 128 KiB: the heap would then
# hand its top back after nearly every request and fault the same pages in again on the next.
# (In small in-process experiments with a 4 MiB mmap threshold, decoding and preprocessing a
# 16-frame query took 4.1-5.9 ms with glibc's trim threshold, 2.7-4.3 ms with this one.)
TRIM_THRESHOLD = 32 * 1024 * 1024


def tune_malloc() -> bool:
    """Cap glibc's arenas and fix its mmap and trim thresholds; call before worker threads
    allocate. Returns whether all three took effect (False off glibc)."""
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
