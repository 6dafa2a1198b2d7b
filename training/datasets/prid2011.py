"""PRID-2011, multi-shot part.

Layout of the public release (``--root`` may be the folder holding ``prid_2011`` or that
folder itself)::

    ROOT/prid_2011/multi_shot/cam_a/person_0001/0001.png   (385 persons)
    ROOT/prid_2011/multi_shot/cam_b/person_0001/0001.png   (749 persons)

Only the first 200 persons of each camera are the same people (``person_0201`` of cam_a is not
``person_0201`` of cam_b), so the protocol uses those 200: seeded random 50/50 person splits,
camera a queries, camera b is the gallery. ``min_frames=21`` keeps the 178 persons with at least
21 frames in both cameras (the variant of McLaughlin et al. and the authors' code).
"""

from __future__ import annotations

from pathlib import Path

from training.datasets.base import (
    DatasetError,
    Tracklet,
    VideoDataset,
    find_root,
    frames_in,
    random_halves,
    register_dataset,
    require_dir,
    two_camera_split,
)

DATA_DIR = "prid_2011"
CAMERA_DIRS = {1: "cam_a", 2: "cam_b"}
SHARED_PERSONS = 200


@register_dataset("prid2011")
def build_prid2011(
    root: Path,
    min_frames: int = 0,
    num_splits: int = 10,
    seed: int = 0,
    num_shared_persons: int = SHARED_PERSONS,
) -> VideoDataset:
    base = find_root(root, DATA_DIR, "prid2011")
    multi_shot = require_dir(
        base / "multi_shot",
        "prid2011",
        f"--root must hold {DATA_DIR}/multi_shot/cam_a and cam_b (the public release's layout)",
    )
    tracklets: list[Tracklet] = []
    kept: list[int] = []
    for person in range(1, int(num_shared_persons) + 1):
        pair = []
        for camera, cam_name in CAMERA_DIRS.items():
            folder = require_dir(
                multi_shot / cam_name / f"person_{person:04d}",
                "prid2011",
                f"the first {num_shared_persons} persons must exist in both cameras",
            )
            frames = frames_in(folder)
            if not frames:
                raise DatasetError(f"prid2011: {folder} has no image files")
            pair.append(Tracklet(frames, person, camera))
        if all(len(t.frames) >= int(min_frames) for t in pair):
            tracklets.extend(pair)
            kept.append(person)
    if len(kept) < 2:
        raise DatasetError(f"prid2011: only {len(kept)} persons have >= {min_frames} frames")
    halves = random_halves(kept, int(num_splits), int(seed))
    source = (
        f"{len(kept)} persons (>= {min_frames} frames), {num_splits} random 50/50 splits, "
        f"seed {seed}"
    )

    def make_split(index: int):
        train_ids, test_ids = halves[index]
        return two_camera_split(tracklets, train_ids, test_ids, 1, 2, f"prid2011 split {index}")

    info = {"num_persons": len(kept), "num_tracklets": len(tracklets), "splits": source}
    return VideoDataset("prid2011", base, len(halves), make_split, info)
