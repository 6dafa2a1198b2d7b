"""Colour-histogram matcher: the "no learning" floor that a trained ASTPN must beat by far.

Each tracklet becomes two HSV joint histograms (upper body and lower body of the central
region of the crop, where the person is), averaged over frames. Histograms are compared with
the Hellinger distance (equivalent in ranking to Bhattacharyya): the features are the square
roots of the normalised histograms, so plain Euclidean distance between them *is* the Hellinger
distance, and the project's Euclidean CMC code applies unchanged.

Protocol (i-LIDS-VID): for one row of ``ls_set`` the second half are test persons; camera 1 is
the query set, camera 2 the gallery; CMC at ranks 1, 5, 10, 20.

    python -m training.color_baseline DATASET_ROOT --splits 3
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from training.metrics import cmc_at, euclidean_distances, evaluate_rankings

HSV_BINS = (8, 4, 4)
# Rows / columns (fractions of the crop) of the two body stripes; the crop's side columns are
# mostly background, so only the central half of the width is used.
STRIPES = ((0.12, 0.5), (0.5, 0.92))
COLUMNS = (0.25, 0.75)
_FRAME_NUMBER = re.compile(r"(\d+)\.png$", re.IGNORECASE)


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


def _sequences_root(dataset_root: Path) -> Path:
    for candidate in (dataset_root / "i-LIDS-VID" / "sequences", dataset_root / "sequences"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no i-LIDS-VID sequences under {dataset_root}")


def _splits_file(dataset_root: Path) -> Path:
    for base in (dataset_root, dataset_root.parent):
        path = base / "train-test people splits" / "train_test_splits_ilidsvid.mat"
        if path.is_file():
            return path
    raise FileNotFoundError(f"no train_test_splits_ilidsvid.mat near {dataset_root}")


def _read_tracklet(folder: Path, max_frames: int) -> list[np.ndarray]:
    paths = sorted(folder.glob("*.png"), key=lambda p: int(_FRAME_NUMBER.search(p.name)[1]))
    picks = np.linspace(0, len(paths) - 1, min(max_frames, len(paths))).round().astype(int)
    frames = []
    for i in picks:
        bgr = cv2.imread(str(paths[int(i)]), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"cannot read {paths[int(i)]}")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def evaluate_color_baseline(
    dataset_root: str | Path, split_index: int = 0, max_frames: int = 32
) -> dict:
    """CMC of the colour-histogram matcher on one i-LIDS-VID split (cam1 query, cam2 gallery).

    ``ls_set`` indices are 1-based positions in the sorted list of persons seen by both
    cameras (the convention of the i-LIDS-VID release and of the ASTPN/RNN-CNN code).
    Returns ``{"rank1", "rank5", "rank10", "rank20", "mAP"}`` as fractions in [0, 1], plus
    ``num_query``, ``num_gallery`` and ``split``.
    """
    from scipy.io import loadmat  # training-only dependency

    root = Path(dataset_root)
    sequences = _sequences_root(root)
    cam1 = {p.name for p in (sequences / "cam1").iterdir() if p.is_dir()}
    cam2 = {p.name for p in (sequences / "cam2").iterdir() if p.is_dir()}
    persons = sorted(cam1 & cam2)
    ls_set = np.asarray(loadmat(str(_splits_file(root)))["ls_set"]).astype(int)
    if not 0 <= split_index < ls_set.shape[0]:
        raise IndexError(f"split {split_index} out of range (0..{ls_set.shape[0] - 1})")
    row = ls_set[split_index]
    if row.max() > len(persons):
        raise ValueError(f"ls_set refers to person {row.max()} but only {len(persons)} exist")
    test = [persons[i - 1] for i in row[len(row) // 2 :]]
    query = np.stack(
        [color_histogram_features(_read_tracklet(sequences / "cam1" / p, max_frames)) for p in test]
    )
    gallery = np.stack(
        [color_histogram_features(_read_tracklet(sequences / "cam2" / p, max_frames)) for p in test]
    )
    pids = np.arange(len(test))
    cmc, m_ap = evaluate_rankings(
        euclidean_distances(query, gallery),
        pids,
        pids,
        np.zeros(len(test), int),
        np.ones(len(test), int),
        max_rank=min(50, len(test)),
    )
    result: dict = {f"rank{r}": v for r, v in cmc_at(cmc).items()}
    result.update(mAP=float(m_ap), num_query=len(test), num_gallery=len(test), split=split_index)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.color_baseline",
        description="CMC of the colour-histogram matcher on an i-LIDS-VID-layout dataset.",
    )
    parser.add_argument("root", type=Path, help="folder holding i-LIDS-VID/ and the splits")
    parser.add_argument("--splits", type=int, default=3, help="evaluate splits 0..N-1, average")
    parser.add_argument("--max-frames", type=int, default=32, help="frames used per tracklet")
    args = parser.parse_args(argv)
    results = [evaluate_color_baseline(args.root, i, args.max_frames) for i in range(args.splits)]
    for r in results:
        print(
            f"split {r['split']}: rank1 {r['rank1']:.1%} rank5 {r['rank5']:.1%} "
            f"rank10 {r['rank10']:.1%} rank20 {r['rank20']:.1%} mAP {r['mAP']:.1%}"
        )
    mean = {
        k: float(np.mean([r[k] for r in results]))
        for k in ("rank1", "rank5", "rank10", "rank20", "mAP")
    }
    print("mean: " + " ".join(f"{k} {v:.1%}" for k, v in mean.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
