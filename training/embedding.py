"""Tracklets -> embeddings for evaluation: the model's self-paired embeddings through PyTorch or
through ONNX Runtime as the service runs it, and pair-wise re-scoring of a shortlist.

Every test sequence is embedded on its own by *self-pairing* (paper §3.3: the sequence is
paired with itself), which gives two embeddings, one per attention role (probe = row-wise,
gallery = column-wise scores of tanh(P U P^T)); :class:`EmbedOptions` says which role each side
uses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from model.card import INPUT_NAME, OUTPUT_NAMES, PAIR_SCORER_INPUTS, PAIR_SCORER_OUTPUTS
from model.preprocessing import CROP_SIZE, mirror
from training.cli import setting
from training.sequences import evaluation_view

ROLES = ("probe", "gallery")
# Model input for one sequence (T, 5, H, W) -> {"probe": (D,), "gallery": (D,),
# "features": (T, D)}.
EmbedFn = Callable[[np.ndarray], dict[str, np.ndarray]]
# (query features (Tq, D), candidates (K, Tg, D) zero-padded, lengths (K,)) -> distances (K,).
PairScoreFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def torch_embed_fn(model: Any, device: str = "cpu") -> EmbedFn:
    """Self-pairing embeddings through a PyTorch ASTPN (eval mode, no gradients)."""
    import torch

    model.eval()

    def embed(x: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model.self_pair(torch.from_numpy(np.ascontiguousarray(x))[None].to(device))
        return {
            "probe": out.embedding_probe[0].float().cpu().numpy(),
            "gallery": out.embedding_gallery[0].float().cpu().numpy(),
            "features": out.features[0].float().cpu().numpy(),
        }

    return embed


def torch_pair_score_fn(model: Any, device: str = "cpu") -> PairScoreFn:
    """Pair distances through a PyTorch ASTPN's joint attention (``ASTPN.score_pairs``)."""
    import torch

    model.eval()

    def score(query: np.ndarray, candidates: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model.score_pairs(
                torch.from_numpy(query).to(device),
                torch.from_numpy(candidates).to(device),
                torch.from_numpy(lengths).to(device),
            )
        return out.distance.float().cpu().numpy()

    return score


def onnx_pair_score_fn(onnx_path: str | Path, threads: int | None = None) -> PairScoreFn:
    """Pair distances through the exported pair scorer (``<stem>.pair.onnx``), as served."""
    from model.card import pair_scorer_path_for
    from service.onnx_session import ArenaPolicy, open_session

    session = open_session(pair_scorer_path_for(onnx_path), False, threads or 0, ArenaPolicy())

    def score(query: np.ndarray, candidates: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        feeds = dict(zip(PAIR_SCORER_INPUTS, (query, candidates, lengths), strict=True))
        return session.run([PAIR_SCORER_OUTPUTS[0]], feeds)[0]

    return score


def pad_features(features: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (T_k, D) arrays -> zero-padded float32 (K, max T, D) and int64 lengths (K,)."""
    lengths = np.array([f.shape[0] for f in features], dtype=np.int64)
    padded = np.zeros((len(features), int(lengths.max()), features[0].shape[1]), np.float32)
    for k, f in enumerate(features):
        padded[k, : f.shape[0]] = f
    return padded, lengths


def rerank_distances(
    distmat: np.ndarray,
    query_features: Sequence[np.ndarray],
    gallery_features: Sequence[np.ndarray],
    k: int,
    score: PairScoreFn,
) -> np.ndarray:
    """Each query's ``k`` nearest gallery entries re-ordered by their pair distance.

    Gallery features go through float16 first, as the service stores them. The returned matrix
    ranks the re-scored candidates first (by pair distance) and the rest after them in their
    original order, which is all CMC and mAP look at.
    """
    stored = [np.asarray(f, np.float16).astype(np.float32) for f in gallery_features]
    out = np.empty_like(distmat, dtype=np.float64)
    for qi, row in enumerate(np.asarray(distmat, dtype=np.float64)):
        order = np.argsort(row, kind="stable")
        top, rest = order[:k], order[k:]
        candidates, lengths = pad_features([stored[g] for g in top])
        pair = score(np.asarray(query_features[qi], np.float32), candidates, lengths)
        out[qi, top] = pair
        if rest.size:
            out[qi, rest] = pair.max() + 1.0 + (row[rest] - row[rest].min())
    return out


def onnx_embed_fn(onnx_path: str | Path, threads: int | None = None) -> EmbedFn:
    """Self-pairing embeddings through an exported model in ONNX Runtime, with the service's
    own session set-up (``service.onnx_session.open_session``) on the CPU."""
    from service.onnx_session import ArenaPolicy, open_session

    session = open_session(Path(onnx_path), False, threads or 0, ArenaPolicy())

    def embed(x: np.ndarray) -> dict[str, np.ndarray]:
        frames = np.ascontiguousarray(x[None], dtype=np.float32)
        outputs = dict(
            zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames}), strict=True)
        )
        return {
            "probe": outputs["embedding_probe"][0],
            "gallery": outputs["embedding_gallery"][0],
            "features": outputs["features"][0],
        }

    return embed


def embed_sequences(
    embed: EmbedFn,
    sequences: Sequence[np.ndarray],
    *,
    max_frames: int = 128,
    flip: bool = False,
    progress: bool = False,
    desc: str = "embedding",
    crop_size: tuple[int, int] = CROP_SIZE,
) -> dict[str, np.ndarray]:
    """Embed preprocessed (T, 5, H, W) sequences: first ``max_frames`` frames, central crop.

    ``flip`` averages the embedding with that of the mirrored sequence (test-time augmentation).
    Returns ``{"probe": (N, D), "gallery": (N, D)}`` and, when the embedding function gives
    them, ``"features"``: the N per-step feature arrays (T_n, D) of the unflipped sequences.
    """
    out: dict[str, list[np.ndarray]] = {role: [] for role in ROLES}
    features: list[np.ndarray] = []
    for seq in tqdm(sequences, desc=desc, unit="seq", disable=not progress, leave=False):
        x = evaluation_view(seq, max_frames, crop_size)
        result = embed(x)
        if "features" in result:
            features.append(np.asarray(result["features"], dtype=np.float32))
        if flip:
            flipped = embed(mirror(x))
            result = {role: 0.5 * (result[role] + flipped[role]) for role in ROLES}
        for role in ROLES:
            out[role].append(np.asarray(result[role], dtype=np.float32))
    embedded: dict[str, Any] = {role: np.stack(vectors) for role, vectors in out.items()}
    if features:
        embedded["features"] = features
    return embedded


@dataclass(frozen=True)
class EmbedOptions:
    """How test sequences are embedded and which self-pairing role each side uses."""

    max_frames: int = setting(
        128, "frames per test sequence, from its start (128, as the authors' code)"
    )
    flip: bool = setting(False, "average each sequence's embedding with its mirror image's")
    query_role: str = setting(
        "probe", "self-pairing role embedding the queries", choices=("probe", "gallery")
    )
    gallery_role: str = setting(
        "gallery", "self-pairing role embedding the gallery", choices=("probe", "gallery")
    )

    def __post_init__(self) -> None:
        for role in (self.query_role, self.gallery_role):
            if role not in ROLES:
                raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        if self.max_frames < 1:
            raise ValueError("max_frames must be >= 1")
