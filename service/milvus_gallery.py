"""The Milvus gallery backend: one Milvus collection through pymilvus's ``MilvusClient``.

The same code talks to Milvus Lite and to a Milvus server; only the URI differs:

* a local path ending in ``.db`` (``./reid-data/milvus.db``) runs **Milvus Lite** inside this
  process (Milvus Lite 3 is pure Python: a gRPC server on a loopback port, storing a *directory*
  of that name). One process at a time may hold it (a file lock): for tests, a single machine and
  development. The index is FLAT (exact), so answers equal the faiss backend's.
* ``http://host:19530`` (or ``https://``, optionally ``http://user:password@host:19530/dbname``)
  talks to a **Milvus standalone or cluster**: galleries larger than one machine holds, shared by
  several service replicas. The index is HNSW (approximate, see ``milvus_schema.SERVER_INDEX``).

The collection's schema, its row encoding and filter expressions are
:mod:`service.milvus_schema`; reaching Milvus (URIs, Milvus Lite servers, errors) is
:mod:`service.milvus_client`.

Consistency and durability: the collection uses the ``Strong`` consistency level and every read
asks for it, so a search sees every add acknowledged before it. An insert is acknowledged after
Milvus wrote it to its write-ahead log (the message storage on a server; on Milvus Lite a WAL file
flushed to the operating system, which survives the process being killed and is replayed at the
next open). No ``flush`` is called per add: a server does not need it for durability and rate-limits
it, and Milvus Lite's flush would not make an add safer (see docs/service.md, "Milvus backend").

Milvus has no multi-row transactions and does not refuse a duplicate primary key, so this class
keeps the gallery contract itself: ``add`` looks the ids up and refuses existing ones, inserts, and
deletes whatever it inserted when any part fails. Writes are serialised by a lock in this process;
reads run in parallel on a server, and are serialised on Milvus Lite (it runs in this process under
the GIL, so serialising costs no parallelism).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.gallery import (
    MAX_THUMBNAILS,
    Gallery,
    GalleryError,
    GalleryModelMismatch,
    IdentitySummary,
    Match,
    ModelSignature,
    SearchFilters,
    StoredFeatures,
    ThumbnailStats,
    TrackletExists,
    TrackletRecord,
    check_records,
    name_contains,
    query_vector,
)
from service.milvus_client import (
    is_server_uri,
    lite_path,
    milvus_errors,
    opened_client,
    redact,
)
from service.milvus_reads import ID_BATCH, CollectionReads
from service.milvus_schema import (
    ALL_FIELDS,
    DEFAULT_COLLECTION,
    HNSW_MIN_EF,
    META_FIELDS,
    PROP_SCHEMA_VERSION,
    READABLE_SCHEMA_VERSIONS,
    SEARCH_FIELDS,
    SUMMARY_FIELDS,
    THUMBNAIL_FIELDS,
    IdentityAggregate,
    and_,
    check_sizes,
    create_collection,
    ensure_indexes,
    filter_expression,
    from_blob,
    from_row,
    quote,
    row_bytes,
    signature_from,
    string_list,
    to_row,
)
from service.selection import select_nearest, squared_limit

log = logging.getLogger(__name__)

#: Milvus refuses a search ``limit`` (top-k) above 16384.
MAX_SEARCH_LIMIT = 16384
#: Keep one insert request far below gRPC and proxy message limits (64 MiB and up).
MAX_INSERT_BYTES = 16 * 1024 * 1024


# ---------------------------------------------------------------------------------- gallery


@dataclass(frozen=True)
class _Hit:
    tracklet_id: str
    identity: str
    camera: str | None
    squared: float  # Milvus's L2 is the squared distance


def _ranked(hits: Sequence[_Hit]) -> Iterator[tuple[str, float, Match]]:
    for hit in hits:
        distance = float(np.sqrt(max(hit.squared, 0.0)))
        yield hit.identity, hit.squared, Match(hit.tracklet_id, hit.identity, hit.camera, distance)


class MilvusGallery(Gallery):
    """The gallery in Milvus collection ``collection`` at ``uri`` (created if missing).

    ``index_type`` overrides the index of a *new* collection (``FLAT`` on Milvus Lite, ``HNSW``
    on a server by default); an existing collection keeps its index.
    """

    def __init__(
        self,
        uri: str,
        signature: ModelSignature,
        *,
        collection: str = DEFAULT_COLLECTION,
        index_type: str | None = None,
    ) -> None:
        self.uri = str(uri)
        self.signature = signature
        self.collection = collection
        self._lite_path = None if is_server_uri(self.uri) else lite_path(self.uri)
        self._write_lock = threading.RLock()
        self._read_lock: Any = self._write_lock if self._lite_path else contextlib.nullcontext()
        self._closed = False
        if self._lite_path is not None:
            Path(self._lite_path).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as opened:
            self._client = opened.enter_context(opened_client(self.uri))
            self._reads = CollectionReads(self._client, collection, paged=self._lite_path is None)
            with milvus_errors(f"opening the gallery at {redact(self.uri)}"):
                self._open_collection(index_type)
            # Opened: the client (and Milvus Lite's server) stay until close().
            self._connection = opened.pop_all()
        log.info("gallery at %s: %s", redact(self.uri), self.index_description)

    # ------------------------------------------------------------------------------ setup

    @classmethod
    def read_signature(
        cls, location: str, collection: str = DEFAULT_COLLECTION
    ) -> ModelSignature | None:
        """The signature of the gallery at ``location``; None when there is none. Creates
        nothing (a missing Milvus Lite path is not created), writes nothing."""
        if not is_server_uri(location) and not os.path.exists(lite_path(location)):
            return None
        with (
            opened_client(location) as client,
            milvus_errors(f"reading the gallery at {redact(location)}"),
        ):
            if not client.has_collection(collection):
                return None
            properties = client.describe_collection(collection).get("properties", {})
        signature = signature_from(properties)
        if signature is None:
            raise GalleryError(
                f"the Milvus collection {collection!r} at {redact(location)} was not created by "
                "astpn-reid (it has no model signature): use another collection or database"
            )
        return signature

    def _open_collection(self, index_type: str | None) -> None:
        if not self._client.has_collection(self.collection):
            create_collection(self._client, self.collection, self.signature)
        # Creating a collection and its indexes are separate requests: a gallery whose creation
        # was interrupted between them gets its indexes now.
        self._ensure_indexes(index_type)
        described = self._client.describe_collection(self.collection)
        properties = described.get("properties", {})
        recorded = signature_from(properties)
        where = f"collection {self.collection!r} at {redact(self.uri)}"
        if recorded is None:
            raise GalleryError(
                f"the Milvus {where} was not created by astpn-reid (it has no model "
                "signature): use another collection, database or REID_MILVUS_URI"
            )
        if recorded != self.signature:
            raise GalleryModelMismatch(
                f"the gallery in Milvus {where} was built with model version "
                f"{recorded.version!r} ({recorded.embedding_size}-d embeddings), not "
                f"{self.signature.version!r} ({self.signature.embedding_size}-d): serve the "
                "matching model, point REID_MILVUS_URI at a new gallery, or re-enroll the "
                "tracklets with this model"
            )
        version = int(properties.get(PROP_SCHEMA_VERSION, "0"))
        if version not in READABLE_SCHEMA_VERSIONS:
            raise GalleryError(
                f"the Milvus {where} has schema version {properties.get(PROP_SCHEMA_VERSION)}; "
                f"this code reads versions {READABLE_SCHEMA_VERSIONS}"
            )
        self._thumbnails = version >= 2
        if not self._thumbnails:
            log.warning(
                "the Milvus %s predates thumbnails (schema version 1): enrolments keep none. "
                "`reid-gallery migrate` it into a new collection to keep them",
                where,
            )
        # A server keeps collections loaded across restarts; Milvus Lite opens them released.
        self._client.load_collection(self.collection)
        self._index = self._client.describe_index(self.collection, "embedding") or {}

    def _ensure_indexes(self, index_type: str | None) -> None:
        ensure_indexes(self._client, self.collection, index_type, lite=self._lite_path is not None)

    @property
    def index_description(self) -> str:
        index_type = str(self._index.get("index_type", "?"))
        kind = "exact" if index_type in ("FLAT", "BRUTE_FORCE") else "approximate"
        engine = "milvus server" if self._lite_path is None else "milvus lite"
        try:
            total = f", {self.count()} vectors"
        except GalleryError:
            total = ""
        return (
            f"{engine} collection {self.collection!r}: {index_type} ({kind}, L2, Strong "
            f"consistency){total}"
        )

    # ---------------------------------------------------------------------------- writes

    def add(self, records: Sequence[TrackletRecord]) -> None:
        check_records(records, self.signature)
        for record in records:
            check_sizes(record)
        if not records:
            return
        rows = [to_row(record, with_thumbnails=self._thumbnails) for record in records]
        ids = [record.tracklet_id for record in records]
        with self._write_lock:
            with milvus_errors(f"checking {len(ids)} tracklet ids"):
                found = self._existing(ids)
            if found:
                raise TrackletExists(
                    f"tracklet {found[0]!r} is already enrolled; nothing was stored"
                )
            try:
                for chunk in self._insert_chunks(rows):
                    self._client.insert(self.collection, chunk)
            except Exception as exc:
                self._roll_back(ids, exc)
                raise GalleryError(
                    f"storing {len(records)} tracklets failed: {getattr(exc, 'message', exc)}; "
                    "nothing was stored"
                ) from exc

    def _roll_back(self, ids: list[str], cause: BaseException) -> None:
        """Delete whatever part of a failed add reached Milvus."""
        try:
            for start in range(0, len(ids), ID_BATCH):
                self._client.delete(self.collection, ids=ids[start : start + ID_BATCH])
        except Exception as exc:
            raise GalleryError(
                f"storing {len(ids)} tracklets failed ({cause}) and removing the part already "
                f"stored failed too ({exc}): some of the ids {ids[:5]}... may be stored; delete "
                "them (DELETE /tracklets/{id}) before enrolling them again"
            ) from exc

    @staticmethod
    def _insert_chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
        chunk: list[dict[str, Any]] = []
        size = 0
        for row in rows:
            row_size = row_bytes(row)
            if chunk and size + row_size > MAX_INSERT_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += row_size
        if chunk:
            yield chunk

    def _existing(self, ids: Sequence[str]) -> list[str]:
        return [row["tracklet_id"] for row in self._reads.get(ids, ["tracklet_id"])]

    def delete_tracklet(self, tracklet_id: str) -> bool:
        with self._write_lock, milvus_errors(f"deleting tracklet {tracklet_id!r}"):
            if not self._existing([tracklet_id]):
                return False
            self._client.delete(self.collection, ids=[tracklet_id])
            return True

    def delete_identity(self, identity: str) -> int:
        with self._write_lock, milvus_errors(f"deleting identity {identity!r}"):
            ids = [
                row["tracklet_id"] for row in self._reads.scan(f"identity == {quote(identity)}", [])
            ]
            for start in range(0, len(ids), ID_BATCH):
                self._client.delete(self.collection, ids=ids[start : start + ID_BATCH])
            return len(ids)

    # ---------------------------------------------------------------------------- search

    def search(
        self,
        embedding: np.ndarray,
        top_k: int,
        filters: SearchFilters | None = None,
        group_by_identity: bool = True,
        max_distance: float | None = None,
    ) -> list[Match]:
        query = query_vector(embedding, self.signature)
        if top_k < 1:
            return []
        if not group_by_identity and top_k > MAX_SEARCH_LIMIT:
            raise ValueError(
                f"top_k is {top_k}; Milvus returns at most {MAX_SEARCH_LIMIT} tracklets per search"
            )
        try:
            expression = filter_expression(filters)
        except LookupError:
            return []
        limit = squared_limit(max_distance)
        vector = query.tolist()
        with self._read_lock, milvus_errors("searching the gallery"):
            if not group_by_identity:
                hits = self._ann(vector, top_k, expression)
                return select_nearest(_ranked(hits), top_k, group_by_identity=False, limit=limit)[0]
            return self._grouped(vector, top_k, expression, limit)

    def _grouped(
        self, vector: list[float], top_k: int, expression: str | None, limit: float | None
    ) -> list[Match]:
        """The nearest tracklet of each of the ``top_k`` nearest identities.

        Each round fetches the nearest tracklets of identities not found yet (excluded in the
        filter), so its first hit is always a new identity: the loop ends after at most
        ``top_k`` rounds. Identities found in a later round are never nearer than those of an
        earlier one: an earlier round returned every tracklet nearer than its last hit."""
        matches: list[Match] = []
        seen: set[str] = set()
        while len(matches) < top_k:
            missing = top_k - len(matches)
            k = min(MAX_SEARCH_LIMIT, max(4 * missing, 32))
            excluded = f"identity not in {string_list(sorted(seen))}" if seen else None
            hits = self._ann(vector, k, and_(expression, excluded) or None)
            new, reached_limit = select_nearest(
                _ranked(hits), missing, group_by_identity=True, limit=limit, seen=seen
            )
            matches.extend(new)
            if len(hits) < k or reached_limit or not new:
                break
        return matches

    def _ann(self, vector: list[float], k: int, expression: str | None) -> list[_Hit]:
        params: dict[str, Any] = {"metric_type": "L2"}
        if self._index.get("index_type") == "HNSW":
            params["params"] = {"ef": max(HNSW_MIN_EF, k)}
        result = self._client.search(
            self.collection,
            data=[vector],
            anns_field="embedding",
            limit=k,
            filter=expression or "",
            output_fields=SEARCH_FIELDS,
            search_params=params,
            consistency_level="Strong",
        )
        return [
            _Hit(
                str(hit["tracklet_id"]),
                hit["entity"]["identity"],
                hit["entity"].get("camera"),
                float(hit["distance"]),
            )
            for hit in result[0]
        ]

    # ----------------------------------------------------------------------------- reads

    def get_tracklet(self, tracklet_id: str, with_features: bool = False) -> TrackletRecord | None:
        fields = ALL_FIELDS if with_features else META_FIELDS
        with self._read_lock, milvus_errors(f"reading tracklet {tracklet_id!r}"):
            rows = self._reads.get([tracklet_id], fields)
        return from_row(rows[0]) if rows else None

    def get_features(self, tracklet_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        ids = list(dict.fromkeys(tracklet_ids))
        found: dict[str, StoredFeatures] = {}
        with self._read_lock, milvus_errors("reading features"):
            rows = self._reads.get(ids, ["tracklet_id", "feature_dim", "features", "num_frames"])
        for row in rows:
            features = from_blob(row["features"], "<f2")
            found[row["tracklet_id"]] = StoredFeatures(
                features.reshape(-1, int(row["feature_dim"])).astype(np.float32),
                int(row["num_frames"]),
            )
        return found

    def get_identity(self, identity: str) -> list[TrackletRecord]:
        with self._read_lock, milvus_errors(f"reading identity {identity!r}"):
            rows = list(self._reads.scan(f"identity == {quote(identity)}", META_FIELDS))
        records = [from_row(row) for row in rows]
        # Enrolment order, as the faiss backend answers.
        records.sort(
            key=lambda r: (r.created_at or datetime.min.replace(tzinfo=UTC), r.tracklet_id)
        )
        return records

    def list_identities(
        self, offset: int = 0, limit: int = 100, contains: str | None = None
    ) -> tuple[list[IdentitySummary], int]:
        # Milvus has no GROUP BY: aggregate the four small scalar fields of every row here.
        summaries: dict[str, IdentityAggregate] = {}
        with self._read_lock, milvus_errors("listing identities"):
            for row in self._reads.scan("", SUMMARY_FIELDS):
                if contains and not name_contains(row["identity"], contains):
                    continue
                summary = summaries.setdefault(row["identity"], IdentityAggregate())
                summary.add(row)
        names = sorted(summaries)
        page = names[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        return [summaries[name].summary(name) for name in page], len(names)

    def count(self) -> int:
        with self._read_lock, milvus_errors("counting tracklets"):
            return self._reads.count("")

    def thumbnail_frames(self, tracklet_ids: Sequence[str]) -> dict[str, list[int]]:
        if not self._thumbnails:
            return {}
        with self._read_lock, milvus_errors("reading thumbnails"):
            rows = self._reads.get(list(dict.fromkeys(tracklet_ids)), ["thumbnail_frames"])
        return {
            r["tracklet_id"]: list(r["thumbnail_frames"]) for r in rows if r["thumbnail_frames"]
        }

    def get_thumbnail(self, tracklet_id: str, position: int) -> bytes | None:
        if not self._thumbnails or position < 0:
            return None
        with self._read_lock, milvus_errors(f"reading the thumbnails of {tracklet_id!r}"):
            rows = self._reads.get([tracklet_id], ["thumbnails"])
        jpegs = rows[0]["thumbnails"] if rows else []
        return base64.b64decode(jpegs[position]) if position < len(jpegs) else None

    def thumbnail_stats(self) -> ThumbnailStats:
        """Counted by thumbnails per row (count(*) is the only aggregate Milvus has, so the
        bytes are not totalled)."""
        if not self._thumbnails:
            return ThumbnailStats(count=0, bytes=None)
        count = 0
        with self._read_lock, milvus_errors("counting thumbnails"):
            remaining = self._reads.count("array_length(thumbnail_frames) > 0")
            for length in range(1, MAX_THUMBNAILS + 1):
                if not remaining:
                    break
                rows = self._reads.count(f"array_length(thumbnail_frames) == {length}")
                count += length * rows
                remaining -= rows
        return ThumbnailStats(count=count, bytes=None)

    def iter_records(self, batch_size: int = 1000) -> Iterator[list[TrackletRecord]]:
        """Batches in primary-key order, the lock held one batch at a time so concurrent adds
        and deletes stay possible during a long migration."""
        fields = ALL_FIELDS + (THUMBNAIL_FIELDS if self._thumbnails else [])
        if not self._reads.paged:
            # Ids first (small), then the records batch by batch.
            with self._read_lock, milvus_errors("reading the gallery"):
                ids = sorted(row["tracklet_id"] for row in self._reads.scan("", []))
            for start in range(0, len(ids), batch_size):
                with self._read_lock, milvus_errors("reading the gallery"):
                    rows = self._reads.get(ids[start : start + batch_size], fields, batch_size)
                rows.sort(key=lambda row: row["tracklet_id"])
                if rows:
                    yield [from_row(row) for row in rows]
            return
        for page in self._reads.pages("", fields, batch_size):
            yield [from_row(row) for row in page]

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._connection.close()
