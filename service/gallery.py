"""The gallery: where enrolled tracklets live and how they are searched.

One small interface, two backends chosen by the `REID_GALLERY_BACKEND` setting:

* ``faiss`` (default, :mod:`service.faiss_gallery`): SQLite in WAL mode is the source of truth for
  embeddings, per-step features and metadata; a FAISS index over the embeddings is rebuilt from it
  at start.
* ``milvus`` (:mod:`service.milvus_gallery`): a Milvus collection through pymilvus's MilvusClient.
  A local file URI runs Milvus Lite embedded; ``http://host:19530`` talks to a Milvus server.

Contract every backend keeps (tests/test_gallery_contract.py runs the same suite on both):

* ``add(records)`` is atomic and durable: when it returns, every record survives a crash or
  restart; when it raises, none of them was stored. Tracklet ids are unique; re-adding an existing
  id raises :class:`TrackletExists`.
* ``search(embedding, top_k, filters, group_by_identity, max_distance)`` returns at most ``top_k``
  matches, nearest first, by Euclidean distance. Filters are applied *before* the top-k cut, so a
  filtered search still returns ``top_k`` matches when that many pass the filter. With
  ``group_by_identity`` only the nearest tracklet of each identity is returned (and ``top_k``
  counts identities). ``max_distance`` (open set) drops matches farther than it, possibly all.
* The gallery records the model version and embedding size it was built with; opening it with a
  different model raises :class:`GalleryModelMismatch`.
* Deleting removes the vectors from the index: a deleted tracklet is never returned again.
* All methods are thread-safe.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np


class GalleryError(Exception):
    """Base class of the gallery's own errors."""


class GalleryModelMismatch(GalleryError):
    """The gallery was built with another model (version or embedding size)."""


class TrackletExists(GalleryError):
    """A tracklet with this id is already enrolled."""


@dataclass(frozen=True)
class ModelSignature:
    """What a gallery must agree on with the model that feeds it."""

    version: str
    embedding_size: int


@dataclass
class TrackletRecord:
    """One enrolled tracklet."""

    tracklet_id: str
    identity: str
    embedding: np.ndarray  # float32 (D,)
    features: np.ndarray  # per-step recurrent outputs (T, D), kept for pair-wise re-scoring
    attention: np.ndarray  # float32 (T,) the enrolment attention, one weight per frame
    camera: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None

    @property
    def num_frames(self) -> int:
        return int(self.attention.shape[0])


@dataclass(frozen=True)
class SearchFilters:
    """Restrictions applied before the top-k cut. Times compare tracklet start/end times:
    a tracklet passes a time window when it overlaps [start_after, end_before]."""

    cameras: Sequence[str] | None = None
    exclude_cameras: Sequence[str] | None = None
    start_after: datetime | None = None
    end_before: datetime | None = None


@dataclass(frozen=True)
class Match:
    tracklet_id: str
    identity: str
    camera: str | None
    distance: float  # Euclidean


@dataclass(frozen=True)
class IdentitySummary:
    identity: str
    num_tracklets: int
    cameras: tuple[str, ...]
    first_seen: datetime | None
    last_seen: datetime | None


class Gallery(abc.ABC):
    """Interface of a gallery backend (see the module docstring for the contract)."""

    signature: ModelSignature

    @abc.abstractmethod
    def add(self, records: Sequence[TrackletRecord]) -> None: ...

    @abc.abstractmethod
    def search(
        self,
        embedding: np.ndarray,
        top_k: int,
        filters: SearchFilters | None = None,
        group_by_identity: bool = True,
        max_distance: float | None = None,
    ) -> list[Match]: ...

    @abc.abstractmethod
    def get_tracklet(self, tracklet_id: str, with_features: bool = False) -> TrackletRecord | None: ...

    @abc.abstractmethod
    def get_features(self, tracklet_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """Per-step features of these tracklets (for pair-wise re-scoring)."""

    @abc.abstractmethod
    def delete_tracklet(self, tracklet_id: str) -> bool:
        """True when it existed."""

    @abc.abstractmethod
    def list_identities(self, offset: int = 0, limit: int = 100) -> tuple[list[IdentitySummary], int]:
        """A page of identities sorted by name, and the total number of identities."""

    @abc.abstractmethod
    def get_identity(self, identity: str) -> list[TrackletRecord]:
        """The identity's tracklets (without features); empty when unknown."""

    @abc.abstractmethod
    def delete_identity(self, identity: str) -> int:
        """Number of tracklets deleted (0 when unknown)."""

    @abc.abstractmethod
    def count(self) -> int:
        """Number of enrolled tracklets."""

    @abc.abstractmethod
    def iter_records(self, batch_size: int = 1000):
        """Yield every record with features, in batches (lists); used to migrate between backends."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_gallery(backend: str, location: str, signature: ModelSignature) -> Gallery:
    """Open (or create) a gallery. ``backend`` is ``faiss`` (location: a directory) or ``milvus``
    (location: a Milvus Lite file path or an ``http(s)://`` server URI)."""
    if backend == "faiss":
        from service.faiss_gallery import FaissGallery

        return FaissGallery(location, signature)
    if backend == "milvus":
        from service.milvus_gallery import MilvusGallery

        return MilvusGallery(location, signature)
    raise ValueError(f"unknown gallery backend {backend!r}: use 'faiss' or 'milvus'")
