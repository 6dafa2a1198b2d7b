"""What the benchmark parts share: the run's settings, a scratch folder, the exported model and
a timing loop."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.backends import BACKENDS as GALLERY_BACKENDS

#: Gallery sizes of a full run; ``--sizes`` overrides them.
FULL_GALLERY_SIZES = (10_000, 100_000, 1_000_000)
QUICK_GALLERY_SIZES = (300, 1_000)
FULL_ENCODER_SHAPES = ((1, 16), (32, 16), (8, 128))
QUICK_ENCODER_SHAPES = ((1, 4), (2, 4))
FULL_CONCURRENCY = (1, 8, 32)
QUICK_CONCURRENCY = (1, 2)
VARIANTS = ("astpn", "atpn", "aspn", "rnncnn")
#: What ``--backends`` may name: the service's gallery backends, and ``faiss-hnsw``, the faiss
#: backend with its approximate index (REID_FAISS_INDEX=hnsw, default parameters).
BACKENDS = (*GALLERY_BACKENDS, "faiss-hnsw")
HNSW_CASE = "faiss-hnsw"


def backend_case(name: str) -> tuple[str, dict[str, Any]]:
    """A ``--backends`` name -> (the service's backend name, its gallery options)."""
    if name == HNSW_CASE:
        from service.faiss_index import FaissIndexConfig

        return "faiss", {"index": FaissIndexConfig(kind="hnsw")}
    return name, {}


@dataclass
class BenchConfig:
    """Every knob of a run. ``quick`` only chooses the defaults; the CLI may override each."""

    quick: bool = False
    workdir: Path = Path(".")
    progress: bool = True
    seed: int = 0
    #: The model the served parts (http, query, video) run: "shipped" (the service's default
    #: model), "paper" (the paper-sized network, randomly initialised) or an exported .onnx path.
    model: str = "shipped"
    # encoder
    encoder_shapes: Sequence[tuple[int, int]] = FULL_ENCODER_SHAPES
    min_seconds: float = 3.0  # per timed configuration
    # gallery
    gallery_sizes: Sequence[int] = FULL_GALLERY_SIZES
    backends: Sequence[str] = ("faiss", HNSW_CASE)
    # Largest gallery measured per backend, e.g. {"milvus": 100_000}: Milvus Lite holds the
    # whole collection in memory, more than a small machine has at 1M.
    backend_max_sizes: dict[str, int] = field(default_factory=dict)
    gallery_queries: int = 200
    gallery_budget_s: float = 60.0  # per timed search measurement of one backend and size
    index_comparison: bool = True  # the raw FAISS exact vs HNSW vs IVF table
    rerank_rows: bool = True  # search rows with pair re-scoring (they export a model)
    # http
    http_gallery_size: int = 100_000
    concurrency: Sequence[int] = FULL_CONCURRENCY
    http_seconds: float = 20.0
    http_warmup_seconds: float = 3.0
    # training
    variants: Sequence[str] = VARIANTS
    train_iterations: int = 12
    train_identities: int = 16

    @classmethod
    def defaults(cls, quick: bool, workdir: Path) -> BenchConfig:
        if not quick:
            return cls(quick=False, workdir=workdir)
        return cls(
            quick=True,
            workdir=workdir,
            encoder_shapes=QUICK_ENCODER_SHAPES,
            min_seconds=0.0,
            gallery_sizes=QUICK_GALLERY_SIZES,
            gallery_queries=20,
            http_gallery_size=300,
            concurrency=QUICK_CONCURRENCY,
            http_seconds=0.5,
            http_warmup_seconds=0.2,
            # The two ends of the ablation (SPP + attention, neither): every code path, half
            # the time.
            variants=("astpn", "rnncnn"),
            train_iterations=1,
            train_identities=4,
        )


@dataclass
class Context:
    """State shared by the parts of one run: created lazily, so a single part only pays for
    what it uses."""

    config: BenchConfig
    _model_path: Path | None = field(default=None, repr=False)

    def model_path(self) -> Path:
        """A randomly initialised ASTPN exported with its card by ``training.export`` (the
        shipped model's code path). Weights do not change the speed, so no trained model is
        needed, and a fresh export always matches the running preprocessing."""
        if self._model_path is None:
            import torch

            from model.network import ASTPN
            from training.export import export_onnx

            torch.manual_seed(self.config.seed)
            network = ASTPN(variant="astpn", num_identities=0).eval()
            directory = self.config.workdir / "model"
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / "astpn-bench.onnx"
            export_onnx(network, path, name="astpn-bench", version="bench-random-1")
            self._model_path = path
        return self._model_path

    def served_model_path(self) -> Path:
        """The model the served parts run (``--model``): the shipped default unless told."""
        if self.config.model == "paper":
            return self.model_path()
        if self.config.model == "shipped":
            from service.settings import DEFAULT_MODEL_PATH

            return DEFAULT_MODEL_PATH
        return Path(self.config.model)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@dataclass(frozen=True)
class Timing:
    """Wall times (seconds) of repeated calls."""

    samples: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.samples, q))

    def as_dict(self) -> dict[str, Any]:
        return {
            "runs": len(self.samples),
            "median_s": self.median,
            "p95_s": self.percentile(95),
            "min_s": min(self.samples),
        }


def time_calls(
    fn: Callable[[], object],
    *,
    min_seconds: float,
    min_runs: int = 3,
    max_runs: int = 10_000,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> Timing:
    """Call ``fn`` until both ``min_runs`` calls and ``min_seconds`` have passed.

    The median is what the tables report: on a shared machine the mean is pulled up by other
    jobs' bursts, and the minimum flatters. ``sync`` waits for asynchronous work (CUDA) so each
    sample covers the work it started.
    """
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_runs and (
        len(samples) < min_runs or time.perf_counter() - started < min_seconds
    ):
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        samples.append(time.perf_counter() - t0)
    return Timing(samples)


def ms(seconds: float) -> float:
    return seconds * 1e3
