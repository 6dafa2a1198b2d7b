"""Gallery: adding, searching, memory, disk and start-up at 10k / 100k / 1M tracklets, through
the service's gallery interface (``service.backends``), and exact against approximate FAISS indexes.

Embeddings are CLUSTERED like a trained re-id model's, not uniform noise (approximate indexes
look far better on uniform noise than on real data, where every identity is a tight group of
near-duplicates): see :class:`EmbeddingModel` for the generator and the statistics table the
report prints for it.

Hooks for later rows:

* ``SEARCH_MODE_FACTORIES``: the modes each factory returns are timed through the gallery
  interface: plain search, and pair re-scoring of the K = 10/50/100 nearest candidates with the
  joint attention (``rerank_search_modes``).
* Backends come from the service's registry (:mod:`service.backends`), each at its default
  location inside a scratch folder: ``--backends faiss,milvus`` measures both the same way; one
  whose extra is not installed is skipped with a note naming the extra.
"""

from __future__ import annotations

import functools
import math
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import Context, Timing, backend_case, ms
from bench.report import PartResult, Table

TOP_K = 10
ADD_BATCH = 1000
FEATURE_STEPS = 16  # per-step features stored per tracklet: a 16-frame tracklet
BURST = 100  # "100 queries" rows
BURST_THREADS = 4  # the service's thread pools call the gallery from a few threads
FEATURE_POOL = 64  # distinct feature arrays cycled through (their values cost nothing)
THUMBNAIL_POOL = 16  # distinct tracklets' thumbnails cycled through

# ------------------------------------------------------------------------ the embeddings


@dataclass(frozen=True)
class EmbeddingModel:
    """How synthetic embeddings are drawn.

    * Identity centres: Gaussian with an exponentially decaying spectrum over a random
      orthonormal basis (``effective_dim`` ≈ the number of directions that matter: a trained
      network spreads identities over a few dozen directions, not all 128 equally), then put on
      the unit sphere.
    * Each identity gets ~``tracklets_per_identity`` tracklets (identities drawn uniformly, so
      the counts are Poisson), as a deployment sees the same person many times.
    * A tracklet is its identity's centre plus isotropic Gaussian noise, renormalised, times a
      norm of 1 ± ``norm_jitter`` ("unit-ish": the network's embeddings are not normalised).
      The noise is set so two tracklets of one identity have cosine similarity
      ``pair_cosine`` on average while different identities are ~orthogonal: the spread a
      trained re-id model shows between its positive and negative pairs (an assumption, not a
      measurement of this project's model; the statistics table reports what was generated).
    * Queries are new tracklets of enrolled identities (a query person is usually known).
    """

    dim: int = 128
    tracklets_per_identity: float = 10.0
    pair_cosine: float = 0.7
    effective_dim: float = 32.0
    norm_jitter: float = 0.05

    @property
    def noise_sigma(self) -> float:
        # |c + s g|^2 ≈ 1 + s^2 d for unit c, so the cosine of two draws ≈ 1 / (1 + s^2 d).
        return math.sqrt((1.0 / self.pair_cosine - 1.0) / self.dim)


@dataclass
class EmbeddingSet:
    embeddings: np.ndarray  # float32 (N, D)
    identities: np.ndarray  # int64 (N,)
    queries: np.ndarray  # float32 (Q, D)
    query_identities: np.ndarray  # int64 (Q,)


