"""The Milvus gallery's collection: its schema, indexes and properties, how a record becomes a
row and back, and the filter expressions of a search.

Schema of the collection (``reid_tracklets`` unless told otherwise), one row per tracklet:

==============  =====================================  =========================================
field           type                                   content
==============  =====================================  =========================================
tracklet_id     VARCHAR(1024), primary key             the tracklet's id
identity        VARCHAR(1024), INVERTED index          who it shows
camera          VARCHAR(1024), nullable                NULL when unknown
start_us        INT64, nullable                        start time, epoch microseconds (UTC)
end_us          INT64, nullable                        end time, epoch microseconds (UTC)
created_us      INT64                                  enrolment time, epoch microseconds (UTC)
metadata        JSON                                   the metadata object
num_frames      INT32                                  T, the uploaded frames (attention length)
feature_dim     INT32                                  F, the width of the per-step features
attention       ARRAY<VARCHAR(65535)>[64]              float32 (T,) little-endian, base64 chunks
features        ARRAY<VARCHAR(65535)>[64]              float16 (T', F) little-endian, base64 chunks
embedding       FLOAT_VECTOR(D), metric L2             the embedding searched
thumbnail_frames ARRAY<INT32>[16]                      the frame each thumbnail shows (schema 2)
thumbnails      ARRAY<VARCHAR(65535)>[16]              one base64 JPEG per element (schema 2)
==============  =====================================  =========================================

Schema version 2 added the two thumbnail fields. Milvus Lite cannot add fields to a collection,
so a version-1 collection opens as it is and keeps no thumbnails (the backend says so at start);
``reid-gallery migrate`` into a new collection gives it the fields.

Why the attention and features are base64 chunks: they have a different length for every
tracklet, Milvus vectors have a fixed dimension, and neither Milvus Lite (it has no FLOAT16 or
BINARY vectors) nor a server ARRAY (at most 4096 elements) can hold a (T', F) array of any length.
Base64 strings of at most 65532 characters (49149 raw bytes) fit a VARCHAR element on every Milvus;
64 of them bound a tracklet to 3 MiB of float16 features (12287 steps of 128 values), checked
before anything is written.

The model signature (version, embedding size) and the schema version are collection properties
(``astpn.model_version``, ``astpn.embedding_size``, ``astpn.schema_version``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pymilvus import DataType, MilvusClient

from service.gallery import (
    MAX_THUMBNAILS,
    IdentitySummary,
    ModelSignature,
    SearchFilters,
    Thumbnail,
    TrackletRecord,
    from_epoch_us,
    to_epoch_us,
)

DEFAULT_COLLECTION = "reid_tracklets"
SCHEMA_VERSION = 2
#: Versions this code opens; version 1 lacks the thumbnail fields.
READABLE_SCHEMA_VERSIONS = (1, 2)

#: Collection properties holding the signature.
PROP_MODEL_VERSION = "astpn.model_version"
PROP_EMBEDDING_SIZE = "astpn.embedding_size"
PROP_SCHEMA_VERSION = "astpn.schema_version"

#: Largest VARCHAR of the string fields, in UTF-8 bytes (the API allows 256 characters).
MAX_STRING_BYTES = 1024
#: Raw bytes per base64 chunk: 49149 bytes encode to 65532 characters, under VARCHAR's 65535.
BLOB_CHUNK_BYTES = 49149
BLOB_MAX_LENGTH = 65535
BLOB_MAX_CHUNKS = 64
#: Milvus Lite and small galleries: exact search, answers identical to the faiss backend.
LITE_INDEX = {"index_type": "FLAT", "params": {}}
#: A server: HNSW, the usual graph index for millions of vectors held in memory. M=16 and
#: efConstruction=200 are the common recall/size balance; searches use ef = max(128, limit)
#: (ef must be at least the limit): recall typically above 0.99 for a small fraction of the work
#: of FLAT, whose cost grows linearly with the gallery.
SERVER_INDEX = {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
HNSW_MIN_EF = 128

META_FIELDS = [
    "tracklet_id",
    "identity",
    "camera",
    "start_us",
    "end_us",
    "created_us",
    "metadata",
    "num_frames",
    "feature_dim",
    "attention",
    "embedding",
]
ALL_FIELDS = [*META_FIELDS, "features"]
THUMBNAIL_FIELDS = ["thumbnail_frames", "thumbnails"]
SEARCH_FIELDS = ["identity", "camera"]
SUMMARY_FIELDS = ["identity", "camera", "start_us", "end_us"]


def signature_from(properties: dict[str, Any]) -> ModelSignature | None:
    if PROP_MODEL_VERSION not in properties or PROP_EMBEDDING_SIZE not in properties:
        return None
    return ModelSignature(properties[PROP_MODEL_VERSION], int(properties[PROP_EMBEDDING_SIZE]))


# ---------------------------------------------------------------------------- collection


def create_collection(client: MilvusClient, collection: str, signature: ModelSignature) -> None:
    """The collection of the table above, its signature and schema version as properties."""
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("tracklet_id", DataType.VARCHAR, is_primary=True, max_length=MAX_STRING_BYTES)
    schema.add_field("identity", DataType.VARCHAR, max_length=MAX_STRING_BYTES)
    schema.add_field("camera", DataType.VARCHAR, max_length=MAX_STRING_BYTES, nullable=True)
    schema.add_field("start_us", DataType.INT64, nullable=True)
    schema.add_field("end_us", DataType.INT64, nullable=True)
    schema.add_field("created_us", DataType.INT64)
    schema.add_field("metadata", DataType.JSON)
    schema.add_field("num_frames", DataType.INT32)
    schema.add_field("feature_dim", DataType.INT32)
    for blob in ("attention", "features"):
        schema.add_field(
            blob,
            DataType.ARRAY,
            element_type=DataType.VARCHAR,
            max_length=BLOB_MAX_LENGTH,
            max_capacity=BLOB_MAX_CHUNKS,
        )
    schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=signature.embedding_size)
    schema.add_field(
        "thumbnail_frames", DataType.ARRAY, element_type=DataType.INT32, max_capacity=MAX_THUMBNAILS
    )
    schema.add_field(
        "thumbnails",
        DataType.ARRAY,
        element_type=DataType.VARCHAR,
        max_length=BLOB_MAX_LENGTH,
        max_capacity=MAX_THUMBNAILS,
    )
    client.create_collection(
        collection,
        schema=schema,
        consistency_level="Strong",
        properties={
            PROP_MODEL_VERSION: signature.version,
            PROP_EMBEDDING_SIZE: str(signature.embedding_size),
            PROP_SCHEMA_VERSION: str(SCHEMA_VERSION),
        },
    )


def ensure_indexes(
    client: MilvusClient, collection: str, index_type: str | None, *, lite: bool
) -> None:
    """Create the indexes the collection lacks: the vector index (``index_type``, else FLAT on
    Milvus Lite and HNSW on a server) and the identity index."""
    existing = set(client.list_indexes(collection))
    index_params = client.prepare_index_params()
    if "embedding" not in existing:
        index = dict(LITE_INDEX if lite else SERVER_INDEX)
        if index_type is not None:
            index = {"index_type": index_type, "params": {}}
        index_params.add_index(
            "embedding",
            index_type=index["index_type"],
            index_name="embedding",
            metric_type="L2",
            params=index["params"],
        )
    if "identity" not in existing:
        # Deleting or reading an identity, and excluding the identities already found while
        # grouping, filter on it.
        index_params.add_index("identity", index_type="INVERTED", index_name="identity")
    if len(index_params):
        # sync=False: pymilvus's wait polls every half second (a second per new gallery for
        # two indexes) though an empty collection has nothing to build.
        client.create_index(collection, index_params, sync=False)


# -------------------------------------------------------------------------------- encoding


def to_blob(values: np.ndarray, dtype: str) -> list[str]:
    raw = np.ascontiguousarray(values, dtype=dtype).tobytes()
    return [
        base64.b64encode(raw[start : start + BLOB_CHUNK_BYTES]).decode("ascii")
        for start in range(0, len(raw), BLOB_CHUNK_BYTES)
    ]


def from_blob(chunks: Sequence[str], dtype: str) -> np.ndarray:
    return np.frombuffer(b"".join(base64.b64decode(chunk) for chunk in chunks), dtype=dtype)


def check_sizes(record: TrackletRecord) -> None:
    """Refuse what the schema cannot hold, before anything is written."""
    name = f"tracklet {record.tracklet_id!r}"
    for label, value in (
        ("tracklet_id", record.tracklet_id),
        ("identity", record.identity),
        ("camera", record.camera),
    ):
        if value is not None and len(value.encode("utf-8")) > MAX_STRING_BYTES:
            raise ValueError(
                f"{name}: {label} is longer than {MAX_STRING_BYTES} UTF-8 bytes, the limit of "
                "the Milvus gallery"
            )
    features = np.asarray(record.features)
    for label, size in (
        ("features", features.size * 2),
        ("attention", np.asarray(record.attention).size * 4),
    ):
        if size > BLOB_CHUNK_BYTES * BLOB_MAX_CHUNKS:
            raise ValueError(
                f"{name}: {label} take {size} bytes; the Milvus gallery stores at most "
                f"{BLOB_CHUNK_BYTES * BLOB_MAX_CHUNKS} bytes per tracklet (lower "
                "REID_MAX_EMBEDDED_FRAMES or REID_MAX_FRAMES_PER_TRACKLET)"
            )


def to_row(record: TrackletRecord, with_thumbnails: bool = True) -> dict[str, Any]:
    """The record as a row; ``with_thumbnails`` False for a version-1 collection."""
    features = np.asarray(record.features)
    created = record.created_at if record.created_at is not None else datetime.now(UTC)
    thumbnails = record.thumbnails if with_thumbnails else []
    row = {
        "tracklet_id": record.tracklet_id,
        "identity": record.identity,
        "camera": record.camera,
        "start_us": to_epoch_us(record.start_time),
        "end_us": to_epoch_us(record.end_time),
        "created_us": to_epoch_us(created),
        # A JSON round trip now gives back exactly what a later read will (keys as strings,
        # no NaN), as the faiss backend's json.dumps does.
        "metadata": json.loads(json.dumps(record.metadata, ensure_ascii=False, allow_nan=False)),
        "num_frames": record.num_frames,
        "feature_dim": int(features.shape[1]),
        "attention": to_blob(record.attention, "<f4"),
        "features": to_blob(features, "<f2"),
        "embedding": np.asarray(record.embedding, dtype=np.float32).tolist(),
    }
    if with_thumbnails:
        row["thumbnail_frames"] = [thumbnail.frame_index for thumbnail in thumbnails]
        row["thumbnails"] = [base64.b64encode(t.jpeg).decode("ascii") for t in thumbnails]
    return row


def row_bytes(row: dict[str, Any]) -> int:
    """About the bytes a row takes in an insert request."""
    blobs = sum(
        len(chunk)
        for field in ("attention", "features", "thumbnails")
        for chunk in row.get(field, [])
    )
    return blobs + 4 * len(row["embedding"]) + 256 + len(json.dumps(row["metadata"]))


def from_row(row: dict[str, Any]) -> TrackletRecord:
    dim = int(row["feature_dim"])
    if "features" in row:
        # One row per embedded frame: fewer than num_frames for a subsampled tracklet.
        features = from_blob(row["features"], "<f2").reshape(-1, dim).astype(np.float32)
    else:
        features = np.zeros((0, dim), np.float32)
    return TrackletRecord(
        tracklet_id=row["tracklet_id"],
        identity=row["identity"],
        embedding=np.asarray(row["embedding"], dtype=np.float32),
        features=features,
        attention=from_blob(row["attention"], "<f4").copy(),
        camera=row.get("camera"),
        start_time=from_epoch_us(row.get("start_us")),
        end_time=from_epoch_us(row.get("end_us")),
        metadata=row.get("metadata") or {},
        created_at=from_epoch_us(row.get("created_us")),
        thumbnails=[
            Thumbnail(int(frame), base64.b64decode(jpeg))
            for frame, jpeg in zip(
                row.get("thumbnail_frames") or [], row.get("thumbnails") or [], strict=True
            )
        ],
    )


# ----------------------------------------------------------------------------- expressions


def quote(value: str) -> str:
    """A Milvus string literal. Both the server's parser (Go's strconv.Unquote) and Milvus
    Lite's accept exactly these escapes; every other character may appear as itself."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("\t", "\\t")
    )
    return f'"{escaped}"'


