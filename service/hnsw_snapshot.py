"""The HNSW graph kept on disk between runs, so that a restart does not rebuild it.

Building the graph is what a restart of a large HNSW gallery spent its time on (198 s at a
million tracklets, docs/benchmarks-hnsw-1m.md). At a clean close the faiss gallery writes its
graph next to the SQLite file (``hnsw.faiss``, written to a temporary file, fsynced and renamed
into place, with ``hnsw.json`` saying which parameters built it). At the next start the graph is
read back and reconciled with SQLite, which stays the source of truth:

* a live tracklet the graph lacks (enrolled after the snapshot, e.g. before a crash) is added;
* a vector whose tracklet is gone (deleted after the snapshot) becomes a tombstone;
* ids are never reused (``AUTOINCREMENT``) and embeddings never change, so every vector the
  graph holds for a live id is that tracklet's.

So the snapshot can be stale but never wrong, and a missing, unreadable or differently built
snapshot (M, efConstruction, dimension) only costs the rebuild it saves. A snapshot whose deleted
share exceeds :data:`service.faiss_index.TOMBSTONE_WARNING_SHARE` is not used either: the
rebuild then compacts the graph.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from service.faiss_index import TOMBSTONE_WARNING_SHARE, FaissIndexConfig, HnswIndex

log = logging.getLogger(__name__)

GRAPH_FILE = "hnsw.faiss"
RECORD_FILE = "hnsw.json"
FORMAT = 1


def _record(config: FaissIndexConfig, dim: int) -> dict[str, Any]:
    return {"format": FORMAT, "dim": dim, "m": config.hnsw_m, "ef": config.hnsw_ef_construction}


def save(index: HnswIndex, directory: Path) -> None:
    """Write ``index``'s graph (tombstones included) to ``directory``, atomically."""
    graph, record = directory / GRAPH_FILE, directory / RECORD_FILE
    partial = graph.with_suffix(".partial")
    faiss.write_index(index.id_map, str(partial))
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(partial, graph)
    record.write_text(json.dumps(_record(index.config, index.dim)))
    log.info("HNSW graph of %d vectors written to %s", index.ntotal, graph)


def load(
    directory: Path, config: FaissIndexConfig, dim: int, live_ids: np.ndarray
) -> tuple[HnswIndex, np.ndarray] | None:
    """The snapshot's graph with tombstones for ids not in ``live_ids``, and the live ids it
    lacks (the caller adds their vectors); None when there is no usable snapshot."""
    graph, record = directory / GRAPH_FILE, directory / RECORD_FILE
    if not graph.is_file() or not record.is_file():
        return None
    try:
        if json.loads(record.read_text()) != _record(config, dim):
            log.info("HNSW snapshot in %s was built with other parameters: rebuilding", directory)
            return None
        index = HnswIndex.from_id_map(faiss.read_index(str(graph)), dim, config)
    except (OSError, ValueError, RuntimeError) as exc:  # FAISS raises RuntimeError
        log.warning("HNSW snapshot in %s is unreadable (%s): rebuilding", directory, exc)
        return None
    indexed = index.ids()
    deleted = np.setdiff1d(indexed, live_ids, assume_unique=True)
    if len(deleted) > TOMBSTONE_WARNING_SHARE * max(len(indexed), 1):
        log.info(
            "HNSW snapshot in %s holds %d deleted tracklets: rebuilding", directory, len(deleted)
        )
        return None
    index.remove(deleted)
    missing = np.setdiff1d(live_ids, indexed, assume_unique=True)
    log.info(
        "HNSW graph of %d vectors read from %s; %d tracklets to add, %d deleted since",
        len(indexed),
        graph,
        len(missing),
        len(deleted),
    )
    return index, missing
