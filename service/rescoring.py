"""Pair-wise re-scoring of a query's shortlist with the joint attention the network was trained
with (ONNX Runtime, never torch).

The gallery index ranks tracklets by the distance between *self-paired* embeddings: each tracklet
attends to its own frames alone, which is what makes a precomputed index possible. ASTPN was
trained on pairs, though: A = tanh(P U G^T) lets probe and gallery decide together which of their
frames matter. :class:`PairScorer` runs that pair computation (the exported ``<stem>.pair.onnx``)
on the per-step features the gallery stored at enrolment, for the K nearest candidates of the
index, and :func:`rescore` turns its distances into the final ranking: sorted by pair distance,
then grouped by identity and cut by ``max_distance`` exactly as the index search would.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.card import PAIR_SCORER_INPUTS, PAIR_SCORER_OUTPUTS, pair_scorer_path_for
from service.encoder import ModelLoadError, open_session
from service.gallery import Gallery, Match

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RescoredMatch:
    """A candidate after re-scoring; attentions are per *embedded* step."""

    tracklet_id: str
    identity: str
    camera: str | None
    distance: float  # Euclidean distance of the pair's jointly pooled vectors
    index_distance: float  # what the index said (self-paired embeddings)
    query_attention: np.ndarray  # (Tq',) the query's attention in this pair
    candidate_attention: np.ndarray  # (Tg',) the candidate's attention in this pair


class PairScorer:
    """The exported pair scorer of a model: one query against K candidates per call."""

    def __init__(
        self, model_path: Path, card: dict[str, Any], *, use_cuda: bool, intra_op_threads: int
    ) -> None:
        if not card.get("pair_scorer"):
            raise ModelLoadError(
                f"model card of {model_path} has no pair scorer; re-export the model with "
                "`python -m training export` to re-score shortlists"
            )
        self.path = pair_scorer_path_for(model_path)
        self.session = open_session(self.path, use_cuda, intra_op_threads)
        self.provider = self.session.get_providers()[0]
        names = [i.name for i in self.session.get_inputs()]
        if names != list(PAIR_SCORER_INPUTS):
            raise ModelLoadError(
                f"{self.path} takes inputs {names}, not {list(PAIR_SCORER_INPUTS)}: re-export"
            )

    def score(
        self, query: np.ndarray, candidates: Sequence[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """(Tq, D) query features against candidates' (T_k, D) ->
        distances (K,), query attention (K, Tq), candidate attentions (each (T_k,))."""
        lengths = np.array([c.shape[0] for c in candidates], dtype=np.int64)
        if lengths.size == 0 or lengths.min() < 1:
            raise ValueError("every candidate needs at least one feature row")
        padded = np.zeros((len(candidates), int(lengths.max()), query.shape[1]), np.float32)
        for k, features in enumerate(candidates):
            padded[k, : features.shape[0]] = features
        feeds = dict(
            zip(
                PAIR_SCORER_INPUTS,
                (np.ascontiguousarray(query, np.float32), padded, lengths),
                strict=True,
            )
        )
        distance, query_attention, candidate_attention = self.session.run(
            list(PAIR_SCORER_OUTPUTS), feeds
        )
        return (
            distance.astype(np.float64),
            query_attention,
            [candidate_attention[k, : lengths[k]] for k in range(len(candidates))],
        )


def rescore(
    gallery: Gallery,
    scorer: PairScorer,
    query_features: np.ndarray,
    candidates: Sequence[Match],
    top_k: int,
    *,
    group_by_identity: bool,
    max_distance: float | None,
) -> list[RescoredMatch]:
    """Re-rank the index's candidates (nearest first, ungrouped) by their pair distance.

    Candidates deleted between the search and the feature read are skipped. Ties keep the
    index's order.
    """
    if not candidates:
        return []
    features = gallery.get_features([m.tracklet_id for m in candidates])
    kept = [m for m in candidates if m.tracklet_id in features]
    if not kept:
        return []
    distance, query_attention, candidate_attention = scorer.score(
        query_features, [features[m.tracklet_id] for m in kept]
    )
    order = np.argsort(distance, kind="stable")
    results: list[RescoredMatch] = []
    seen: set[str] = set()
    for k in order:
        match = kept[int(k)]
        if max_distance is not None and distance[k] > max_distance:
            break  # sorted: every later one is farther still
        if group_by_identity:
            if match.identity in seen:
                continue
            seen.add(match.identity)
        results.append(
            RescoredMatch(
                tracklet_id=match.tracklet_id,
                identity=match.identity,
                camera=match.camera,
                distance=float(distance[k]),
                index_distance=float(match.distance),
                query_attention=query_attention[k],
                candidate_attention=candidate_attention[k],
            )
        )
        if len(results) == top_k:
            break
    return results
