"""Colour-histogram matcher: the "no learning" floor that a trained ASTPN must beat by far.

Each tracklet becomes two HSV joint histograms (upper body and lower body of the central
region of the crop, where the person is), averaged over frames. Histograms are compared with
the Hellinger distance (equivalent in ranking to Bhattacharyya): the features are the square
roots of the normalised histograms, so plain Euclidean distance between them *is* the Hellinger
distance, and the project's Euclidean CMC code applies unchanged.

Protocol: exactly the network's, through the same dataset registry (``training.datasets``):
the split's query and gallery tracklets, the same CMC/mAP code and same-camera exclusion.

    python -m training color-baseline --dataset synthetic --root data/synthetic --splits 0,1,2
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from model.preprocessing import read_frame
from training.cli import parse_int_list, parse_key_values
from training.metrics import cmc_at, euclidean_distances, evaluate_rankings

HSV_BINS = (8, 4, 4)
# Rows / columns (fractions of the crop) of the two body stripes; the crop's side columns are
# mostly background, so only the central half of the width is used.
STRIPES = ((0.12, 0.5), (0.5, 0.92))
COLUMNS = (0.25, 0.75)


def color_histogram_features(frames: Sequence[np.ndarray], max_frames: int = 32) -> np.ndarray:
    """One tracklet (RGB uint8 frames) -> 1-D float32 feature (sqrt of stripe histograms).

    At most `max_frames` frames, evenly spaced, are used: the average histogram barely changes
    beyond that and long tracklets would otherwise dominate the run time.
    """
    if len(frames) == 0:
        raise ValueError("empty tracklet")
    picks = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    parts = np.zeros((len(STRIPES), int(np.prod(HSV_BINS))), np.float64)
    for i in picks:
        frame = frames[int(i)]
        h, w = frame.shape[:2]
        hsv = cv2.cvtColor(np.ascontiguousarray(frame[..., :3]), cv2.COLOR_RGB2HSV)
        c0, c1 = int(w * COLUMNS[0]), int(w * COLUMNS[1])
        for k, (r0, r1) in enumerate(STRIPES):
            region = hsv[int(h * r0) : int(h * r1), c0:c1]
            hist = cv2.calcHist([region], [0, 1, 2], None, list(HSV_BINS), [0, 180, 0, 256, 0, 256])
            parts[k] += hist.ravel()
    parts /= np.maximum(parts.sum(axis=1, keepdims=True), 1e-12)
    # sqrt -> Euclidean = Hellinger; / sqrt(#stripes) keeps the whole vector unit-norm.
    return (np.sqrt(parts).ravel() / np.sqrt(len(STRIPES))).astype(np.float32)


def _tracklet_features(tracklet: Any, max_frames: int) -> np.ndarray:
    frames = tracklet.frames
    picks = np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int)
    return color_histogram_features([read_frame(frames[int(i)]) for i in picks], max_frames)


def evaluate_color_baseline(
    query: Sequence[Any], gallery: Sequence[Any], max_frames: int = 32
) -> dict[str, Any]:
    """CMC/mAP of the colour-histogram matcher on a split's query and gallery tracklets
    (``training.datasets.Tracklet``: frames, identity, camera).

    Returns ``{"rank1", "rank5", "rank10", "rank20", "mAP"}`` as fractions in [0, 1], plus
    ``num_query`` and ``num_gallery``.
    """
    q = np.stack([_tracklet_features(t, max_frames) for t in query])
    g = np.stack([_tracklet_features(t, max_frames) for t in gallery])
    cmc, m_ap = evaluate_rankings(
        euclidean_distances(q, g),
        np.array([t.identity for t in query]),
        np.array([t.identity for t in gallery]),
        np.array([t.camera for t in query]),
        np.array([t.camera for t in gallery]),
        max_rank=min(50, len(gallery)),
    )
    result: dict[str, Any] = {f"rank{r}": v for r, v in cmc_at(cmc).items()}
    result.update(mAP=float(m_ap), num_query=len(query), num_gallery=len(gallery))
    return result


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "color-baseline",
        description="CMC/mAP of the colour-histogram matcher on a dataset's test protocol "
        "(the same query/gallery sets and metric code as `python -m training evaluate`).",
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. synthetic")
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    parser.add_argument(
        "--dataset-option", action="append", metavar="KEY=VALUE", help="dataset builder option"
    )
    parser.add_argument(
        "--splits", type=parse_int_list, default=[0], help="comma-separated split indices"
    )
    parser.add_argument("--max-frames", type=int, default=32, help="frames used per tracklet")
    parser.add_argument(
        "--all-test-identities",
        action="store_true",
        help="also test on the split's training persons (as evaluate does)",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from training.datasets import build_dataset
    from training.evaluate import protocol_sets

    dataset = build_dataset(args.dataset, args.root, **parse_key_values(args.dataset_option))
    results = []
    for i in args.splits:
        query, gallery = protocol_sets(dataset.split(i), args.all_test_identities)
        results.append(evaluate_color_baseline(query, gallery, args.max_frames))
        r = results[-1]
        print(
            f"split {i} ({len(query)} queries, {len(gallery)} gallery): rank1 {r['rank1']:.1%} "
            f"rank5 {r['rank5']:.1%} rank10 {r['rank10']:.1%} rank20 {r['rank20']:.1%} "
            f"mAP {r['mAP']:.1%}"
        )
    mean = {
        k: float(np.mean([r[k] for r in results]))
        for k in ("rank1", "rank5", "rank10", "rank20", "mAP")
    }
    print("mean: " + " ".join(f"{k} {v:.1%}" for k, v in mean.items()))
    return 0
