"""The FAISS indexes of the faiss gallery backend (:mod:`service.faiss_gallery`), chosen by
``REID_FAISS_INDEX``:

* ``exact`` (the default): ``IndexIDMap2`` over ``IndexFlatL2``. Every search scans every vector
  (62 ms at 1M tracklets on 2 CPUs, docs/benchmarks.md), answers are exact, deletes remove the
  vectors, and a GPU replica serves unfiltered searches when FAISS sees a GPU.
* ``hnsw``: ``IndexIDMap2`` over ``IndexHNSWFlat`` (M, efConstruction, efSearch from the
  settings). Chosen over IVF from the measurements of ``python -m bench gallery``: on clustered
  re-id embeddings IVF loses recall fast (recall@10 0.81 at 1M with nprobe=8) while HNSW keeps
  0.99 at efSearch=64 in 0.34 ms, needs no training (so no re-training as the gallery grows
  from empty) and accepts single adds at any time. It costs ~784 bytes per 128-d vector
  instead of 512 and a slower build.

Deletes and HNSW. FAISS's HNSW cannot remove a vector. Rather than rebuilding the graph at every
delete (a minute at 1M), a deleted id becomes a *tombstone*: its vector stays in the graph (it
still helps navigation) but unfiltered searches pass FAISS an ``IDSelectorNot`` over the
tombstones, so HNSW skips them while collecting its ``k`` results: no over-fetch or second round
is needed and a deleted tracklet is never returned. Filtered searches pass the allowed ids,
which come from SQLite and so never contain deleted rows. The graph is kept on disk between runs
(:mod:`service.hnsw_snapshot`), tombstones included; once they pass
:data:`TOMBSTONE_WARNING_SHARE` of it, the next start rebuilds the graph from SQLite (the source
of truth) with the live rows only. ``index_description`` (``/readyz``) says how many are waiting.

Filters and HNSW. A FAISS selector only filters HNSW's results, so a filter that keeps a small
share of the gallery would leave HNSW's ``efSearch`` candidates mostly filtered out. A filtered
search therefore scans the allowed vectors exactly when there are at most
:data:`EXACT_SUBSET_MAX` of them (a few milliseconds, and exact), and otherwise widens
``efSearch`` by the inverse of the share the filter keeps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Literal

import faiss
import numpy as np

log = logging.getLogger(__name__)

IndexKind = Literal["exact", "hnsw"]
INDEX_KINDS: tuple[str, ...] = ("exact", "hnsw")

#: Filtered HNSW searches over at most this many allowed vectors are answered by an exact scan
#: of those vectors (a flat scan of 50 000 128-d vectors takes ~2 ms on one core).
EXACT_SUBSET_MAX = 50_000
#: Above this share of tombstones the index description asks for a restart, which compacts.
TOMBSTONE_WARNING_SHARE = 0.25
#: OpenMP's threads when this module was imported (every core it may use), for rebuilds.
BUILD_THREADS = faiss.omp_get_max_threads()


@dataclass(frozen=True)
class FaissIndexConfig:
    """Which index the faiss gallery builds (``REID_FAISS_INDEX`` and its parameters)."""

    kind: IndexKind = "exact"
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 64
    #: OpenMP threads of FAISS once the index is built (process-wide: FAISS has no other knob).
    search_threads: int = 1

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"unknown FAISS index {self.kind!r}: use one of {INDEX_KINDS}")
        if self.search_threads < 1:
            raise ValueError("FAISS search threads must be at least 1")

    def use_search_threads(self) -> None:
        """Why one thread by default: a query searches one vector, and splitting that scan over
        OpenMP threads costs more than it gains (100k exact: 2.0 ms on one thread, 7.1 ms on
        two), while OpenMP's spinning threads take the CPU from the network: 8 concurrent
        clients got 20 queries/s with two threads, 43 with one (docs/service.md).

        OpenMP keeps the thread count per calling thread, and searches run in the service's
        worker threads, so every search sets it for its own thread (a cheap call)."""
        faiss.omp_set_num_threads(self.search_threads)


def use_build_threads() -> None:
    """Every thread OpenMP had when FAISS was imported, for this thread: a rebuild is parallel."""
    faiss.omp_set_num_threads(BUILD_THREADS)


Answer = tuple[np.ndarray, np.ndarray]  # squared distances (k,), ids (k,) with -1 past the end


def make_index(config: FaissIndexConfig, dim: int) -> ExactIndex | HnswIndex:
    if config.kind == "hnsw":
        return HnswIndex(dim, config)
    return ExactIndex(dim, config)


def gpu_resources() -> Any:
    """FAISS GPU resources when this FAISS build has GPU support and sees a GPU."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    try:
        return faiss.StandardGpuResources()
    except Exception:  # a broken driver must not stop the service: the CPU index works
        log.warning("FAISS sees a GPU but cannot use it; searching on the CPU", exc_info=True)
        return None


