"""The default gallery backend: SQLite is the source of truth, FAISS the search index.

SQLite (WAL journal, ``synchronous=FULL``) holds every tracklet: metadata, the embedding, the
per-step features (float16) and the attention. A FAISS index over the embeddings (exact by
default, HNSW with ``REID_FAISS_INDEX=hnsw``: :mod:`service.faiss_index`) is rebuilt from it at
start, so the index can never disagree with the database after a crash: whatever SQLite
committed is what the next start indexes. An HNSW graph, slow to build, is also written at a
clean close and read back at the next start, reconciled with SQLite
(:mod:`service.hnsw_snapshot`).

Ordering keeps the two consistent while running: an add commits to SQLite first and only then
enters FAISS (if FAISS fails the rows are deleted again); a delete commits first and then removes
the ids from FAISS. Searches map FAISS ids through an in-memory table of live rows, so a deleted
tracklet can never be returned even for an instant (the HNSW index also skips its tombstones
inside FAISS, so they take no place in an answer).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service import hnsw_snapshot
from service.faiss_index import FaissIndexConfig, HnswIndex, make_index, use_build_threads
from service.faiss_store import (
    ID_CHUNK,
    INSERT,
    INSERT_THUMBNAIL,
    META_COLUMNS,
    SCHEMA,
    SCHEMA_VERSION,
    Transaction,
    database_path,
    features_from_blob,
    filter_clauses,
    from_row,
    is_filtering,
    like_pattern,
    rows_for_ids,
    thumbnail_rows,
    thumbnails_by_row,
    to_row,
)
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
    from_epoch_us,
    query_vector,
)
from service.selection import select_nearest, squared_limit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Live:
    """What a search needs of a row, kept in memory next to its vector."""

    tracklet_id: str
    identity: str
    camera: str | None


class FaissGallery(Gallery):
    """SQLite + FAISS gallery in ``directory`` (created if missing); ``index`` chooses the
    FAISS index (exact by default)."""

    def __init__(
        self,
        directory: str | Path,
        signature: ModelSignature,
        index: FaissIndexConfig | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.signature = signature
        self._lock = threading.RLock()
        # One connection shared by every thread, serialised by the lock: SQLite writes are
        # serialised anyway, and reads are short next to the embedding work around them.
        self._db = sqlite3.connect(
            database_path(self.directory), check_same_thread=False, isolation_level=None
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the WAL is fsynced at every commit, so an acknowledged add survives power loss.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._check_signature()
            self._live: dict[int, _Live] = {}
            config = index or FaissIndexConfig()
            self._index = make_index(config, signature.embedding_size)
            use_build_threads()
            self._load_index()
            config.use_search_threads()
        except BaseException:
            self._db.close()
            raise
        log.info("gallery at %s: %s", self.directory, self.index_description)

    # ------------------------------------------------------------------------------ setup

    @classmethod
    def read_signature(cls, location: str | Path) -> ModelSignature | None:
        path = database_path(location)
        if not path.is_file():
            return None
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = dict(connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.OperationalError:
            return None
        finally:
            connection.close()
        if "model_version" not in rows:
            return None
        return ModelSignature(rows["model_version"], int(rows["embedding_size"]))

    def _check_signature(self) -> None:
        with self._transaction():
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("model_version", self.signature.version),
                        ("embedding_size", str(self.signature.embedding_size)),
                        ("schema_version", str(SCHEMA_VERSION)),
                    ],
                )
                return
        recorded = ModelSignature(rows["model_version"], int(rows["embedding_size"]))
        if recorded != self.signature:
            raise GalleryModelMismatch(
                f"the gallery in {self.directory} was built with model version "
                f"{recorded.version!r} ({recorded.embedding_size}-d embeddings), not "
                f"{self.signature.version!r} ({self.signature.embedding_size}-d): serve the "
                "matching model, point REID_DATA_DIR at a new directory, or re-enroll the "
                "tracklets with this model"
            )
        if int(rows.get("schema_version", "0")) != SCHEMA_VERSION:
            raise GalleryError(
                f"the gallery in {self.directory} has schema version "
                f"{rows.get('schema_version')}; this code reads version {SCHEMA_VERSION}"
            )

    def _load_index(self) -> None:
        """The index of every live row: the HNSW snapshot reconciled with SQLite when there is
        a usable one, else rebuilt from SQLite (one query, one contiguous copy, one add)."""
        # Whether the index differs from what is on disk (an HNSW gallery writes it at close).
        self._unsaved = isinstance(self._index, HnswIndex)
        if self._unsaved and self._load_snapshot():
            return
        rows = self._db.execute(
            "SELECT row_id, tracklet_id, identity, camera, embedding FROM tracklets"
        ).fetchall()
        if not rows:
            return
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(row[4] for row in rows), dtype=np.float32)
        self._index.add(ids, vectors.reshape(len(rows), -1))
        self._live = {row[0]: _Live(row[1], row[2], row[3]) for row in rows}

    def _load_snapshot(self) -> bool:
        assert isinstance(self._index, HnswIndex)
        rows = self._db.execute(
            "SELECT row_id, tracklet_id, identity, camera FROM tracklets ORDER BY row_id"
        ).fetchall()
        live = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        loaded = hnsw_snapshot.load(self.directory, self._index.config, self._index.dim, live)
        if loaded is None:
            return False
        self._index, missing = loaded
        for start in range(0, len(missing), ID_CHUNK):  # SQLite's limit on bound parameters
            chunk = [int(i) for i in missing[start : start + ID_CHUNK]]
            found = self._db.execute(
                "SELECT row_id, embedding FROM tracklets WHERE row_id IN "
                f"({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
            ids = np.fromiter((row[0] for row in found), dtype=np.int64, count=len(found))
            vectors = np.frombuffer(b"".join(row[1] for row in found), dtype=np.float32)
            self._index.add(ids, vectors.reshape(len(found), -1))
        self._live = {row[0]: _Live(row[1], row[2], row[3]) for row in rows}
        self._unsaved = len(missing) > 0 or self._index.tombstones > 0
        return True

    @property
    def index_description(self) -> str:
        with self._lock:
            return self._index.describe()

    # ---------------------------------------------------------------------------- writes

    def _transaction(self) -> Transaction:
        return Transaction(self._db)

    def add(self, records: Sequence[TrackletRecord]) -> None:
        check_records(records, self.signature)
        if not records:
            return
        rows = [to_row(record) for record in records]
        with self._lock:
            row_ids: list[int] = []
            try:
                with self._transaction():
                    for row, record in zip(rows, records, strict=True):
                        cursor = self._db.execute(INSERT, row)
                        row_ids.append(int(cursor.lastrowid or 0))
                        self._db.executemany(INSERT_THUMBNAIL, thumbnail_rows(row_ids[-1], record))
            except sqlite3.IntegrityError as exc:
                raise self._exists_error(records) from exc
            except sqlite3.Error as exc:
                raise GalleryError(f"storing {len(records)} tracklets failed: {exc}") from exc
            ids = np.asarray(row_ids, dtype=np.int64)
            vectors = np.stack([np.asarray(r.embedding, dtype=np.float32) for r in records])
            try:
                self._unsaved = True
                self._index.add(ids, vectors)
            except Exception as exc:
                # Keep "nothing stored" true: take the committed rows back out.
                self._index.remove(ids)
                with self._transaction():
                    self._db.executemany(
                        "DELETE FROM tracklets WHERE row_id = ?", [(i,) for i in row_ids]
                    )
                raise GalleryError(f"indexing {len(records)} tracklets failed: {exc}") from exc
            for row_id, record in zip(row_ids, records, strict=True):
                self._live[row_id] = _Live(record.tracklet_id, record.identity, record.camera)

    def _exists_error(self, records: Sequence[TrackletRecord]) -> TrackletExists:
        ids = [record.tracklet_id for record in records]
        found = [row[0] for row in rows_for_ids(self._db, "tracklet_id", ids)]
        return TrackletExists(
            f"tracklet {found[0] if found else ids[0]!r} is already enrolled; nothing was stored"
        )

    def _delete_where(self, clause: str, value: str) -> int:
        with self._lock:
            with self._transaction():
                ids = [
                    row[0]
                    for row in self._db.execute(
                        f"SELECT row_id FROM tracklets WHERE {clause}", (value,)
                    )
                ]
                if ids:
                    self._db.execute(f"DELETE FROM tracklets WHERE {clause}", (value,))
            if ids:
                for row_id in ids:
                    self._live.pop(row_id, None)
                self._unsaved = True
                self._index.remove(np.asarray(ids, np.int64))
            return len(ids)

    def delete_tracklet(self, tracklet_id: str) -> bool:
        return self._delete_where("tracklet_id = ?", tracklet_id) > 0

    def delete_identity(self, identity: str) -> int:
        return self._delete_where("identity = ?", identity)

    # ---------------------------------------------------------------------------- search

    def search(
        self,
        embedding: np.ndarray,
        top_k: int,
        filters: SearchFilters | None = None,
        group_by_identity: bool = True,
        max_distance: float | None = None,
    ) -> list[Match]:
        query = query_vector(embedding, self.signature).reshape(1, -1)
        if top_k < 1:
            return []
        filtering = is_filtering(filters)
        with self._lock:
            allowed = None
            candidates = len(self._live)
            if filtering and filters is not None:
                allowed = self._allowed_ids(filters)
                candidates = len(allowed)
            if candidates == 0:
                return []
            # Grouping needs more than top_k tracklets to find top_k identities: start with a
            # few per identity and grow until enough identities, the range, or the end is hit.
            k = min(candidates, top_k if not group_by_identity else max(4 * top_k, 32))
            limit = squared_limit(max_distance)
            while True:
                distances, ids = self._index.search(query, k, allowed)
                matches, exhausted = select_nearest(
                    self._ranked(distances, ids),
                    top_k,
                    group_by_identity=group_by_identity,
                    limit=limit,
                )
                if len(matches) >= top_k or k >= candidates or exhausted:
                    return matches
                k = min(candidates, k * 4)

    def _allowed_ids(self, filters: SearchFilters) -> np.ndarray:
        clauses, params = filter_clauses(filters)
        rows = self._db.execute(
            f"SELECT row_id FROM tracklets WHERE {' AND '.join(clauses)}", params
        ).fetchall()
        return np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))

    def _ranked(self, distances: np.ndarray, ids: np.ndarray) -> Iterator[tuple[str, float, Match]]:
        """One FAISS answer as (identity, squared distance, match), nearest first."""
        for squared, row_id in zip(distances, ids, strict=True):
            if row_id < 0:
                return
            live = self._live.get(int(row_id))
            if live is not None:
                distance = float(np.sqrt(max(squared, 0)))
                match = Match(live.tracklet_id, live.identity, live.camera, distance)
                yield live.identity, squared, match

    # ----------------------------------------------------------------------------- reads

    def get_tracklet(self, tracklet_id: str, with_features: bool = False) -> TrackletRecord | None:
        columns = META_COLUMNS + (", features" if with_features else "")
        with self._lock:
            row = self._db.execute(
                f"SELECT {columns} FROM tracklets WHERE tracklet_id = ?", (tracklet_id,)
            ).fetchone()
        return None if row is None else from_row(row)

    def get_features(self, tracklet_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        ids = list(dict.fromkeys(tracklet_ids))
        found: dict[str, StoredFeatures] = {}
        with self._lock:
            rows = rows_for_ids(self._db, "tracklet_id, feature_dim, features, num_frames", ids)
            for tracklet_id, dim, blob, num_frames in rows:
                found[tracklet_id] = StoredFeatures(features_from_blob(blob, dim), int(num_frames))
        return found

    def get_identity(self, identity: str) -> list[TrackletRecord]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT {META_COLUMNS} FROM tracklets WHERE identity = ? ORDER BY row_id",
                (identity,),
            ).fetchall()
        return [from_row(row) for row in rows]

    def list_identities(
        self, offset: int = 0, limit: int = 100, contains: str | None = None
    ) -> tuple[list[IdentitySummary], int]:
        where, params = (
            ("WHERE identity LIKE ? ESCAPE '\\' ", [like_pattern(contains)])
            if contains
            else ("", [])
        )
        with self._lock:
            total = self._db.execute(
                f"SELECT COUNT(DISTINCT identity) FROM tracklets {where}", params
            ).fetchone()[0]
            rows = self._db.execute(
                "SELECT identity, COUNT(*), "
                "json_group_array(DISTINCT camera) FILTER (WHERE camera IS NOT NULL), "
                "MIN(COALESCE(start_us, end_us)), MAX(COALESCE(end_us, start_us)) "
                f"FROM tracklets {where}GROUP BY identity ORDER BY identity LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
        return [
            IdentitySummary(
                identity=identity,
                num_tracklets=count,
                cameras=tuple(sorted(json.loads(cameras))),
                first_seen=from_epoch_us(first),
                last_seen=from_epoch_us(last),
            )
            for identity, count, cameras, first, last in rows
        ], total

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM tracklets").fetchone()[0])

    def thumbnail_frames(self, tracklet_ids: Sequence[str]) -> dict[str, list[int]]:
        ids = list(dict.fromkeys(tracklet_ids))
        found: dict[str, list[int]] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                for tracklet_id, frame_index in self._db.execute(
                    "SELECT t.tracklet_id, th.frame_index FROM thumbnails th JOIN tracklets t "
                    f"USING (row_id) WHERE t.tracklet_id IN ({', '.join('?' * len(chunk))}) "
                    "ORDER BY th.row_id, th.position",
                    chunk,
                ):
                    found.setdefault(tracklet_id, []).append(int(frame_index))
        return found

    def get_thumbnail(self, tracklet_id: str, position: int) -> bytes | None:
        if not 0 <= position < MAX_THUMBNAILS:  # SQLite refuses integers past 64 bits
            return None
        with self._lock:
            row = self._db.execute(
                "SELECT th.jpeg FROM thumbnails th JOIN tracklets t USING (row_id) "
                "WHERE t.tracklet_id = ? AND th.position = ?",
                (tracklet_id, position),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def thumbnail_stats(self) -> ThumbnailStats:
        with self._lock:
            count, total = self._db.execute(
                "SELECT count, bytes FROM thumbnail_totals WHERE id = 1"
            ).fetchone()
        return ThumbnailStats(count=int(count), bytes=int(total))

    def iter_records(self, batch_size: int = 1000) -> Iterator[list[TrackletRecord]]:
        """Batches in enrolment order, paged by row id so the lock is held one batch at a time
        (concurrent adds and deletes stay possible during a long migration)."""
        last = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    f"SELECT row_id, {META_COLUMNS}, features FROM tracklets "
                    "WHERE row_id > ? ORDER BY row_id LIMIT ?",
                    (last, batch_size),
                ).fetchall()
                if not rows:
                    return
                thumbnails = thumbnails_by_row(self._db, rows[0][0], rows[-1][0])
            last = rows[-1][0]
            records = [from_row(row[1:]) for row in rows]
            for row, record in zip(rows, records, strict=True):
                record.thumbnails = thumbnails.get(row[0], [])
            yield records

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if isinstance(self._index, HnswIndex) and self._unsaved:
                try:
                    hnsw_snapshot.save(self._index, self.directory)
                    self._unsaved = False
                except (OSError, RuntimeError):  # the next start rebuilds: nothing is lost
                    log.warning(
                        "writing the HNSW graph to %s failed", self.directory, exc_info=True
                    )
            self._index.close()
