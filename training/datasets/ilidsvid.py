"""i-LIDS-VID (and the synthetic set, written in its layout).

Layout of the public release (``--root`` may be the folder holding both, or ``i-LIDS-VID``)::

    ROOT/i-LIDS-VID/sequences/cam1/person001/cam1_person001_00317.png
    ROOT/i-LIDS-VID/sequences/cam2/person001/...
    ROOT/train-test people splits/train_test_splits_ilidsvid.mat   (ls_set: 10 x 300)

Each row of ``ls_set`` is a permutation of the 1-based indices of the persons (into the sorted
list of ``cam1`` person folders); its first half are the test persons and its second half the
training persons (Wang et al., ECCV 2014, as torchreid reads it). Camera 1 queries, camera 2 is
the gallery.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from training.datasets.base import (
    DatasetError,
    Tracklet,
    VideoDataset,
    find_root,
    frames_in,
    random_halves,
    register_dataset,
    require_dir,
    require_file,
    two_camera_split,
)

DATA_DIR = "i-LIDS-VID"
SPLITS_DIR = "train-test people splits"
SPLITS_FILE = "train_test_splits_ilidsvid.mat"
CAMERAS = (1, 2)


def _person_number(folder: Path) -> int:
    digits = "".join(c for c in folder.name if c.isdigit())
    if not folder.name.startswith("person") or not digits:
        raise DatasetError(f"i-LIDS-VID: {folder} is not a personNNN folder")
    return int(digits)


def _official_splits(
    split_file: Path, persons: list[int], dataset: str
) -> list[tuple[list[int], list[int]]]:
    from scipy.io import loadmat  # training-only dependency

    try:
        ls_set = np.asarray(loadmat(str(split_file))["ls_set"])
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(
            f"{dataset}: cannot read ls_set from {split_file} ({exc}); use the file of the "
            "public release, or --dataset-option splits=random"
        ) from exc
    if ls_set.ndim != 2 or ls_set.shape[1] != len(persons):
        raise DatasetError(
            f"{dataset}: {split_file} has ls_set of shape {ls_set.shape}, but the dataset has "
            f"{len(persons)} persons: expected (num_splits, {len(persons)})"
        )
    indices = ls_set.astype(np.int64)
    if indices.min() < 1 or indices.max() > len(persons):
        raise DatasetError(f"{dataset}: {split_file} has person indices outside 1..{len(persons)}")
    half = len(persons) // 2
    return [
        (sorted(persons[i - 1] for i in row[half:]), sorted(persons[i - 1] for i in row[:half]))
        for row in indices
    ]


def load_ilidsvid_layout(
    root: Path,
    name: str,
    splits: str = "official",
    num_splits: int = 10,
    seed: int = 0,
) -> VideoDataset:
    """Read an i-LIDS-VID layout; ``splits`` is ``official`` (the .mat file) or ``random``
    (``num_splits`` seeded random halves)."""
    base = find_root(root, DATA_DIR, name)
    sequences = require_dir(
        base / "sequences",
        name,
        f"--root must hold {DATA_DIR}/sequences/cam1 and cam2 (the public release's layout)",
    )
    cam_dirs = [require_dir(sequences / f"cam{c}", name) for c in CAMERAS]
    cam1_people = sorted(p for p in cam_dirs[0].iterdir() if p.is_dir())
    if not cam1_people:
        raise DatasetError(f"{name}: {cam_dirs[0]} has no personNNN folders")
    persons = [_person_number(p) for p in cam1_people]
    tracklets: list[Tracklet] = []
    for camera, cam_dir in zip(CAMERAS, cam_dirs, strict=True):
        for folder in cam1_people:
            person_dir = require_dir(
                cam_dir / folder.name, name, "every person is seen by both cameras"
            )
            frames = frames_in(person_dir)
            if not frames:
                raise DatasetError(f"{name}: {person_dir} has no image files")
            tracklets.append(Tracklet(frames, _person_number(folder), camera))

    if splits == "official":
        split_file = next(
            (
                candidate / SPLITS_DIR / SPLITS_FILE
                for candidate in (base.parent, root, base)
                if (candidate / SPLITS_DIR / SPLITS_FILE).is_file()
            ),
            base.parent / SPLITS_DIR / SPLITS_FILE,
        )
        require_file(
            split_file,
            name,
            "It ships with the dataset; or pass --dataset-option splits=random for seeded "
            "random 50/50 person splits",
        )
        halves = _official_splits(split_file, persons, name)
        source = f"official splits from {split_file}"
    elif splits == "random":
        halves = random_halves(persons, num_splits, seed)
        source = f"{num_splits} random 50/50 splits, seed {seed}"
    else:
        raise DatasetError(f"{name}: splits must be 'official' or 'random', not {splits!r}")

    def make_split(index: int):
        train_ids, test_ids = halves[index]
        return two_camera_split(
            tracklets, train_ids, test_ids, 1, 2, f"{name} split {index}: {source}"
        )

    info: dict = {"num_persons": len(persons), "num_tracklets": len(tracklets), "splits": source}
    meta = base.parent / "synthetic.json"
    if meta.is_file():
        info["synthetic"] = {
            k: v for k, v in json.loads(meta.read_text()).items() if k not in {"persons"}
        }
    return VideoDataset(name, base, len(halves), make_split, info)


@register_dataset("ilidsvid")
def build_ilidsvid(
    root: Path, splits: str = "official", num_splits: int = 10, seed: int = 0
) -> VideoDataset:
    return load_ilidsvid_layout(root, "ilidsvid", splits, int(num_splits), int(seed))


@register_dataset("synthetic")
def build_synthetic(
    root: Path, splits: str = "official", num_splits: int = 10, seed: int = 0
) -> VideoDataset:
    """The synthetic pedestrians (``python -m training synth``): i-LIDS-VID's layout."""
    if not (Path(root) / "synthetic.json").is_file() and (Path(root) / DATA_DIR).is_dir():
        raise DatasetError(
            f"synthetic: {Path(root) / 'synthetic.json'} is missing; {root} looks like a real "
            "i-LIDS-VID download: use --dataset ilidsvid"
        )
    return load_ilidsvid_layout(root, "synthetic", splits, int(num_splits), int(seed))
