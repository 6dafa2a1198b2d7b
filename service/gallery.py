"""The gallery: where enrolled tracklets live and how they are searched.

One small interface, two backends chosen by the `REID_GALLERY_BACKEND` setting (their registry,
names and default locations are :mod:`service.backends`; this module imports neither):

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
* Thumbnails (small JPEGs of a few frames, :class:`Thumbnail`) are part of their record: ``add``
  stores them in the same atomic write, deleting a tracklet or identity deletes them, and
  ``iter_records`` carries them (a migration copies them). Other reads leave them out; read them
  with ``thumbnail_frames`` and ``get_thumbnail``, and count them with ``thumbnail_stats``.
* ``list_identities(..., contains=name)`` keeps the identities whose name contains ``name``,
  ASCII letters compared case-insensitively (SQLite's ``LIKE``), other characters exactly.
* All methods are thread-safe.

Times: naive datetimes are taken as UTC; backends store epoch microseconds and return aware UTC
datetimes. A tracklet's time span is [start_time, end_time]; when only one of them is known the
span is that instant, and a tracklet with neither never passes a time filter. Records read back
without features (``get_tracklet(..., with_features=False)``, ``get_identity``) carry an empty
``(0, F)`` features array; their ``attention`` (hence ``num_frames``) is always present.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
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


#: Most thumbnails one tracklet may carry, and the largest JPEG: what every backend can hold in
#: one row (a Milvus VARCHAR element holds 65535 base64 characters, 49149 bytes).
MAX_THUMBNAILS = 16
MAX_THUMBNAIL_BYTES = 49149


@dataclass(frozen=True)
class Thumbnail:
    """A small JPEG of one uploaded frame of a tracklet, kept to show what was enrolled."""

    frame_index: int  # 0-based index of the uploaded frame it shows
    jpeg: bytes


@dataclass(frozen=True)
class ThumbnailStats:
    """What the gallery's thumbnails amount to."""

    count: int
    #: Their JPEG bytes, or None where the backend cannot total them without reading every row
    #: (Milvus has no sum).
    bytes: int | None


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
    thumbnails: list[Thumbnail] = field(default_factory=list)  # in stored order

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
class StoredFeatures:
    """A tracklet's per-step features and the number of frames it was enrolled with: the pair
    scorer reads the first, and its attention is spread back over the second."""

    features: np.ndarray  # float32 (T', F), one row per embedded frame
    num_frames: int  # T >= T', the uploaded frames


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

    @classmethod
    @abc.abstractmethod
    def read_signature(cls, location: str) -> ModelSignature | None:
        """The signature the gallery at ``location`` was built with, without opening it for
        writing or creating anything; ``None`` when there is no gallery there."""

    @property
    def index_description(self) -> str:
        """One line for logs and ``reid-gallery info``: which index serves the searches."""
        return type(self).__name__

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
    def get_tracklet(
        self, tracklet_id: str, with_features: bool = False
    ) -> TrackletRecord | None: ...

    @abc.abstractmethod
    def get_features(self, tracklet_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        """What pair-wise re-scoring needs of these tracklets, in one read (missing ids are
        left out)."""

    @abc.abstractmethod
    def delete_tracklet(self, tracklet_id: str) -> bool:
        """True when it existed."""

    @abc.abstractmethod
    def list_identities(
        self, offset: int = 0, limit: int = 100, contains: str | None = None
    ) -> tuple[list[IdentitySummary], int]:
        """A page of identities sorted by name, and the total number of identities (those whose
        name contains ``contains``, when given)."""

    @abc.abstractmethod
    def thumbnail_frames(self, tracklet_ids: Sequence[str]) -> dict[str, list[int]]:
        """The frame index of each stored thumbnail of these tracklets, in stored order (a
        thumbnail's position in its list is its number); tracklets without any are left out."""

    @abc.abstractmethod
    def get_thumbnail(self, tracklet_id: str, position: int) -> bytes | None:
        """The JPEG of thumbnail number ``position`` of the tracklet; None when there is none."""

    @abc.abstractmethod
    def thumbnail_stats(self) -> ThumbnailStats: ...

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
        """Yield every record with features, in batches (lists); migrations between backends."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Gallery:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_epoch_us(moment: datetime | None) -> int | None:
    """Exact integer microseconds since 1970 (UTC); naive datetimes are taken as UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def from_epoch_us(value: int | None) -> datetime | None:
    """Inverse of :func:`to_epoch_us`: an aware UTC datetime."""
    if value is None:
        return None
    return _EPOCH + timedelta(microseconds=int(value))


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def name_contains(name: str, text: str) -> bool:
    """The ``contains`` rule of ``list_identities``: ASCII letters case-insensitively, as
    SQLite's ``LIKE`` compares them, every other character exactly."""
    return text.translate(_ASCII_LOWER) in name.translate(_ASCII_LOWER)


def query_vector(embedding: np.ndarray, signature: ModelSignature) -> np.ndarray:
    """A search's embedding as float32 (D,), refused when its size is not the gallery's."""
    query = np.asarray(embedding, dtype=np.float32).reshape(-1)
    if query.shape[0] != signature.embedding_size:
        raise ValueError(
            f"the query embedding has {query.shape[0]} values; the gallery stores "
            f"{signature.embedding_size}"
        )
    return query


def check_records(records: Sequence[TrackletRecord], signature: ModelSignature) -> None:
    """Refuse a batch a backend must not store, before anything is written: wrong shapes or
    non-finite numbers (:class:`ValueError`) and ids repeated inside the batch
    (:class:`TrackletExists`)."""
    seen: set[str] = set()
    for record in records:
        name = f"tracklet {record.tracklet_id!r}"
        if not isinstance(record.tracklet_id, str) or not record.tracklet_id:
            raise ValueError(f"{name}: tracklet_id must be a non-empty string")
        if not isinstance(record.identity, str) or not record.identity:
            raise ValueError(f"{name}: identity must be a non-empty string")
        if record.tracklet_id in seen:
            raise TrackletExists(f"{name} appears twice in the batch")
        seen.add(record.tracklet_id)
        embedding = np.asarray(record.embedding)
        if embedding.shape != (signature.embedding_size,):
            raise ValueError(
                f"{name}: embedding has shape {embedding.shape}; this gallery stores "
                f"({signature.embedding_size},) embeddings"
            )
        attention = np.asarray(record.attention)
        features = np.asarray(record.features)
        if attention.ndim != 1 or attention.shape[0] < 1:
            raise ValueError(f"{name}: attention must be a non-empty (T,) array")
        # Long tracklets are subsampled before the network: the features have one row per
        # embedded frame, the attention one weight per uploaded frame.
        if (
            features.ndim != 2
            or not 1 <= features.shape[0] <= attention.shape[0]
            or features.shape[1] < 1
        ):
            raise ValueError(
                f"{name}: features must be (T', F) with 1 <= T' <= {attention.shape[0]} (the "
                f"attention length); got {features.shape}"
            )
        for part, values in (("embedding", embedding), ("attention", attention)):
            if not np.all(np.isfinite(values)):
                raise ValueError(f"{name}: {part} has non-finite values")
        if not np.all(np.isfinite(features.astype(np.float16))):
            raise ValueError(f"{name}: features are not finite in float16 (stored as float16)")
        check_thumbnails(record)


def check_thumbnails(record: TrackletRecord) -> None:
    """Refuse thumbnails a backend must not store: too many, too large, not JPEG, or showing a
    frame the tracklet does not have."""
    name = f"tracklet {record.tracklet_id!r}"
    if len(record.thumbnails) > MAX_THUMBNAILS:
        raise ValueError(f"{name}: {len(record.thumbnails)} thumbnails; at most {MAX_THUMBNAILS}")
    for position, thumbnail in enumerate(record.thumbnails):
        where = f"{name}: thumbnail {position}"
        if not 0 <= thumbnail.frame_index < record.num_frames:
            raise ValueError(
                f"{where} shows frame {thumbnail.frame_index}; the tracklet has "
                f"{record.num_frames} frames"
            )
        if not thumbnail.jpeg.startswith(b"\xff\xd8") or len(thumbnail.jpeg) > MAX_THUMBNAIL_BYTES:
            raise ValueError(f"{where} must be a JPEG of at most {MAX_THUMBNAIL_BYTES} bytes")
