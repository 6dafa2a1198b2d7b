"""The faiss backend's SQLite side, its source of truth (:mod:`service.faiss_gallery`): the
tables, a record as a row and back, search filters as SQL, and write transactions."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from service.gallery import (
    SearchFilters,
    Thumbnail,
    TrackletRecord,
    from_epoch_us,
    to_epoch_us,
)

DB_NAME = "gallery.sqlite3"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracklets (
    -- The FAISS id. AUTOINCREMENT: an id is never reused after a delete, so a stale FAISS entry
    -- could never be mistaken for a newer tracklet.
    row_id INTEGER PRIMARY KEY AUTOINCREMENT,
    tracklet_id TEXT NOT NULL UNIQUE,
    identity TEXT NOT NULL,
    camera TEXT,
    start_us INTEGER,            -- epoch microseconds, UTC
    end_us INTEGER,
    created_us INTEGER NOT NULL,
    metadata TEXT NOT NULL,      -- JSON object
    num_frames INTEGER NOT NULL,
    feature_dim INTEGER NOT NULL,
    embedding BLOB NOT NULL,     -- float32 (D,)
    features BLOB NOT NULL,      -- float16 (T, F), row-major
    attention BLOB NOT NULL      -- float32 (T,)
);
CREATE INDEX IF NOT EXISTS tracklets_identity ON tracklets (identity);
CREATE INDEX IF NOT EXISTS tracklets_camera ON tracklets (camera);
-- Thumbnails came after schema version 1 and only add tables, so a gallery made before them
-- opens unchanged (with none). Deleting a tracklet deletes its thumbnails (the cascade), and
-- the triggers keep their totals, so /readyz never scans the table.
CREATE TABLE IF NOT EXISTS thumbnails (
    row_id INTEGER NOT NULL REFERENCES tracklets (row_id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    frame_index INTEGER NOT NULL,
    jpeg BLOB NOT NULL,
    PRIMARY KEY (row_id, position)
);
CREATE TABLE IF NOT EXISTS thumbnail_totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
INSERT OR IGNORE INTO thumbnail_totals (id, count, bytes) VALUES (1, 0, 0);
CREATE TRIGGER IF NOT EXISTS thumbnail_added AFTER INSERT ON thumbnails BEGIN
    UPDATE thumbnail_totals SET count = count + 1, bytes = bytes + length(NEW.jpeg) WHERE id = 1;
END;
CREATE TRIGGER IF NOT EXISTS thumbnail_removed AFTER DELETE ON thumbnails BEGIN
    UPDATE thumbnail_totals SET count = count - 1, bytes = bytes - length(OLD.jpeg) WHERE id = 1;
END;
"""

# Columns of a record read without its features.
META_COLUMNS = (
    "tracklet_id, identity, camera, start_us, end_us, created_us, metadata, num_frames, "
    "feature_dim, embedding, attention"
)


INSERT = (
    "INSERT INTO tracklets (tracklet_id, identity, camera, start_us, end_us, created_us, "
    "metadata, num_frames, feature_dim, embedding, features, attention) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_THUMBNAIL = (
    "INSERT INTO thumbnails (row_id, position, frame_index, jpeg) VALUES (?, ?, ?, ?)"
)
#: Ids per ``IN (...)`` query, well under SQLite's limit on parameters.
ID_CHUNK = 500


def database_path(directory: str | Path) -> Path:
    return Path(directory) / DB_NAME


def filter_clauses(filters: SearchFilters) -> tuple[list[str], list[Any]]:
    """SQL for the filters. A span is [start, end], one instant when only one end is known; a
    NULL span compares false, so a tracklet without times never passes a time filter."""
    clauses: list[str] = []
    params: list[Any] = []
    if filters.cameras is not None:
        cameras = list(filters.cameras)
        clauses.append(f"camera IN ({', '.join('?' * len(cameras))})" if cameras else "0")
        params.extend(cameras)
    if filters.exclude_cameras:
        excluded = list(filters.exclude_cameras)
        clauses.append(f"(camera IS NULL OR camera NOT IN ({', '.join('?' * len(excluded))}))")
        params.extend(excluded)
    if filters.start_after is not None:
        clauses.append("COALESCE(end_us, start_us) >= ?")
        params.append(to_epoch_us(filters.start_after))
    if filters.end_before is not None:
        clauses.append("COALESCE(start_us, end_us) <= ?")
        params.append(to_epoch_us(filters.end_before))
    return clauses, params