def clustered_embeddings(
    count: int, queries: int, seed: int, model: EmbeddingModel | None = None
) -> EmbeddingSet:
    model = model or EmbeddingModel()
    rng = np.random.default_rng((seed, count, 0xE4B))
    num_ids = max(2, round(count / model.tracklets_per_identity))
    spectrum = np.exp(-np.arange(model.dim) / model.effective_dim).astype(np.float32)
    basis, _ = np.linalg.qr(rng.standard_normal((model.dim, model.dim)))
    basis = basis.astype(np.float32)
    centres = (rng.standard_normal((num_ids, model.dim), dtype=np.float32) * spectrum) @ basis.T
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def draw(identities: np.ndarray) -> np.ndarray:
        out = np.empty((len(identities), model.dim), np.float32)
        # In chunks: at 1M the noise alone would otherwise double the peak memory.
        for start in range(0, len(identities), 100_000):
            ids = identities[start : start + 100_000]
            x = centres[ids] + model.noise_sigma * rng.standard_normal(
                (len(ids), model.dim), dtype=np.float32
            )
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            x *= 1.0 + model.norm_jitter * rng.standard_normal((len(ids), 1), dtype=np.float32)
            out[start : start + len(ids)] = x
        return out

    identities = rng.integers(0, num_ids, count)
    query_identities = rng.integers(0, num_ids, queries)
    return EmbeddingSet(draw(identities), identities, draw(query_identities), query_identities)


def exact_neighbours(embeddings: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Row indices of the exact k nearest (Euclidean) of each query."""
    import faiss

    index = faiss.IndexFlatL2(embeddings.shape[1])
    index.add(embeddings)
    _, ids = index.search(queries, k)
    return ids


def recall_at_k(found: Sequence[Sequence[int]], exact: np.ndarray) -> float:
    """Mean |found ∩ exact| / k over the queries (k = exact's width)."""
    k = exact.shape[1]
    hits = [len(set(f) & set(e.tolist())) / k for f, e in zip(found, exact, strict=True)]
    return float(np.mean(hits))


def embedding_statistics(data: EmbeddingSet, exact: np.ndarray, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    unit = data.embeddings / np.linalg.norm(data.embeddings, axis=1, keepdims=True)
    n = len(unit)
    a, b = rng.integers(0, n, 20_000), rng.integers(0, n, 20_000)
    different = data.identities[a] != data.identities[b]
    order = np.argsort(data.identities, kind="stable")
    sorted_ids = data.identities[order]
    same = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])[:20_000]
    own = data.identities[exact] == data.query_identities[:, None]
    return {
        "identities": float(len(np.unique(data.identities))),
        "same_identity_cosine": float(np.sum(unit[order[same]] * unit[order[same + 1]], 1).mean()),
        "different_identity_cosine": float(np.sum(unit[a] * unit[b], 1)[different].mean()),
        "own_identity_in_exact_top10": float(own.mean()),
        "exact_rank1_correct": float(own[:, 0].mean()),
    }


# ----------------------------------------------------------------------------- records


def _features_pool(seed: int, dim: int) -> list[np.ndarray]:
    rng = np.random.default_rng((seed, 0xFEA7))
    return [
        rng.standard_normal((FEATURE_STEPS, dim), dtype=np.float32) for _ in range(FEATURE_POOL)
    ]


@functools.cache
def thumbnail_pool(seed: int) -> list[list[Any]]:
    """Thumbnails as the service keeps them by default (``REID_THUMBNAIL_COUNT`` of
    ``REID_THUMBNAIL_MAX_SIDE`` pixels), of synthetic pedestrians' 16-frame tracklets: a
    person's JPEGs, not noise's, set the disk figures."""
    from service.settings import Settings
    from service.thumbnails import ThumbnailConfig, make_thumbnails, shrink
    from training.synthetic import synthesize_tracklet

    defaults = Settings.model_fields
    config = ThumbnailConfig(
        count=defaults["thumbnail_count"].default, max_side=defaults["thumbnail_max_side"].default
    )
    rng = np.random.default_rng((seed, 0x7B))
    pool = []
    for person in range(THUMBNAIL_POOL):
        frames = synthesize_tracklet(9000 + person, 2, FEATURE_STEPS, seed=seed)
        attention = rng.dirichlet(np.ones(FEATURE_STEPS)).astype(np.float32)
        pool.append(
            make_thumbnails([shrink(f, config.max_side) for f in frames], attention, config)
        )
    return pool


def make_records(
    embeddings: np.ndarray, identities: np.ndarray, start: int, seed: int
) -> list[Any]:
    """Gallery records for rows ``start ..`` of the set: ids, identity names, four cameras,
    one-second-apart start times, 16 steps of features (stored as float16 by the backends) and
    the thumbnails the service keeps by default."""
    from service.gallery import TrackletRecord

    features = _features_pool(seed, embeddings.shape[1])
    thumbnails = thumbnail_pool(seed)
    attention = np.full(FEATURE_STEPS, 1.0 / FEATURE_STEPS, np.float32)
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        TrackletRecord(
            tracklet_id=f"t{start + i:09d}",
            identity=f"person{int(identity):08d}",
            embedding=embedding,
            features=features[(start + i) % FEATURE_POOL],
            attention=attention,
            camera=f"cam{(start + i) % 4 + 1}",
            start_time=base + timedelta(seconds=start + i),
            end_time=base + timedelta(seconds=start + i + 2),
            thumbnails=thumbnails[(start + i) % THUMBNAIL_POOL],
        )
        for i, (embedding, identity) in enumerate(zip(embeddings, identities, strict=True))
    ]


