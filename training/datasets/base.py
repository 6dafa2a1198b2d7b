"""What every dataset gives training and evaluation: tracklets, splits, and one registry.

A dataset is a folder in a public layout; ``build_dataset(name, root, **options)`` reads it and
returns a :class:`VideoDataset`. ``dataset.split(i)`` is the i-th train/test split: training
tracklets, query tracklets and gallery tracklets. Identities and cameras are integers (camera
numbers as the dataset counts them, from 1); identity ``0`` marks distractors and ``-1`` junk,
as in MARS, which ``training.metrics`` treats the standard way.

Frames of a tracklet are sorted by the frame number in their file names, never by the order a
directory listing happens to return (a plain glob gives file-system order).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})
_DIGITS = re.compile(r"\d+")


class DatasetError(ValueError):
    """A dataset root that is missing or not in the expected layout; the message names the file
    or folder that was expected, and where."""


@dataclass(frozen=True)
class Tracklet:
    """One person seen by one camera: frame files in temporal order."""

    frames: tuple[Path, ...]
    identity: int
    camera: int


@dataclass(frozen=True)
class Split:
    """One train/test split. Query and gallery persons are disjoint from training persons
    (except in MARS's standard protocol, where the test set is fixed)."""

    train: tuple[Tracklet, ...]
    query: tuple[Tracklet, ...]
    gallery: tuple[Tracklet, ...]
    description: str = ""

    @property
    def train_identities(self) -> list[int]:
        return sorted({t.identity for t in self.train})


@dataclass
class VideoDataset:
    """A loaded dataset: its splits are built on demand by ``make_split(index)``."""

    name: str
    root: Path
    num_splits: int
    make_split: Callable[[int], Split] = field(repr=False)
    info: dict[str, Any] = field(default_factory=dict)

    def split(self, index: int) -> Split:
        if not 0 <= index < self.num_splits:
            raise IndexError(f"{self.name} has splits 0..{self.num_splits - 1}; asked for {index}")
        return self.make_split(index)


Builder = Callable[..., VideoDataset]
_REGISTRY: dict[str, Builder] = {}


def register_dataset(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make ``build_dataset(name, root, **options)`` call the decorated builder."""

    def decorate(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def dataset_names() -> list[str]:
    return sorted(_REGISTRY)


def build_dataset(name: str, root: str | Path, **options: Any) -> VideoDataset:
    """Read the dataset ``name`` under ``root``; ``options`` go to its builder."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {dataset_names()}") from None
    try:
        return builder(Path(root), **options)
    except TypeError as exc:
        # Unknown --dataset-option keys end up here: say which builder refused them.
        raise ValueError(f"dataset {name!r}: {exc}") from exc


# ----------------------------------------------------------------------------- helpers


def frame_number(path: Path) -> int:
    """The frame number in a file name: its last run of digits (``cam1_person001_00042.png``
    -> 42, ``0001C1T0001F017.jpg`` -> 17, ``0003.png`` -> 3)."""
    runs = _DIGITS.findall(path.stem)
    if not runs:
        raise DatasetError(f"frame file {path} has no frame number in its name")
    return int(runs[-1])


def sorted_frames(paths: Iterable[Path]) -> tuple[Path, ...]:
    """Image files in frame-number order (name breaks ties, so the order is total)."""
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")]
    return tuple(sorted(images, key=lambda p: (frame_number(p), p.name)))


def frames_in(folder: Path) -> tuple[Path, ...]:
    return sorted_frames(p for p in folder.iterdir() if p.is_file())


def require_dir(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_dir():
        raise DatasetError(f"{what}: expected the folder {path}, which does not exist. {hint}")
    return path


def require_file(path: Path, what: str, hint: str = "") -> Path:
    if not path.is_file():
        raise DatasetError(f"{what}: expected the file {path}, which does not exist. {hint}")
    return path


def find_root(root: Path, marker: str, dataset: str) -> Path:
    """``root`` or its child ``marker``, whichever holds the dataset: users point --root at
    either the download folder or the folder it extracted into."""
    if not root.exists():
        raise DatasetError(f"{dataset}: the dataset root {root} does not exist")
    if (root / marker).is_dir():
        return root / marker
    return root


def random_halves(
    identities: Sequence[int], num_splits: int, seed: int, test_count: int | None = None
) -> list[tuple[list[int], list[int]]]:
    """``num_splits`` seeded random (train, test) splits of ``identities``: halves (train gets
    the smaller half when the count is odd), or ``test_count`` test identities when given."""
    ids = sorted(identities)
    if test_count is not None and not 0 < int(test_count) < len(ids):
        raise DatasetError(
            f"test_identities must be between 1 and {len(ids) - 1} (the dataset has {len(ids)} "
            f"identities), got {test_count}"
        )
    rng = np.random.default_rng(seed)
    halves = []
    for _ in range(num_splits):
        order = [ids[i] for i in rng.permutation(len(ids))]
        n_test = (len(ids) + 1) // 2 if test_count is None else int(test_count)
        halves.append((sorted(order[n_test:]), sorted(order[:n_test])))
    return halves


def two_camera_split(
    tracklets: Sequence[Tracklet],
    train_ids: Iterable[int],
    test_ids: Iterable[int],
    query_camera: int,
    gallery_camera: int,
    description: str,
) -> Split:
    """The iLIDS-VID/PRID-2011 protocol: train on every tracklet of the training persons; each
    test person's ``query_camera`` tracklets query a gallery of the ``gallery_camera`` ones."""
    train_set, test_set = set(train_ids), set(test_ids)
    return Split(
        train=tuple(t for t in tracklets if t.identity in train_set),
        query=tuple(t for t in tracklets if t.identity in test_set and t.camera == query_camera),
        gallery=tuple(
            t for t in tracklets if t.identity in test_set and t.camera == gallery_camera
        ),
        description=description,
    )