def like_pattern(text: str) -> str:
    """A ``LIKE ... ESCAPE '\\'`` pattern matching names that contain ``text`` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def thumbnail_rows(row_id: int, record: TrackletRecord) -> list[tuple[int, int, int, bytes]]:
    return [
        (row_id, position, thumbnail.frame_index, thumbnail.jpeg)
        for position, thumbnail in enumerate(record.thumbnails)
    ]


def thumbnails_by_row(db: sqlite3.Connection, first: int, last: int) -> dict[int, list[Thumbnail]]:
    """The thumbnails of rows ``first..last`` (inclusive), in stored order."""
    found: dict[int, list[Thumbnail]] = {}
    for row_id, frame_index, jpeg in db.execute(
        "SELECT row_id, frame_index, jpeg FROM thumbnails WHERE row_id BETWEEN ? AND ? "
        "ORDER BY row_id, position",
        (first, last),
    ):
        found.setdefault(row_id, []).append(Thumbnail(int(frame_index), bytes(jpeg)))
    return found


def is_filtering(filters: SearchFilters | None) -> bool:
    return filters is not None and (
        filters.cameras is not None
        or bool(filters.exclude_cameras)
        or filters.start_after is not None
        or filters.end_before is not None
    )


def rows_for_ids(
    db: sqlite3.Connection, columns: str, tracklet_ids: Sequence[str]
) -> Iterator[tuple[Any, ...]]:
    """``SELECT columns`` of the tracklets with these ids (missing ones left out)."""
    for start in range(0, len(tracklet_ids), ID_CHUNK):
        chunk = list(tracklet_ids[start : start + ID_CHUNK])
        yield from db.execute(
            f"SELECT {columns} FROM tracklets WHERE tracklet_id IN ({', '.join('?' * len(chunk))})",
            chunk,
        )


def to_row(record: TrackletRecord) -> tuple[Any, ...]:
    features = np.ascontiguousarray(record.features, dtype=np.float16)
    created = record.created_at
    return (
        record.tracklet_id,
        record.identity,
        record.camera,
        to_epoch_us(record.start_time),
        to_epoch_us(record.end_time),
        to_epoch_us(created) if created is not None else now_us(),
        json.dumps(record.metadata, ensure_ascii=False, allow_nan=False),
        record.num_frames,
        int(features.shape[1]),
        np.ascontiguousarray(record.embedding, dtype=np.float32).tobytes(),
        features.tobytes(),
        np.ascontiguousarray(record.attention, dtype=np.float32).tobytes(),
    )


class Transaction:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error. IMMEDIATE takes the write lock
    up front so a read-then-write transaction cannot fail half-way on a busy database."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self._db.execute("COMMIT")
        else:
            self._db.execute("ROLLBACK")


def now_us() -> int:
    value = to_epoch_us(datetime.now(UTC))
    assert value is not None
    return value


def features_from_blob(blob: bytes, dim: int) -> np.ndarray:
    # One row per embedded frame, which is fewer than num_frames for a subsampled tracklet.
    return np.frombuffer(blob, dtype=np.float16).reshape(-1, dim).astype(np.float32)


def from_row(row: Sequence[Any]) -> TrackletRecord:
    """A record from ``META_COLUMNS`` (+ ``features`` when selected)."""
    (tracklet_id, identity, camera, start, end, created, metadata, _, dim, emb, att) = row[:11]
    features = features_from_blob(row[11], dim) if len(row) > 11 else np.zeros((0, dim), np.float32)
    return TrackletRecord(
        tracklet_id=tracklet_id,
        identity=identity,
        embedding=np.frombuffer(emb, dtype=np.float32).copy(),
        features=features,
        attention=np.frombuffer(att, dtype=np.float32).copy(),
        camera=camera,
        start_time=from_epoch_us(start),
        end_time=from_epoch_us(end),
        metadata=json.loads(metadata),
        created_at=from_epoch_us(created),
    )
