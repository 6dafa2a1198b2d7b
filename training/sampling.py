"""Which tracklets train together: the paper's balanced pairs, or identity-balanced batches.

Pair sampling (paper §4.1.1): every epoch each training person with sequences in at least two
cameras anchors exactly one positive pair (its sequences in two different cameras) and one
negative pair (its sequence in one camera vs. another person's sequence in a different camera),
and positives and negatives alternate, so any even-sized mini-batch is balanced.

Identity sampling (the "PK" batches of metric-learning re-id): every epoch each such person
appears in exactly one batch, with ``per_identity`` tracklets from as many different cameras as
it has; a batch holds ``identities`` persons. Every tracklet of a batch is then both an anchor
and a candidate for the batch-hard triplet loss, and pairs for the paper's loss are formed
inside the batch (:func:`batch_pairs`).

Everything random is drawn from ``np.random.default_rng((seed, epoch, ...))`` so a run is
reproducible from its seed and a resumed run sees the same pairs and clips as an uninterrupted
one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.preprocessing import PAPER_INPUT, InputSpec
from training.augment import CLIP_LENGTH, AugmentConfig, make_clip


@dataclass(frozen=True)
class Pair:
    """Indices into the training tracklet list; ``positive`` = same person."""

    probe: int
    gallery: int
    positive: bool


class PairSampler:
    """Balanced positive/negative pairs, one positive and one negative per person per epoch.

    ``labels[i]`` is tracklet i's training label (0..num_ids-1), ``cameras[i]`` its camera.
    Persons seen by a single camera cannot form a cross-camera positive; they still serve as
    the *other* person of negatives. ``fixed_probe_camera=True`` always puts the
    lower-numbered camera in the probe branch (the paper's camera-1 probe); by default the
    order is random so the attention's probe/gallery roles do not learn camera-specific
    statistics -- the service enrolls and queries from arbitrary cameras.
    """

    def __init__(
        self,
        labels: Sequence[int],
        cameras: Sequence[int],
        seed: int = 0,
        *,
        fixed_probe_camera: bool = False,
    ) -> None:
        if len(labels) != len(cameras):
            raise ValueError("labels and cameras must have the same length")
        self.seed = seed
        self.fixed_probe_camera = fixed_probe_camera
        by_person: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (label, camera) in enumerate(zip(labels, cameras, strict=True)):
            by_person[int(label)][int(camera)].append(index)
        self._by_person = {p: dict(cams) for p, cams in by_person.items()}
        self.anchors = sorted(p for p, cams in self._by_person.items() if len(cams) >= 2)
        if not self.anchors:
            raise ValueError("no person has sequences in two cameras: no positive pairs")
        if len(self._by_person) < 2:
            raise ValueError("need at least two persons for negative pairs")
        self._persons = sorted(self._by_person)

    def __len__(self) -> int:
        """Pairs per epoch."""
        return 2 * len(self.anchors)

    def _pick(self, rng: np.random.Generator, person: int, camera: int) -> int:
        options = self._by_person[person][camera]
        return options[int(rng.integers(len(options)))]

    def epoch(self, epoch: int) -> list[Pair]:
        """The epoch's pairs: positive, negative, positive, ... (deterministic per seed/epoch)."""
        rng = np.random.default_rng((self.seed, epoch, 0x5A17))
        pairs: list[Pair] = []
        for anchor in rng.permutation(self.anchors):
            anchor = int(anchor)
            cams = sorted(self._by_person[anchor])
            c1, c2 = (int(c) for c in rng.choice(cams, size=2, replace=False))
            if self.fixed_probe_camera:
                c1, c2 = min(c1, c2), max(c1, c2)
            pairs.append(Pair(self._pick(rng, anchor, c1), self._pick(rng, anchor, c2), True))

            other = anchor
            while other == anchor:
                other = self._persons[int(rng.integers(len(self._persons)))]
            # The paper's negative: anchor in one camera, the other person in another camera
            # (the test condition); fall back to any camera if the other person has no other.
            other_cams = [c for c in sorted(self._by_person[other]) if c != c1]
            if not other_cams:
                other_cams = sorted(self._by_person[other])
            c_other = other_cams[int(rng.integers(len(other_cams)))]
            pairs.append(Pair(self._pick(rng, anchor, c1), self._pick(rng, other, c_other), False))
        return pairs


@dataclass
class PairBatch:
    """A mini-batch of pairs as NumPy arrays (converted to tensors by the trainer)."""

    probe: np.ndarray  # (B, L, 5, H, W) float32
    gallery: np.ndarray
    probe_mask: np.ndarray  # (B, L) bool, True = real frame
    gallery_mask: np.ndarray
    probe_labels: np.ndarray  # (B,) int64 training labels
    gallery_labels: np.ndarray
    positive: np.ndarray  # (B,) bool


def build_pair_batch(
    pairs: Sequence[Pair],
    sequences: Sequence[np.ndarray],
    labels: Sequence[int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    clip_length: int = CLIP_LENGTH,
    spec: InputSpec = PAPER_INPUT,
) -> PairBatch:
    """Clips for a list of pairs; crop/mirror/erasing drawn independently for each sequence."""
    b = len(pairs)
    probe = np.zeros((b, clip_length, len(spec.channels), *spec.crop_size), dtype=np.float32)
    gallery = np.zeros_like(probe)
    p_mask = np.zeros((b, clip_length), dtype=bool)
    g_mask = np.zeros_like(p_mask)
    for i, pair in enumerate(pairs):
        probe[i], n_p = make_clip(sequences[pair.probe], rng, cfg, clip_length, spec)
        gallery[i], n_g = make_clip(sequences[pair.gallery], rng, cfg, clip_length, spec)
        p_mask[i, :n_p] = True
        g_mask[i, :n_g] = True
    return PairBatch(
        probe=probe,
        gallery=gallery,
        probe_mask=p_mask,
        gallery_mask=g_mask,
        probe_labels=np.array([labels[p.probe] for p in pairs], dtype=np.int64),
        gallery_labels=np.array([labels[p.gallery] for p in pairs], dtype=np.int64),
        positive=np.array([p.positive for p in pairs], dtype=bool),
    )


def batch_rng(seed: int, epoch: int, batch_index: int) -> np.random.Generator:
    """Generator for one mini-batch's augmentation: a resumed run redraws the same clips."""
    return np.random.default_rng((seed, epoch, batch_index, 0xC11B))


class IdentitySampler:
    """Batches of ``identities`` persons x ``per_identity`` tracklets (see the module)."""

    def __init__(
        self,
        labels: Sequence[int],
        cameras: Sequence[int],
        seed: int = 0,
        *,
        identities: int = 16,
        per_identity: int = 2,
    ) -> None:
        if identities < 2 or per_identity < 2:
            raise ValueError("identity batches need >= 2 identities and >= 2 tracklets each")
        self.seed = seed
        self.identities = identities
        self.per_identity = per_identity
        by_person: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        for index, (label, camera) in enumerate(zip(labels, cameras, strict=True)):
            by_person[int(label)][int(camera)].append(index)
        self._by_person = {p: dict(cams) for p, cams in by_person.items()}
        self.anchors = sorted(p for p, cams in self._by_person.items() if len(cams) >= 2)
        if len(self.anchors) < identities:
            raise ValueError(
                f"{len(self.anchors)} persons are seen by two cameras; a batch needs {identities}"
            )

    def __len__(self) -> int:
        """Batches per epoch (the last partial batch is dropped)."""
        return len(self.anchors) // self.identities

    def _tracklets(self, rng: np.random.Generator, person: int) -> list[int]:
        cams = self._by_person[person]
        order = [int(c) for c in rng.permutation(sorted(cams))]
        # One tracklet per camera first (cross-camera positives), then any tracklet again.
        chosen = [cams[c][int(rng.integers(len(cams[c])))] for c in order[: self.per_identity]]
        pool = [i for c in order for i in cams[c]]
        while len(chosen) < self.per_identity:
            chosen.append(pool[int(rng.integers(len(pool)))])
        return chosen

    def epoch(self, epoch: int) -> list[list[int]]:
        """The epoch's batches: lists of tracklet indices, ``per_identity`` per person in a row."""
        rng = np.random.default_rng((self.seed, epoch, 0x1D5))
        persons = [int(p) for p in rng.permutation(self.anchors)]
        batches = []
        for start in range(0, len(self) * self.identities, self.identities):
            group = persons[start : start + self.identities]
            batches.append([i for p in group for i in self._tracklets(rng, p)])
        return batches


def batch_pairs(labels: np.ndarray, per_identity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs inside an identity batch for the paper's loss: each person's first tracklet with
    its second (positive) and with the next person's second (negative), alternating.
    Returns probe indices, gallery indices and the positive flags."""
    firsts = np.arange(0, len(labels), per_identity)
    seconds = firsts + 1
    probe = np.repeat(firsts, 2)
    gallery = np.stack([seconds, np.roll(seconds, -1)], axis=1).ravel()
    positive = labels[probe] == labels[gallery]
    return probe, gallery, positive


@dataclass
class ClipBatch:
    """An identity batch as NumPy arrays: one augmented clip per tracklet."""

    clips: np.ndarray  # (B, L, 5, H, W) float32, L = the longest clip of the batch
    mask: np.ndarray  # (B, L) bool, True = real frame
    labels: np.ndarray  # (B,) int64


def build_clip_batch(
    indices: Sequence[int],
    sequences: Sequence[np.ndarray],
    labels: Sequence[int],
    rng: np.random.Generator,
    cfg: AugmentConfig,
    clip_length: int = CLIP_LENGTH,
    spec: InputSpec = PAPER_INPUT,
) -> ClipBatch:
    """Clips for an identity batch, padded to the batch's longest clip (not to clip_length:
    short tracklets then cost no padded frames)."""
    made = [make_clip(sequences[i], rng, cfg, clip_length, spec) for i in indices]
    length = max(valid for _, valid in made)
    clips = np.stack([clip[:length] for clip, _ in made])
    mask = np.zeros((len(made), length), dtype=bool)
    for row, (_, valid) in enumerate(made):
        mask[row, :valid] = True
    return ClipBatch(clips, mask, np.array([labels[i] for i in indices], dtype=np.int64))
