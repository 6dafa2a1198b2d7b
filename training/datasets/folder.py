"""Your own labelled tracklets: ``ROOT/<camera>/<identity>/<frames>``.

A person folder holds either the frames of one tracklet, or one sub-folder per tracklet
(``ROOT/<camera>/<identity>/<tracklet>/<frames>``) when a camera saw the person more than once.
Folder names are free text; cameras and identities are numbered 1.. in sorted name order (the
names are kept in ``dataset.info``). Frames are ordered by the last number in their file names.

Splits: ``num_splits`` seeded random person splits, 50/50 by default, or exactly
``test_identities`` test persons (the rest train) when that is given: e.g. CUHK03's 767 persons
with ``test_identities=200`` hold 200 persons out of training. The test persons' tracklets from
``query_camera`` (a camera folder name; default the first in sorted order) are the queries; their
tracklets from every other camera are the gallery.
"""

from __future__ import annotations

from pathlib import Path

from training.datasets.base import (
    IMAGE_SUFFIXES,
    DatasetError,
    Split,
    Tracklet,
    VideoDataset,
    frames_in,
    random_halves,
    register_dataset,
    require_dir,
)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _tracklet_folders(person_dir: Path) -> list[Path]:
    has_images = any(
        p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in person_dir.iterdir()
    )
    return [person_dir] if has_images else _subdirs(person_dir)


@register_dataset("folder")
def build_folder(
    root: Path,
    query_camera: str | None = None,
    num_splits: int = 10,
    seed: int = 0,
    test_identities: int | None = None,
) -> VideoDataset:
    require_dir(root, "folder", "expected ROOT/<camera>/<identity>/<frames>")
    camera_dirs = _subdirs(root)
    if len(camera_dirs) < 2:
        raise DatasetError(
            f"folder: {root} must hold one folder per camera (at least two), each with one "
            f"folder per identity: ROOT/<camera>/<identity>/<frames>; found {len(camera_dirs)}"
        )
    camera_names = [d.name for d in camera_dirs]
    identity_names = sorted({p.name for d in camera_dirs for p in _subdirs(d)})
    if not identity_names:
        raise DatasetError(f"folder: no identity folders under {root}/<camera>/")
    identity_number = {name: i for i, name in enumerate(identity_names, 1)}
    tracklets: list[Tracklet] = []
    for camera, camera_dir in enumerate(camera_dirs, 1):
        for person_dir in _subdirs(camera_dir):
            folders = _tracklet_folders(person_dir)
            if not folders:
                raise DatasetError(f"folder: {person_dir} has neither frames nor tracklet folders")
            for folder in folders:
                frames = frames_in(folder)
                if not frames:
                    raise DatasetError(f"folder: {folder} has no image files")
                tracklets.append(Tracklet(frames, identity_number[person_dir.name], camera))
    query_name = camera_names[0] if query_camera is None else str(query_camera)
    if query_name not in camera_names:
        raise DatasetError(f"folder: query_camera {query_name!r} is not one of {camera_names}")
    query_cam = camera_names.index(query_name) + 1
    halves = random_halves(
        list(identity_number.values()), int(num_splits), int(seed), test_identities
    )

    def make_split(index: int) -> Split:
        train_ids, test_ids = (set(h) for h in halves[index])
        test = [t for t in tracklets if t.identity in test_ids]
        return Split(
            train=tuple(t for t in tracklets if t.identity in train_ids),
            query=tuple(t for t in test if t.camera == query_cam),
            gallery=tuple(t for t in test if t.camera != query_cam),
            description=(
                f"folder split {index}: {len(test_ids)} test identities, query camera "
                f"{query_name}, seed {seed}"
            ),
        )

    info = {
        "cameras": camera_names,
        "identities": identity_names,
        "num_tracklets": len(tracklets),
        "query_camera": query_name,
    }
    return VideoDataset("folder", root, len(halves), make_split, info)
