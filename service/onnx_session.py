"""ONNX Runtime sessions as the service runs them: CUDA when asked for and offered, and a CPU
memory arena that keeps what ordinary calls need and never grows far past it.

Why the arena policy: without ONNX Runtime's CPU arena every intermediate tensor of every call is
a fresh allocation, and with the malloc tuning (a 128 KiB mmap threshold,
:mod:`service.process_memory`) the large ones are fresh mappings whose pages fault in again on each
call: a 16-frame tracklet of the default model took 30 ms instead of 18 ms in process. With
the arena always kept, one 1,024-frame batch left the process 1.7 GiB larger for good. So the
arena is on, batches are split into calls of at most ``arena_frames`` frames, and the one call
that can be larger (a single tracklet longer than that) shrinks the arena back afterwards
(``memory.enable_memory_arena_shrinkage``).

Why no spinning by default: ONNX Runtime's idle intra-op threads otherwise spin for work after
each call, and each session (the encoder's, the pair scorer's) has its own. On two cores they took
the CPU from the next request's decoding and from the other session: the network's stage of a
served query took 27.8 ms against 19.4 ms for the same call alone in a process, and 21.3 against
20.8 without spinning (``python -m bench query``, docs/benchmarks-query.md).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: Frames of an ONNX call after which the CPU arena is shrunk back (REID_ORT_ARENA_FRAMES).
DEFAULT_ARENA_FRAMES = 64
_SHRINK_KEY = "memory.enable_memory_arena_shrinkage"
_SPIN_KEY = "session.intra_op.allow_spinning"


class ModelLoadError(RuntimeError):
    """The model cannot be served; the message says why and what to do."""


class ArenaPolicy:
    """When a call gives ONNX Runtime's CPU arena back: after calls on more than ``frames``
    frames (0: there is no arena, every call allocates afresh)."""

    def __init__(self, frames: int = DEFAULT_ARENA_FRAMES) -> None:
        if frames < 0:
            raise ValueError("arena frames must be >= 0")
        import onnxruntime as ort  # here, so that the settings can name the default cheaply

        self.frames = frames
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry(_SHRINK_KEY, "cpu:0")

    @property
    def enabled(self) -> bool:
        return self.frames > 0

    def calls(self, members: list[int], length: int) -> list[list[int]]:
        """``members`` (tracklets of ``length`` embedded frames each) split into ONNX calls of
        at most ``frames`` frames, one tracklet per call at least. Tracklets of a batch are
        independent, so the split changes no result; it keeps the arena at the size of an
        ordinary call (a 256-frame call grew the process 140 MiB more with the arena than
        without: its regions grow by doubling)."""
        if not self.enabled:
            return [members]
        per_call = max(1, self.frames // length)
        return [members[i : i + per_call] for i in range(0, len(members), per_call)]

    def run_options(self, frames: int) -> ort.RunOptions | None:
        """The options of a call on ``frames`` frames (None: keep the arena as it is)."""
        return self._shrink if self.enabled and frames > self.frames else None


def open_session(
    path: Path,
    use_cuda: bool,
    intra_op_threads: int = 0,
    arena: ArenaPolicy | None = None,
    spin: bool = False,
) -> ort.InferenceSession:
    """An ONNX Runtime session on CUDA when asked for and offered, else on the CPU; a CUDA
    session that silently fell back to the CPU is logged. ``arena`` None: no CPU arena (the
    training tools keep one and never shrink it: their process ends). ``spin``: idle intra-op
    threads spin for work."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena is not None and arena.enabled
    if not spin:
        options.add_session_config_entry(_SPIN_KEY, "0")
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    providers = [CPU]
    if use_cuda and CUDA in ort.get_available_providers():
        providers = [CUDA, CPU]
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # ONNX Runtime raises its own untyped errors
        raise ModelLoadError(f"ONNX Runtime cannot load {path}: {exc}") from exc
    if providers[0] == CUDA and session.get_providers()[0] != CUDA:
        # The wheel offers CUDA, but the session could not get it (driver, libraries).
        log.warning(
            "CUDAExecutionProvider is available but the session for %s fell back to %s; "
            "check the CUDA/cuDNN libraries ONNX Runtime needs",
            path.name,
            session.get_providers()[0],
        )
    return session
