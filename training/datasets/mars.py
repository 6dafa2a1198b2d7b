"""MARS.

Layout of the public release (``--root`` is the folder holding all of these)::

    ROOT/bbox_train/0001/0001C1T0001F001.jpg     (person 0001, camera 1, tracklet 1, frame 1)
    ROOT/bbox_test/...
    ROOT/info/train_name.txt, test_name.txt      (one image name per line)
    ROOT/info/tracks_train_info.mat              (track_train_info: start, end, pid, cam; 1-based)
    ROOT/info/tracks_test_info.mat               (track_test_info)
    ROOT/info/query_IDX.mat                      (query_IDX: 1-based rows of track_test_info)

Protocols (``--dataset-option protocol=...``):

* ``standard`` (one split): the query tracklets of ``query_IDX``; the gallery is every other
  test tracklet (multi-shot: a person has many). Junk tracklets (identity -1) are dropped;
  distractors (identity 0) stay in the gallery as wrong answers. The ranking then drops the
  same-identity same-camera gallery entries per query, the evaluation everyone reports.
* ``two-camera`` (the paper's simplification, ``num_splits`` seeded draws): for every test
  person seen by two or more cameras, two cameras are drawn, one of its tracklets in the first
  is the query and one in the second the gallery entry.

Training always uses every training tracklet (625 persons, 6 cameras).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from training.datasets.base import (
    DatasetError,
    Split,
    Tracklet,
    VideoDataset,
    find_root,
    frame_number,
    register_dataset,
    require_dir,
    require_file,
)

JUNK = -1
PROTOCOLS = ("standard", "two-camera")


def _load_mat(path: Path, key: str) -> np.ndarray:
    from scipy.io import loadmat  # training-only dependency

    require_file(path, "mars", "it ships in the release's info/ folder")
    try:
        return np.asarray(loadmat(str(path))[key])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"mars: cannot read {key!r} from {path}: {exc}") from exc


def _tracklets(base: Path, part: str, info_key: str, names_file: str) -> list[Tracklet]:
    """One :class:`Tracklet` per row of the track info table, junk included (identity -1)."""
    info_dir = base / "info"
    names_path = require_file(info_dir / names_file, "mars", "it ships in the release's info/")
    names = [line.strip() for line in names_path.read_text().splitlines() if line.strip()]
    table = _load_mat(info_dir / f"tracks_{part}_info.mat", info_key)
    if table.ndim != 2 or table.shape[1] < 4:
        raise DatasetError(f"mars: {info_key} must be (N, 4): start, end, pid, cam")
    images = require_dir(base / f"bbox_{part}", "mars")
    tracklets = []
    for row_number, (start, end, pid, cam) in enumerate(table[:, :4].astype(np.int64), 1):
        if not 1 <= start <= end <= len(names):
            raise DatasetError(
                f"mars: row {row_number} of {info_key} spans images {start}..{end}, but "
                f"{names_file} lists {len(names)}"
            )
        chosen = names[start - 1 : end]
        if len({name[:4] for name in chosen}) != 1 or len({name[5] for name in chosen}) != 1:
            raise DatasetError(
                f"mars: row {row_number} of {info_key} mixes persons or cameras ({chosen[0]} .. "
                f"{chosen[-1]}); info/ and {names_file} do not belong together"
            )
        paths = [images / name[:4] / name for name in chosen]
        frames = tuple(sorted(paths, key=lambda p: (frame_number(p), p.name)))
        tracklets.append(Tracklet(frames, int(pid), int(cam)))
    for path in (tracklets[0].frames[0], tracklets[-1].frames[-1]) if tracklets else ():
        require_file(path, "mars", f"image listed in info/{names_file}")
    return tracklets


def _two_camera(
    test: list[Tracklet], seed: int, index: int
) -> tuple[tuple[Tracklet, ...], tuple[Tracklet, ...]]:
    rng = np.random.default_rng((seed, index))
    by_person: dict[int, dict[int, list[Tracklet]]] = defaultdict(lambda: defaultdict(list))
    for t in test:
        if t.identity > 0:
            by_person[t.identity][t.camera].append(t)
    query, gallery = [], []
    for person in sorted(by_person):
        cams = sorted(by_person[person])
        if len(cams) < 2:
            continue
        first, second = (int(c) for c in rng.choice(cams, size=2, replace=False))
        options_q, options_g = by_person[person][first], by_person[person][second]
        query.append(options_q[int(rng.integers(len(options_q)))])
        gallery.append(options_g[int(rng.integers(len(options_g)))])
    return tuple(query), tuple(gallery)


@register_dataset("mars")
def build_mars(
    root: Path,
    protocol: str = "standard",
    min_frames: int = 0,
    num_splits: int | None = None,
    seed: int = 0,
) -> VideoDataset:
    if protocol not in PROTOCOLS:
        raise DatasetError(f"mars: protocol must be one of {PROTOCOLS}, not {protocol!r}")
    base = find_root(root, "MARS", "mars")
    require_dir(base / "info", "mars", "--root must hold bbox_train/, bbox_test/ and info/")
    train = [
        t
        for t in _tracklets(base, "train", "track_train_info", "train_name.txt")
        if t.identity != JUNK and len(t.frames) >= int(min_frames)
    ]
    test_all = _tracklets(base, "test", "track_test_info", "test_name.txt")
    query_rows = _load_mat(base / "info" / "query_IDX.mat", "query_IDX").ravel().astype(np.int64)
    if query_rows.size == 0 or query_rows.min() < 1 or query_rows.max() > len(test_all):
        raise DatasetError(f"mars: query_IDX must index rows 1..{len(test_all)} of the test info")
    is_query = np.zeros(len(test_all), dtype=bool)
    is_query[query_rows - 1] = True

    def usable(t: Tracklet) -> bool:
        return t.identity != JUNK and len(t.frames) >= int(min_frames)

    std_query = tuple(t for t, q in zip(test_all, is_query, strict=True) if q and usable(t))
    std_gallery = tuple(t for t, q in zip(test_all, is_query, strict=True) if not q and usable(t))
    splits = 1 if protocol == "standard" else int(num_splits or 10)

    def make_split(index: int) -> Split:
        if protocol == "standard":
            return Split(tuple(train), std_query, std_gallery, "mars standard query/gallery")
        query, gallery = _two_camera([t for t in test_all if usable(t)], int(seed), index)
        return Split(tuple(train), query, gallery, f"mars two-camera draw {index}, seed {seed}")

    info = {
        "protocol": protocol,
        "num_train_tracklets": len(train),
        "num_train_persons": len({t.identity for t in train}),
        "num_query": len(std_query),
        "num_gallery": len(std_gallery),
        "num_junk_dropped": sum(t.identity == JUNK for t in test_all),
        "num_distractors": sum(t.identity == 0 for t in std_gallery),
    }
    return VideoDataset("mars", base, splits, make_split, info)