def prefill(
    gallery: Any,
    data: EmbeddingSet,
    seed: int,
    stop: int | None = None,
    progress: bool = False,
    desc: str = "prefill",
) -> float:
    """Add rows ``0 .. stop`` of ``data`` in batches of ``ADD_BATCH``; returns the seconds spent
    in ``gallery.add`` (record building excluded: it is the benchmark's cost, not the
    gallery's)."""
    stop = len(data.embeddings) if stop is None else stop
    spent = 0.0
    with tqdm(total=stop, desc=desc, unit="tracklet", disable=not progress) as bar:
        for begin in range(0, stop, ADD_BATCH):
            end = min(begin + ADD_BATCH, stop)
            records = make_records(
                data.embeddings[begin:end], data.identities[begin:end], begin, seed
            )
            t0 = time.perf_counter()
            gallery.add(records)
            spent += time.perf_counter() - t0
            bar.update(end - begin)
    return spent


# ----------------------------------------------------------------------- hooks: modes, backends


@dataclass(frozen=True)
class SearchMode:
    """One way of answering a query, timed through the gallery interface.

    ``run(gallery, embedding, features)`` answers one query; ``features`` are the query's
    per-step features (T, D), which pair re-scoring needs.
    """

    name: str
    run: Callable[[Any, np.ndarray, np.ndarray], object]


def plain_search_modes(context: Context) -> list[SearchMode]:
    """Plain index search, as ``/query`` runs it (grouped) and ungrouped."""
    return [
        SearchMode(
            f"top-{TOP_K} grouped by identity (as /query)",
            lambda gallery, embedding, _features: gallery.search(embedding, TOP_K),
        ),
        SearchMode(
            f"top-{TOP_K} tracklets (group_by_identity=False)",
            lambda gallery, embedding, _features: gallery.search(
                embedding, TOP_K, group_by_identity=False
            ),
        ),
    ]


RERANK_CANDIDATES = (10, 50, 100)


def rerank_search_modes(context: Context) -> list[SearchMode]:
    """``/query`` with ``rerank`` = K: the K nearest tracklets, their stored features read
    back, every (query, candidate) pair re-scored by the exported pair scorer (ONNX Runtime,
    CPU, the service's code: ``service.rescoring``), then grouped to the top 10 identities and
    their pair attentions spread over the frames, as the service answers."""
    from model.card import card_path_for, load_card
    from service.rescoring import PairScorer, rescore

    path = context.model_path()
    scorer = PairScorer(path, load_card(card_path_for(path)), use_cuda=False, intra_op_threads=0)

    def mode(k: int) -> SearchMode:
        def run(gallery: Any, embedding: np.ndarray, features: np.ndarray) -> object:
            candidates = gallery.search(embedding, k, group_by_identity=False)
            return rescore(
                gallery,
                scorer,
                features,
                features.shape[0],
                candidates,
                TOP_K,
                group_by_identity=True,
                max_distance=None,
            )

        return SearchMode(f"top-{TOP_K} after re-scoring {k} candidates (rerank={k})", run)

    return [mode(k) for k in RERANK_CANDIDATES]


