"""Loss terms, as plain functions of tensors.

* ``pair_loss``: the paper's contrastive hinge (eq. 6) on jointly pooled pairs;
* ``identity_loss``: cross-entropy of the shared identity classifier (the paper's I(v)),
  optionally with label smoothing;
* ``batch_hard_triplet``: for each anchor, its farthest positive against its nearest negative
  (Hermans et al., 2017), on the distances the service ranks by: query (probe-role) embeddings
  against gallery (gallery-role) embeddings of the self-paired tracklets.
"""

from __future__ import annotations

from typing import Any

HINGES = ("squared", "unsquared")


def pair_loss(
    v_p: Any, v_g: Any, positive: Any, margin: float = 3.0, hinge: str = "squared"
) -> Any:
    """Eq. 6 per pair (tensor (B,)): ``squared`` as the paper writes it, ``unsquared`` as the
    authors' code (torch HingeEmbeddingCriterion on the L2 distance)."""
    import torch

    sq = (v_p - v_g).pow(2).sum(dim=1)
    # sqrt has an infinite gradient at 0 (identical embeddings): keep it finite.
    dist = sq if hinge == "squared" else torch.sqrt(sq + 1e-12)
    return torch.where(positive, dist, torch.clamp(margin - dist, min=0.0))


def identity_loss(logits: Any, labels: Any, label_smoothing: float = 0.0) -> Any:
    import torch

    return torch.nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def batch_hard_triplet(queries: Any, gallery: Any, labels: Any, margin: float = 0.3) -> Any:
    """Mean over anchors of max(0, d(hardest positive) - d(hardest negative) + margin), with
    d(i, j) = ||queries[i] - gallery[j]||; anchors without a negative in the batch are skipped."""
    import torch

    dist = torch.cdist(queries, gallery)
    same = labels[:, None] == labels[None, :]
    hardest_positive = dist.masked_fill(~same, float("-inf")).amax(dim=1)
    hardest_negative = dist.masked_fill(same, float("inf")).amin(dim=1)
    valid = torch.isfinite(hardest_negative)
    if not bool(valid.any()):
        return dist.sum() * 0.0
    losses = torch.clamp(hardest_positive - hardest_negative + margin, min=0.0)
    return losses[valid].mean()
