"""Datasets behind one base class and a registry: ``build_dataset(name, root, **options)``.

Registered: ``ilidsvid``, ``synthetic`` (the same layout), ``prid2011``, ``mars``, ``folder``.
Importing this package imports every loader so each registers itself.
"""

from training.datasets import folder, ilidsvid, mars, prid2011  # noqa: F401  (registration)
from training.datasets.base import (
    DatasetError,
    Split,
    Tracklet,
    VideoDataset,
    build_dataset,
    dataset_names,
    frame_number,
    register_dataset,
    sorted_frames,
)

__all__ = [
    "DatasetError",
    "Split",
    "Tracklet",
    "VideoDataset",
    "build_dataset",
    "dataset_names",
    "frame_number",
    "register_dataset",
    "sorted_frames",
]