#: Each factory gets the run's :class:`Context` (``context.model_path()`` is an exported model
#: with its pair scorer, ``context.config`` the sizes) and returns the modes it wants timed; the
#: rows land next to plain search.
SEARCH_MODE_FACTORIES: list[Callable[[Context], list[SearchMode]]] = [
    plain_search_modes,
    rerank_search_modes,
]


def backend_missing(backend: str) -> str | None:
    """Why ``backend`` cannot be measured here, or None."""
    from service.backends import BACKENDS

    name, _ = backend_case(backend)
    if name not in BACKENDS:
        return f"unknown backend {backend!r}; known: {sorted(BACKENDS)}"
    return BACKENDS[name].missing()


# ----------------------------------------------------------------------- memory and reopening


def _rss_bytes(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/statm").read_text().split()
    except OSError:
        return 0
    return int(fields[1]) * os.sysconf("SC_PAGE_SIZE")


def tree_rss_bytes(pid: int | None = None) -> int:
    """RSS of a process and all its descendants (Milvus Lite serves from a child process)."""
    pid = os.getpid() if pid is None else pid
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += _rss_bytes(current)
        stack.extend(children.get(current, []))
    return total


def reopen_probe(backend: str, location: str, version: str, dim: int) -> dict[str, float]:
    """Runs in a fresh process: open an existing gallery, as the service does at start.

    Imports happen before the baseline so only the gallery's own data is counted."""
    from service.backends import get_backend
    from service.gallery import ModelSignature

    name, options = backend_case(backend)
    backend_class = get_backend(name).gallery_class()
    before = tree_rss_bytes()
    t0 = time.perf_counter()
    gallery = backend_class(location, ModelSignature(version, dim), **options)
    load_s = time.perf_counter() - t0
    gallery.search(np.zeros(dim, np.float32), TOP_K)  # a lazily built index is built now
    first_search_s = time.perf_counter() - t0 - load_s
    after = tree_rss_bytes()
    count = gallery.count()
    gallery.close()
    return {
        "load_s": load_s,
        "first_search_s": first_search_s,
        "rss_delta_bytes": float(after - before),
        "count": float(count),
    }


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- measurements


def _burst(fn: Callable[[int], object], queries: int, repeats: int, budget_s: float) -> Timing:
    """Wall time of answering ``BURST`` queries from ``BURST_THREADS`` threads at once,
    ``repeats`` times or until ``budget_s`` is spent (at least once)."""
    samples: list[float] = []
    started = time.perf_counter()
    with ThreadPoolExecutor(BURST_THREADS) as pool:
        for r in range(repeats):
            if samples and time.perf_counter() - started > budget_s:
                break
            order = [(r * BURST + i) % queries for i in range(BURST)]
            t0 = time.perf_counter()
            list(pool.map(fn, order))
            samples.append(time.perf_counter() - t0)
    return Timing(samples)


def _single(
    fn: Callable[[int], object],
    queries: int,
    budget_s: float,
    minimum: int = 10,
    cpu: list[float] | None = None,
) -> Timing:
    """One query at a time over the queries, until they or ``budget_s`` run out (at least
    ``minimum``): a slow backend at 1M tracklets must not take hours. ``cpu`` collects the
    calling thread's CPU time of each call: unlike wall time it does not grow when other
    processes hold the CPUs."""
    samples: list[float] = []
    started = time.perf_counter()
    for i in range(queries):
        if len(samples) >= minimum and time.perf_counter() - started > budget_s:
            break
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(i)
        samples.append(time.perf_counter() - t0)
        if cpu is not None:
            cpu.append(time.thread_time() - c0)
    return Timing(samples)


def _backend_recall(
    gallery: Any, data: EmbeddingSet, exact: np.ndarray, budget_s: float, minimum: int = 10
) -> tuple[float, int]:
    """Recall@10 of the backend's ungrouped answers against exact search, and the queries it
    is measured on (all of them unless the time budget ran out first)."""
    found: list[list[int]] = []
    started = time.perf_counter()
    for query in data.queries:
        if len(found) >= minimum and time.perf_counter() - started > budget_s:
            break
        matches = gallery.search(query, TOP_K, group_by_identity=False)
        found.append([int(m.tracklet_id[1:]) for m in matches])
    return recall_at_k(found, exact[: len(found)]), len(found)


def measure_backend(
    context: Context,
    backend: str,
    data: EmbeddingSet,
    exact: np.ndarray,
    signature: Any,
    folder: Path,
    repeats: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fill a fresh gallery with ``data``, then time adds, searches and a reopen."""
    from service.backends import get_backend

    config = context.config
    count = len(data.embeddings)
    singles = min(20 if not config.quick else 5, count // 2)
    # Each backend's own default place, with the scratch folder as the data directory.
    name, options = backend_case(backend)
    location = get_backend(name).default_location(folder)
    gallery = get_backend(name).open(str(location), signature, **options)
    try:
        bulk_s = prefill(
            gallery,
            data,
            config.seed,
            stop=count - singles,
            progress=config.progress,
            desc=f"{backend} add {count:,}",
        )
        single_samples = []
        for i in range(count - singles, count):
            record = make_records(
                data.embeddings[i : i + 1], data.identities[i : i + 1], i, config.seed
            )
            t0 = time.perf_counter()
            gallery.add(record)
            single_samples.append(time.perf_counter() - t0)
        single = Timing(single_samples)

        features = _features_pool(config.seed + 1, data.queries.shape[1])
        queries = len(data.queries)
        factories = SEARCH_MODE_FACTORIES if config.rerank_rows else [plain_search_modes]
        search_modes = [mode for factory in factories for mode in factory(context)]
        answers = [
            lambda i, mode=mode: mode.run(gallery, data.queries[i], features[i % FEATURE_POOL])
            for mode in search_modes
        ]
        budget = config.gallery_budget_s
        t0 = time.perf_counter()
        answers[0](0)
        first = time.perf_counter() - t0
        # A running service has already searched from its thread pool (FAISS then has OpenMP
        # workers per calling thread); start every mode from that state, not a pristine one.
        # A burst is skipped where it would blow the time budget if the backend serialised
        # its searches (Milvus Lite does).
        if first * BURST <= budget:
            _burst(answers[0], queries, 1, budget)
        modes = []
        for mode, answer in zip(search_modes, answers, strict=True):
            cpu: list[float] = []
            one = _single(answer, queries, budget, cpu=cpu)
            burst = None
            if one.median * BURST <= budget:
                burst = _burst(answer, queries, repeats, budget)
            modes.append(
                {
                    "mode": mode.name,
                    "single": one.as_dict(),
                    "single_thread_cpu": Timing(cpu).as_dict(),
                    "burst": burst.as_dict() if burst else None,
                    "_timings": (one, burst, Timing(cpu)),
                }
            )
        recall, recall_queries = _backend_recall(gallery, data, exact, budget)
    finally:
        gallery.close()
    disk = folder_bytes(location)
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        reopen = pool.submit(
            reopen_probe, backend, str(location), signature.version, signature.embedding_size
        ).result()
    if int(reopen["count"]) != count:
        raise RuntimeError(
            f"{backend} gallery reopened with {int(reopen['count'])} tracklets, expected {count}"
        )
    summary = {
        "backend": backend,
        "tracklets": count,
        "bulk_add_s": bulk_s,
        "bulk_add_per_s": (count - singles) / bulk_s,
        "single_add": single.as_dict(),
        "single_add_p50_s": single.median,
        "single_add_p95_s": single.percentile(95),
        "recall_at_10": recall,
        "recall_queries": recall_queries,
        "disk_bytes": disk,
        "disk_bytes_per_tracklet": disk / count,
        **reopen,
    }
    return summary, modes


def _faiss_rows(data: EmbeddingSet, exact: np.ndarray, repeats: int) -> list[dict[str, Any]]:
    """Exact vs HNSW vs IVF on the same vectors, with raw FAISS."""
    import faiss

    count, dim = data.embeddings.shape
    nlist = max(1, min(count // 39, round(4 * math.sqrt(count))))
    candidates: list[tuple[str, str, Callable[[], Any], list[tuple[str, Callable[[Any], None]]]]]
    candidates = [
        ("Flat (exact)", "IndexFlatL2", lambda: faiss.IndexFlatL2(dim), [("", lambda i: None)]),
        (
            "HNSW",
            "M=32, efConstruction=40",
            lambda: faiss.IndexHNSWFlat(dim, 32),
            [
                (f"efSearch={ef}", lambda i, ef=ef: setattr(i.hnsw, "efSearch", ef))
                for ef in (16, 64, 256)
            ],
        ),
        (
            "IVF",
            f"IVFFlat nlist={nlist}",
            lambda: faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, nlist),
            [
                (f"nprobe={p}", lambda i, p=p: setattr(i, "nprobe", p))
                for p in (1, 8, 32)
                if p <= nlist
            ],
        ),
    ]
    rows = []
    for name, build_params, make, settings in candidates:
        index = make()
        t0 = time.perf_counter()
        if not index.is_trained:
            # 64 points per centroid (FAISS wants at least 39): k-means on all 1M vectors with
            # ~4000 centroids would take minutes on a small machine for no better lists. The
            # rows are in random identity order, so a prefix is a fair sample.
            sample = data.embeddings[: min(count, 64 * nlist)]
            index.train(sample)
        index.add(data.embeddings)
        build_s = time.perf_counter() - t0
        memory = len(faiss.serialize_index(index))
        for setting, apply in settings:
            apply(index)
            one = _single(
                lambda i, index=index: index.search(data.queries[i : i + 1], TOP_K),
                len(data.queries),
                budget_s=math.inf,
            )
            batch = []
            for r in range(repeats):
                rows_ = [(r * BURST + i) % len(data.queries) for i in range(BURST)]
                chunk = data.queries[rows_]
                t1 = time.perf_counter()
                index.search(chunk, TOP_K)
                batch.append(time.perf_counter() - t1)
            _, ids = index.search(data.queries, TOP_K)
            rows.append(
                {
                    "tracklets": count,
                    "index": name,
                    "parameters": ", ".join(p for p in (build_params, setting) if p),
                    "build_s": build_s,
                    "bytes_per_vector": memory / count,
                    "single": one.as_dict(),
                    "batch100": Timing(batch).as_dict(),
                    "recall_at_10": recall_at_k(ids.tolist(), exact),
                    "_timings": (one, Timing(batch)),
                }
            )
        del index
    return rows


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]


def run(context: Context) -> PartResult:
    import faiss

    from service.gallery import ModelSignature

    config = context.config
    started = time.perf_counter()
    model = EmbeddingModel()
    signature = ModelSignature("bench-gallery-1", model.dim)
    repeats = 10 if not config.quick else 1
    part = PartResult(
        name="gallery",
        title="3. Gallery",
        description=(
            "Synthetic clustered embeddings (128-d; identity centres on the unit sphere with an "
            f"effective dimension of ~{model.effective_dim:.0f}, "
            f"~{model.tracklets_per_identity:.0f} tracklets per identity, same-identity cosine "
            f"~{model.pair_cosine}, unit-ish norms; "
            "the generator is `bench.gallery.EmbeddingModel`), each tracklet stored with 16 "
            "steps of features as the service stores them. Backends are driven through "
            "`service.backends` (what the service runs); the index comparison uses "
            f"raw FAISS on the same vectors. Recall@{TOP_K} is against exact search, over "
            f"{config.gallery_queries} queries that are new tracklets of enrolled identities."
        ),
    )
    backends_table = Table(
        "Gallery backends through the gallery interface",
        [
            "backend",
            "tracklets",
            "bulk add (tracklets/s, batches of 1000)",
            "single add p50 ms",
            "single add p95 ms",
            "reopen s",
            "first search after reopen ms",
            "RSS delta of reopen MiB",
            "disk bytes / tracklet",
            f"recall@{TOP_K} vs exact",
        ],
    )
    search_table = Table(
        "Search latency through the gallery interface",
        [
            "backend",
            "tracklets",
            "search",
            "queries timed",
            "1 query p50 ms",
            "1 query p95 ms",
            "1 query p50 CPU ms (calling thread)",
            f"{BURST} queries p50 ms",
            f"{BURST} queries p95 ms",
        ],
    )
    index_table = Table(
        "Exact vs approximate FAISS indexes (raw FAISS, same vectors)",
        [
            "tracklets",
            "index",
            "parameters",
            "build s",
            "bytes / vector",
            "1 query p50 ms",
            "1 query p95 ms",
            f"{BURST} queries p50 ms",
            f"{BURST} queries p95 ms",
            f"recall@{TOP_K}",
        ],
    )
    stats_table = Table(
        "The generated embeddings",
        [
            "tracklets",
            "identities",
            "same-identity cosine (mean)",
            "different-identity cosine (mean)",
            f"exact top-{TOP_K} of the query's identity",
            "exact rank-1 of the query's identity",
        ],
    )
    raw: dict[str, Any] = {"embedding_model": model.__dict__, "backends": [], "indexes": []}
    backends = []
    for backend in config.backends:
        reason = backend_missing(backend)
        if reason:
            part.notes.append(f"Backend `{backend}` not measured: {reason}.")
        else:
            backends.append(backend)
    root = config.workdir / "gallery"
    skipped_bursts: list[str] = []
    for count in config.gallery_sizes:
        data = clustered_embeddings(count, config.gallery_queries, config.seed, model)
        exact = exact_neighbours(data.embeddings, data.queries, TOP_K)
        stats = embedding_statistics(data, exact, config.seed)
        stats_table.add(
            count,
            int(stats["identities"]),
            stats["same_identity_cosine"],
            stats["different_identity_cosine"],
            stats["own_identity_in_exact_top10"],
            stats["exact_rank1_correct"],
        )
        for backend in backends:
            limit = config.backend_max_sizes.get(backend)
            if limit is not None and count > limit:
                part.notes.append(
                    f"Backend `{backend}` not measured at {count:,} tracklets "
                    f"(--backend-max-size {backend}={limit:,})."
                )
                continue
            folder = root / f"{backend}-{count}"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            try:
                summary, modes = measure_backend(
                    context, backend, data, exact, signature, folder, repeats
                )
            finally:
                shutil.rmtree(folder, ignore_errors=True)  # 1M tracklets are ~5 GB on disk
            backends_table.add(
                backend,
                count,
                summary["bulk_add_per_s"],
                ms(summary["single_add_p50_s"]),
                ms(summary["single_add_p95_s"]),
                summary["load_s"],
                ms(summary["first_search_s"]),
                summary["rss_delta_bytes"] / 2**20,
                summary["disk_bytes_per_tracklet"],
                summary["recall_at_10"],
            )
            for mode in modes:
                one, burst, cpu_time = mode["_timings"]
                search_table.add(
                    backend,
                    count,
                    mode["mode"],
                    len(one.samples),
                    ms(one.median),
                    ms(one.percentile(95)),
                    ms(cpu_time.median),
                    ms(burst.median) if burst else None,
                    ms(burst.percentile(95)) if burst else None,
                )
                if burst is None:
                    skipped_bursts.append(f"{backend} at {count:,}".replace(",", " "))
            raw["backends"].append({**summary, "modes": _strip(modes)})
        index_rows = _faiss_rows(data, exact, repeats) if config.index_comparison else []
        for row in index_rows:
            one, batch = row["_timings"]
            index_table.add(
                count,
                row["index"],
                row["parameters"],
                row["build_s"],
                row["bytes_per_vector"],
                ms(one.median),
                ms(one.percentile(95)),
                ms(batch.median),
                ms(batch.percentile(95)),
                row["recall_at_10"],
            )
        raw["indexes"].extend(_strip(index_rows))
        raw.setdefault("embedding_statistics", []).append({"tracklets": count, **stats})
        del data, exact
    backends_table.notes.append(
        "Bulk add: `add` of 1000 records at a time (each add is one durable commit). Single "
        "add: one record per `add`, as one enrolment does. Reopen: opening the existing "
        "gallery in a fresh process (what a service restart pays), RSS = resident memory of "
        "that process and its children after opening minus before (imports excluded). Disk: "
        f"the backend's files, including {FEATURE_STEPS} steps of float16 features per "
        "tracklet. Recall: ungrouped top-10 from the backend against exact search (the "
        "raw JSON has how many queries it covers)."
    )
    search_table.notes.append(
        f"1 query: one `search` call at a time, over the queries timed (all of them unless "
        f"{config.gallery_budget_s:g} s ran out first). {BURST} queries: wall time of "
        f"{BURST} `search` calls issued from {BURST_THREADS} threads at once (the service "
        "calls the gallery from a thread pool), median and 95th percentile over repeated "
        "bursts. Both are measured after one such burst (a running service's state). CPU ms: "
        "the calling thread's CPU time per query (FAISS searches in the calling thread; the "
        "pair scorer's ONNX Runtime threads in the re-scoring rows are not counted): on a "
        "machine shared with other jobs it stays near what an idle machine would show as wall "
        "time, while wall time grows with the waiting."
    )
    if skipped_bursts:
        search_table.notes.append(
            f"{BURST}-query bursts skipped where one would take longer than the "
            f"{config.gallery_budget_s:g} s budget: {', '.join(skipped_bursts)}."
        )
    index_table.notes.append(
        f"1 query: `index.search` with one vector; {BURST} queries: one call with {BURST} "
        f"vectors. FAISS threads: {faiss.omp_get_max_threads()}. Build: training (IVF: "
        "k-means on 64 vectors per list) plus adding every vector. Bytes / vector: the "
        "serialised index divided by the vectors (the gallery backends keep ids and metadata "
        "on top of this)."
    )
    from bench.gallery_scale import scale_table

    extrapolated, raw["extrapolated_10m"] = scale_table(raw["backends"])
    part.tables = [backends_table, search_table, index_table, stats_table]
    if not config.index_comparison:
        part.tables.remove(index_table)
        part.notes.append("Raw FAISS index comparison skipped (--no-index-comparison).")
    if extrapolated.rows:
        part.tables.insert(2, extrapolated)
    part.raw = raw
    part.seconds = time.perf_counter() - started
    return part


def iter_sizes(text: str) -> Iterator[int]:
    """'10k,100k,1M' -> 10000, 100000, 1000000."""
    for item in text.split(","):
        item = item.strip().lower().replace("_", "")
        if not item:
            continue
        factor = 1
        if item.endswith("k"):
            factor, item = 1_000, item[:-1]
        elif item.endswith("m"):
            factor, item = 1_000_000, item[:-1]
        try:
            value = float(item) * factor
        except ValueError:
            raise ValueError(
                f"gallery size {item!r} is not a number like 10k, 100k or 1M"
            ) from None
        if value < 20 or value != int(value):
            raise ValueError(f"gallery size {value:g} must be a whole number of at least 20")
        yield int(value)
