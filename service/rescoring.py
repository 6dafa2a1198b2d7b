"""Pair-wise re-scoring of a query's shortlist with the joint attention the network was trained
with (ONNX Runtime, never torch).

The gallery index ranks tracklets by the distance between *self-paired* embeddings: each tracklet
attends to its own frames alone, which is what makes a precomputed index possible. ASTPN was
trained on pairs, though: A = tanh(P U G^T) lets probe and gallery decide together which of their
frames matter. :class:`PairScorer` runs that pair computation (the exported ``<stem>.pair.onnx``)
on the per-step features the gallery stored at enrolment, for the K nearest candidates of the
index, and :func:`rescore` owns the whole step: it reads the candidates' stored features and
frame counts in one gallery read, ranks by pair distance with the same selection rule as the
index search (:mod:`service.selection`: grouped by identity, cut by ``max_distance``), and gives
each match its pair attentions spread over the uploaded frames of both tracklets.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.card import PAIR_SCORER_INPUTS, PAIR_SCORER_OUTPUTS, pair_scorer_path_for
from service.encoder import frame_attention
from service.gallery import Gallery, Match
from service.onnx_session import ArenaPolicy, ModelLoadError, open_session
from service.selection import select_nearest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RescoredMatch:
    """A candidate after re-scoring; attentions are spread over the uploaded frames."""

    tracklet_id: str
    identity: str
    camera: str | None
    distance: float  # Euclidean distance of the pair's jointly pooled vectors
    index_distance: float  # what the index said (self-paired embeddings)
    query_attention: np.ndarray  # (Tq,) the query's attention in this pair, per uploaded frame
    candidate_attention: np.ndarray  # (Tg,) the candidate's, per frame it was enrolled with


class PairScorer:
    """The exported pair scorer of a model: one query against K candidates per call."""

    def __init__(
        self,
        model_path: Path,
        card: dict[str, Any],
        *,
        use_cuda: bool,
        intra_op_threads: int,
        arena: ArenaPolicy | None = None,
        spin: bool = False,
    ) -> None:
        if not card.get("pair_scorer"):
            raise ModelLoadError(
                f"model card of {model_path} has no pair scorer; re-export the model with "
                "`python -m training export` to re-score shortlists"
            )
        self.path = pair_scorer_path_for(model_path)
        self.session = open_session(
            self.path, use_cuda, intra_op_threads, arena or ArenaPolicy(), spin
        )
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
        # No shrinking: the scorer's inputs are per-step feature vectors, not images, so its
        # arena stays small (kilobytes per frame) even for the largest shortlist.
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
    query_frames: int,
    candidates: Sequence[Match],
    top_k: int,
    *,
    group_by_identity: bool,
    max_distance: float | None,
) -> list[RescoredMatch]:
    """Re-rank the index's candidates (nearest first, ungrouped) by their pair distance.

    ``query_features`` are the query's per-step features (T', D) and ``query_frames`` its
    uploaded frames. One gallery read gives the candidates' features and frame counts;
    candidates deleted between the search and that read are skipped. Ties keep the index's
    order.
    """
    if not candidates:
        return []
    stored = gallery.get_features([m.tracklet_id for m in candidates])
    kept = [m for m in candidates if m.tracklet_id in stored]
    if not kept:
        return []
    distance, query_attention, candidate_attention = scorer.score(
        query_features, [stored[m.tracklet_id].features for m in kept]
    )
    order = np.argsort(distance, kind="stable")
    chosen, _ = select_nearest(
        ((kept[k].identity, float(distance[k]), int(k)) for k in order),
        top_k,
        group_by_identity=group_by_identity,
        limit=max_distance,
    )
    return [
        RescoredMatch(
            tracklet_id=kept[k].tracklet_id,
            identity=kept[k].identity,
            camera=kept[k].camera,
            distance=float(distance[k]),
            index_distance=float(kept[k].distance),
            query_attention=frame_attention(query_attention[k], query_frames),
            candidate_attention=frame_attention(
                candidate_attention[k], stored[kept[k].tracklet_id].num_frames
            ),
        )
        for k in chosen
    ]