class ExactIndex:
    """``IndexIDMap2(IndexFlatL2)``, with a GPU replica for unfiltered searches. Not
    thread-safe: the gallery calls it under its lock."""

    def __init__(self, dim: int, config: FaissIndexConfig | None = None) -> None:
        self.config = config or FaissIndexConfig()
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatL2(dim))
        self._gpu = gpu_resources()
        self._gpu_index: Any = None  # a replica of the CPU index, rebuilt lazily after deletes

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._cpu.add_with_ids(vectors, ids)
        if self._gpu_index is not None:
            self._gpu_index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        self._cpu.remove_ids(faiss.IDSelectorBatch(np.asarray(ids, np.int64)))
        self._gpu_index = None

    def _search_index(self, filtering: bool) -> Any:
        """The GPU replica for unfiltered searches when there is a GPU (GPU flat indexes
        support neither ID selectors nor removal, so filtered searches and all mutations use
        the CPU index, and the replica is re-copied after a delete)."""
        if self._gpu is None or filtering:
            return self._cpu
        if self._gpu_index is None:
            try:
                self._gpu_index = faiss.index_cpu_to_gpu(self._gpu, 0, self._cpu)
            except Exception:
                log.warning("copying the index to the GPU failed; searching on the CPU")
                self._gpu = None
                return self._cpu
        return self._gpu_index

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Answer:
        self.config.use_search_threads()
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(allowed))
        distances, ids = self._search_index(allowed is not None).search(query, k, params=params)
        return distances[0], ids[0]

    def describe(self) -> str:
        device = "gpu" if self._gpu is not None else "cpu"
        return f"faiss IndexIDMap2(IndexFlatL2) exact ({device}), {self.ntotal} vectors"

    def close(self) -> None:
        self._gpu_index = None


class HnswIndex:
    """``IndexIDMap2(IndexHNSWFlat)`` with tombstones for deletes (module docstring). CPU only.
    Not thread-safe: the gallery calls it under its lock."""

    def __init__(self, dim: int, config: FaissIndexConfig, id_map: Any = None) -> None:
        self.config = config
        self.dim = dim
        if id_map is None:
            graph = faiss.IndexHNSWFlat(dim, config.hnsw_m)
            id_map = faiss.IndexIDMap2(graph)
        else:  # read from disk (service.hnsw_snapshot): the id map owns its graph
            graph = faiss.downcast_index(id_map.index)
        graph.hnsw.efConstruction = config.hnsw_ef_construction
        graph.hnsw.efSearch = config.hnsw_ef_search
        self._graph = graph  # IndexIDMap2 does not own a graph made here: keep it alive
        self._index = id_map
        self._tombstones: set[int] = set()
        self._skip: tuple[Any, Any] | None = None  # (IDSelectorNot, its IDSelectorBatch)

    @classmethod
    def from_id_map(cls, id_map: Any, dim: int, config: FaissIndexConfig) -> HnswIndex:
        """An index over a graph FAISS read back; ValueError when it is not one of ours."""
        if not isinstance(id_map, faiss.IndexIDMap2) or id_map.d != dim:
            raise ValueError("not an IndexIDMap2 of the gallery's dimension")
        if not isinstance(faiss.downcast_index(id_map.index), faiss.IndexHNSWFlat):
            raise ValueError("not an HNSW graph")
        return cls(dim, config, id_map)

    @property
    def id_map(self) -> Any:
        """The FAISS index to write to disk (service.hnsw_snapshot)."""
        return self._index

    def ids(self) -> np.ndarray:
        """Every id in the graph, tombstones included, sorted."""
        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    @property
    def ntotal(self) -> int:
        """Vectors in the graph, tombstones included."""
        return int(self._index.ntotal)

    @property
    def tombstones(self) -> int:
        return len(self._tombstones)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, ids)

    def remove(self, ids: np.ndarray) -> None:
        self._tombstones.update(int(i) for i in ids)
        self._skip = None

    def _skip_tombstones(self) -> Any:
        if not self._tombstones:
            return None
        if self._skip is None:
            batch = faiss.IDSelectorBatch(np.fromiter(self._tombstones, np.int64))
            self._skip = (faiss.IDSelectorNot(batch), batch)
        return self._skip[0]

    def search(self, query: np.ndarray, k: int, allowed: np.ndarray | None = None) -> Answer:
        self.config.use_search_threads()
        ef = max(self.config.hnsw_ef_search, k)
        if allowed is None:
            selector = self._skip_tombstones()
        elif len(allowed) <= EXACT_SUBSET_MAX:
            return self._exact_subset(query, k, allowed)
        else:
            selector = faiss.IDSelectorBatch(allowed)
            ef = min(max(ef, math.ceil(ef * self.ntotal / len(allowed))), self.ntotal)
        params = faiss.SearchParametersHNSW(efSearch=ef)
        if selector is not None:
            params.sel = selector
        distances, ids = self._index.search(query, k, params=params)
        return distances[0], ids[0]

    def _exact_subset(self, query: np.ndarray, k: int, allowed: np.ndarray) -> Answer:
        """The exact ``k`` nearest among ``allowed`` (ids the index holds), as FAISS answers."""
        distances = np.full(k, np.finfo(np.float32).max, np.float32)
        ids = np.full(k, -1, np.int64)
        if len(allowed):
            vectors = self._index.reconstruct_batch(allowed)
            found, positions = faiss.knn(query, vectors, min(k, len(allowed)))
            distances[: positions.shape[1]] = found[0]
            ids[: positions.shape[1]] = np.where(positions[0] >= 0, allowed[positions[0]], -1)
        return distances, ids

    def describe(self) -> str:
        c = self.config
        text = (
            f"faiss IndexIDMap2(IndexHNSWFlat M={c.hnsw_m}, efConstruction="
            f"{c.hnsw_ef_construction}, efSearch={c.hnsw_ef_search}) approximate (cpu), "
            f"{self.ntotal - self.tombstones} vectors"
        )
        if self._tombstones:
            text += f" and {self.tombstones} deleted ones kept"
            if self.tombstones > TOMBSTONE_WARNING_SHARE * self.ntotal:
                text += " (restart to give their memory back: the graph is then rebuilt)"
        return text

    def close(self) -> None:
        self._skip = None
