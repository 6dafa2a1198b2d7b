"""Training and validation data drawn from several datasets in one run.

A *source* is one part of one split of one dataset, written ``NAME:ROOT[:KEY=VALUE,...]``:

    folder:../shared/data/cuhk03:test_identities=200      the training persons of split 0
    synthetic:data/synthetic:part=all                     every person of the synthetic set
    folder:/data/my-cameras:part=all,query_camera=entry   all of a user's labelled footage

``part`` is ``train`` (default for training), ``test`` (default for validation: the split's
query and gallery persons) or ``all``; ``split`` picks the split (default 0); every other key
goes to the dataset builder (``--dataset-option`` of the single-dataset commands). A root may
not contain ``:``.

Identities and cameras are kept apart per dataset: a person is identified by (dataset, root,
identity) and a camera by (dataset, root, camera), so two datasets' person 1 are two people and
positive pairs never cross datasets. A validation source may not share a person with the
training sources (``check_held_out``): validation figures are always on unseen people.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.datasets import Split, Tracklet, build_dataset

PARTS = ("train", "test", "all")
_RESERVED = ("part", "split")


def _value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


@dataclass(frozen=True)
class Source:
    """One part of one split of one dataset (see the module docstring)."""

    dataset: str
    root: str
    part: str = "train"
    split: int = 0
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {self.part!r}")

    @classmethod
    def parse(cls, text: str, default_part: str = "train") -> Source:
        """``NAME:ROOT[:KEY=VALUE,...]`` -> Source; ValueError saying the expected form."""
        pieces = text.split(":", 2)
        if len(pieces) < 2 or not pieces[0] or not pieces[1]:
            raise ValueError(
                f"expected NAME:ROOT[:KEY=VALUE,...] (e.g. folder:data/cuhk03:test_identities=200)"
                f", got {text!r}"
            )
        settings: dict[str, Any] = {}
        for item in pieces[2].split(",") if len(pieces) == 3 and pieces[2] else []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ValueError(f"{text!r}: options are KEY=VALUE separated by commas")
            settings[key.strip().replace("-", "_")] = _value(value.strip())
        part = str(settings.pop("part", default_part))
        split = int(settings.pop("split", 0))
        return cls(pieces[0], pieces[1], part, split, tuple(sorted(settings.items())))

    def __str__(self) -> str:
        extra = [f"part={self.part}", f"split={self.split}"]
        extra += [f"{k}={v}" for k, v in self.options]
        return f"{self.dataset}:{self.root}:{','.join(extra)}"

    @property
    def key(self) -> tuple[str, str]:
        """What identifies the dataset: the same people live under the same key."""
        return self.dataset, str(Path(self.root).resolve())

    def load_split(self) -> Split:
        return build_dataset(self.dataset, self.root, **dict(self.options)).split(self.split)

    def tracklets(self, split: Split | None = None) -> tuple[Tracklet, ...]:
        split = split or self.load_split()
        test = (*split.query, *split.gallery)
        return {"train": split.train, "test": test, "all": (*split.train, *test)}[self.part]


@dataclass
class TrainingSet:
    """Tracklets of every training source with one label space and one camera space."""

    tracklets: list[Tracklet]
    labels: list[int]  # 0..num_identities-1
    cameras: list[int]  # distinct per (dataset, camera)
    num_identities: int
    summary: list[dict[str, Any]]  # per source: tracklets, identities, cameras


def training_set(sources: Sequence[Source]) -> TrainingSet:
    """Merge the sources' tracklets; persons and cameras numbered per dataset (see module)."""
    if not sources:
        raise ValueError("give at least one training source")
    person_label: dict[tuple[Any, ...], int] = {}
    camera_label: dict[tuple[Any, ...], int] = {}
    tracklets: list[Tracklet] = []
    labels: list[int] = []
    cameras: list[int] = []
    summary = []
    for source in sources:
        chosen = source.tracklets()
        if not chosen:
            raise ValueError(f"training source {source} has no tracklets")
        for t in chosen:
            person = (*source.key, t.identity)
            camera = (*source.key, t.camera)
            labels.append(person_label.setdefault(person, len(person_label)))
            cameras.append(camera_label.setdefault(camera, len(camera_label)))
            tracklets.append(t)
        summary.append(
            {
                "source": str(source),
                "tracklets": len(chosen),
                "identities": len({t.identity for t in chosen}),
                "cameras": len({t.camera for t in chosen}),
            }
        )
    return TrainingSet(tracklets, labels, cameras, len(person_label), summary)


def validation_protocol(source: Source) -> tuple[list[Tracklet], list[Tracklet]]:
    """(query, gallery) of a validation source: its split's protocol, restricted to its part."""
    split = source.load_split()
    if source.part == "train":
        raise ValueError(
            f"validation source {source}: part=train would validate on training persons; "
            "use part=test (the split's held-out persons)"
        )
    if source.part == "all":
        from training.evaluate import protocol_sets

        return protocol_sets(split, all_identities=True)
    return list(split.query), list(split.gallery)


def check_held_out(
    training: Sequence[Source],
    validation: Source,
    query: Sequence[Tracklet],
    gallery: Sequence[Tracklet],
) -> None:
    """Refuse a validation set that shares a person with the training sources."""
    seen = {(*s.key, t.identity) for s in training for t in s.tracklets()}
    shared = {t.identity for t in (*query, *gallery) if (*validation.key, t.identity) in seen}
    if shared:
        raise ValueError(
            f"validation source {validation} shares {len(shared)} persons with the training "
            f"sources (e.g. identity {min(shared)}): validate on persons held out of training, "
            "e.g. part=test of the split whose part=train you train on"
        )
