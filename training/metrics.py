"""CMC and mAP for re-identification rankings (plain NumPy, no torch).

The protocol follows torchreid's ``eval_market1501`` (``torchreid/metrics/rank.py``) so numbers
are comparable with the literature:

* for each query, gallery entries with the *same identity and the same camera* as the query are
  removed before ranking (they are "too easy": same view, often overlapping frames);
* gallery entries whose identity is ``-1`` (junk, as in MARS and Market-1501) are removed for
  every query; identity ``0`` (MARS distractors) stays in the gallery as a legitimate wrong match;
* queries with no remaining correct match are skipped: they contribute neither to CMC nor to
  mAP, and their number is reported in :class:`RankingResult`;
* CMC(k) = fraction of valid queries with at least one correct match in the first k ranks;
  AP = mean over the correct matches of the precision at each correct match's rank.

One difference from torchreid: ties in distance are broken deterministically by gallery index
(a *stable* sort), whereas ``np.argsort``'s default quicksort leaves tie order unspecified. With
real-valued embeddings ties practically never occur, so results agree with torchreid; on
degenerate inputs (a collapsed model giving identical embeddings) ours are reproducible.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

DEFAULT_RANKS: tuple[int, ...] = (1, 5, 10, 20)
JUNK_IDENTITY = -1


@dataclass(frozen=True)
class RankingResult:
    """Outcome of :func:`evaluate_rankings_detailed`."""

    cmc: np.ndarray  # (max_rank,) float, CMC[k-1] = rank-k matching rate in [0, 1]
    mAP: float
    num_valid_queries: int
    num_skipped_queries: int  # queries whose identity has no valid match in the gallery
    per_query_first_match: np.ndarray = field(repr=False)  # 0-based rank of first match, -1 skipped


def evaluate_rankings_detailed(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> RankingResult:
    """Rank the gallery for every query and return CMC, mAP and how many queries were skipped.

    ``distmat`` is (num_query, num_gallery), smaller = more similar. The CMC curve always has
    ``max_rank`` entries: when fewer gallery entries remain than ``max_rank`` the curve is
    extended with its last value (every valid query has matched by then), so curves from
    galleries of different sizes can be averaged.
    """
    distmat = np.asarray(distmat, dtype=np.float64)
    q_pids, g_pids = np.asarray(q_pids), np.asarray(g_pids)
    q_camids, g_camids = np.asarray(q_camids), np.asarray(g_camids)
    num_q, num_g = distmat.shape
    if q_pids.shape != (num_q,) or q_camids.shape != (num_q,):
        raise ValueError(f"query ids/cameras must have shape ({num_q},)")
    if g_pids.shape != (num_g,) or g_camids.shape != (num_g,):
        raise ValueError(f"gallery ids/cameras must have shape ({num_g},)")
    if max_rank < 1:
        raise ValueError("max_rank must be >= 1")

    # Stable sort: ties resolve to the lower gallery index, reproducibly.
    order = np.argsort(distmat, axis=1, kind="stable")
    sorted_pids = g_pids[order]
    sorted_cams = g_camids[order]
    matches = sorted_pids == q_pids[:, None]
    keep = (sorted_pids != JUNK_IDENTITY) & ~(matches & (sorted_cams == q_camids[:, None]))

    all_cmc: list[np.ndarray] = []
    all_ap: list[float] = []
    first_match = np.full(num_q, -1, dtype=np.int64)
    for qi in range(num_q):
        raw = matches[qi][keep[qi]]
        if not raw.any():
            continue
        hits = np.cumsum(raw)
        first_match[qi] = int(np.argmax(raw))
        cmc = np.ones(max_rank, dtype=np.float64)
        head = np.minimum(hits[:max_rank], 1).astype(np.float64)
        cmc[: head.size] = head
        all_cmc.append(cmc)
        ranks = np.arange(1, raw.size + 1, dtype=np.float64)
        precision_at_hits = hits[raw] / ranks[raw]
        all_ap.append(float(precision_at_hits.mean()))

    num_valid = len(all_cmc)
    if num_valid == 0:
        raise ValueError("no query has a valid match in the gallery")
    return RankingResult(
        cmc=np.mean(all_cmc, axis=0),
        mAP=float(np.mean(all_ap)),
        num_valid_queries=num_valid,
        num_skipped_queries=num_q - num_valid,
        per_query_first_match=first_match,
    )


def evaluate_rankings(
    distmat: np.ndarray,
    q_pids: np.ndarray,
    g_pids: np.ndarray,
    q_camids: np.ndarray,
    g_camids: np.ndarray,
    max_rank: int = 50,
) -> tuple[np.ndarray, float]:
    """torchreid-compatible ``(cmc, mAP)``; see :func:`evaluate_rankings_detailed`."""
    result = evaluate_rankings_detailed(distmat, q_pids, g_pids, q_camids, g_camids, max_rank)
    return result.cmc, result.mAP


def euclidean_distances(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """(Q, D) x (G, D) -> (Q, G) Euclidean distances (the model card's ``distance``)."""
    q = np.asarray(queries, dtype=np.float64)
    g = np.asarray(gallery, dtype=np.float64)
    sq = (q * q).sum(1)[:, None] + (g * g).sum(1)[None, :] - 2.0 * q @ g.T
    return np.sqrt(np.maximum(sq, 0.0))


def cmc_at(cmc: np.ndarray, ranks: Iterable[int] = DEFAULT_RANKS) -> dict[int, float]:
    """Pick CMC values at the given 1-based ranks (ranks past the curve's end read its end)."""
    cmc = np.asarray(cmc)
    return {int(r): float(cmc[min(int(r), cmc.size) - 1]) for r in ranks}


def mean_std_over_splits(
    results: Sequence[tuple[np.ndarray, float] | Mapping[str, object]],
    ranks: Iterable[int] = DEFAULT_RANKS,
) -> dict[str, dict[str, float] | list[float] | int]:
    """Aggregate per-split results into mean and (population) std of each rank and of mAP.

    Accepts ``(cmc, mAP)`` tuples or dicts with ``"cmc"`` and ``"mAP"`` keys. Returns
    ``{"rank1": {"mean":..,"std":..}, ..., "mAP": {...}, "cmc_mean": [...], "num_splits": n}``.
    """
    if not results:
        raise ValueError("no results to aggregate")
    cmcs, maps = [], []
    for item in results:
        if isinstance(item, Mapping):
            cmc, m_ap = item["cmc"], item["mAP"]
        else:
            cmc, m_ap = item
        cmcs.append(np.asarray(cmc, dtype=np.float64))
        maps.append(float(m_ap))  # type: ignore[arg-type]
    length = min(c.size for c in cmcs)
    stacked = np.stack([c[:length] for c in cmcs])
    summary: dict[str, dict[str, float] | list[float] | int] = {}
    for r in ranks:
        values = stacked[:, min(int(r), length) - 1]
        summary[f"rank{int(r)}"] = {"mean": float(values.mean()), "std": float(values.std())}
    summary["mAP"] = {"mean": float(np.mean(maps)), "std": float(np.std(maps))}
    summary["cmc_mean"] = stacked.mean(0).tolist()
    summary["num_splits"] = len(results)
    return summary