def string_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(quote(value) for value in values) + "]"


def filter_expression(filters: SearchFilters | None) -> str | None:
    """The boolean expression of ``filters`` (None: no restriction). Raises LookupError when no
    tracklet can pass (an empty ``cameras`` list).

    Time semantics as the faiss backend's SQL: a span is [start, end], one instant when only one
    end is known; comparisons with NULL are false in Milvus, so a tracklet without times never
    passes a time filter."""
    if filters is None:
        return None
    clauses: list[str] = []
    if filters.cameras is not None:
        if not list(filters.cameras):
            raise LookupError("an empty camera list admits no tracklet")
        clauses.append(f"camera in {string_list(list(filters.cameras))}")
    if filters.exclude_cameras:
        # Written out for NULL: Milvus Lite keeps NULL rows in `not in`, a server drops them.
        excluded = string_list(list(filters.exclude_cameras))
        clauses.append(f"(camera is null or camera not in {excluded})")
    if filters.start_after is not None:
        after = to_epoch_us(filters.start_after)
        clauses.append(f"(end_us >= {after} or (end_us is null and start_us >= {after}))")
    if filters.end_before is not None:
        before = to_epoch_us(filters.end_before)
        clauses.append(f"(start_us <= {before} or (start_us is null and end_us <= {before}))")
    return " and ".join(clauses) if clauses else None


def and_(*parts: str | None) -> str:
    present = [part for part in parts if part]
    return " and ".join(f"({part})" for part in present)


class IdentityAggregate:
    """One identity's aggregate while listing identities."""

    def __init__(self) -> None:
        self.count = 0
        self.cameras: set[str] = set()
        self.first: int | None = None
        self.last: int | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.count += 1
        if row.get("camera") is not None:
            self.cameras.add(row["camera"])
        start, end = row.get("start_us"), row.get("end_us")
        # The span is [start, end]; one instant when only one end is known.
        first = start if start is not None else end
        last = end if end is not None else start
        if first is not None:
            self.first = first if self.first is None else min(self.first, first)
        if last is not None:
            self.last = last if self.last is None else max(self.last, last)

    def summary(self, identity: str) -> IdentitySummary:
        return IdentitySummary(
            identity=identity,
            num_tracklets=self.count,
            cameras=tuple(sorted(self.cameras)),
            first_seen=from_epoch_us(self.first),
            last_seen=from_epoch_us(self.last),
        )
