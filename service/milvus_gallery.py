"""The Milvus gallery backend: one Milvus collection through pymilvus's ``MilvusClient``.

The same code talks to Milvus Lite and to a Milvus server; only the URI differs:

* a local path ending in ``.db`` (``./reid-data/milvus.db``) runs **Milvus Lite** inside this
  process (Milvus Lite 3 is pure Python: a gRPC server on a loopback port, storing a *directory*
  of that name). One process at a time may hold it (a file lock): for tests, a single machine and
  development. The index is FLAT (exact), so answers equal the faiss backend's.
* ``http://host:19530`` (or ``https://``, optionally ``http://user:password@host:19530/dbname``)
  talks to a **Milvus standalone or cluster**: galleries larger than one machine holds, shared by
  several service replicas. The index is HNSW (approximate, see ``_SERVER_INDEX``).

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
==============  =====================================  =========================================

Why the attention and features are base64 chunks: they have a different length for every
tracklet, Milvus vectors have a fixed dimension, and neither Milvus Lite (it has no FLOAT16 or
BINARY vectors) nor a server ARRAY (at most 4096 elements) can hold a (T', F) array of any length.
Base64 strings of at most 65532 characters (49149 raw bytes) fit a VARCHAR element on every Milvus;
64 of them bound a tracklet to 3 MiB of float16 features (12287 steps of 128 values), checked
before anything is written.

The model signature (version, embedding size) and the schema version are collection properties
(``astpn.model_version``, ``astpn.embedding_size``, ``astpn.schema_version``).

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
import fcntl
import json
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from pymilvus import DataType, MilvusClient, MilvusException

from service.gallery import (
    Gallery,
    GalleryError,
    GalleryModelMismatch,
    IdentitySummary,
    Match,
    ModelSignature,
    SearchFilters,
    StoredFeatures,
    TrackletExists,
    TrackletRecord,
    check_records,
    from_epoch_us,
    to_epoch_us,
)
from service.selection import select_nearest

log = logging.getLogger(__name__)

DEFAULT_COLLECTION = "reid_tracklets"
SCHEMA_VERSION = 1

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
#: Milvus refuses a search ``limit`` (top-k) above 16384.
MAX_SEARCH_LIMIT = 16384
#: Keep one insert request far below gRPC and proxy message limits (64 MiB and up).
MAX_INSERT_BYTES = 16 * 1024 * 1024
#: Ids per ``get`` request (each becomes an ``in [...]`` expression).
ID_BATCH = 500

#: Milvus Lite and small galleries: exact search, answers identical to the faiss backend.
_LITE_INDEX = {"index_type": "FLAT", "params": {}}
#: A server: HNSW, the usual graph index for millions of vectors held in memory. M=16 and
#: efConstruction=200 are the common recall/size balance; searches use ef = max(128, limit)
#: (ef must be at least the limit): recall typically above 0.99 for a small fraction of the work
#: of FLAT, whose cost grows linearly with the gallery.
_SERVER_INDEX = {"index_type": "HNSW", "params": {"M": 16, "efConstruction": 200}}
_HNSW_MIN_EF = 128

_META_FIELDS = [
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
_ALL_FIELDS = [*_META_FIELDS, "features"]
_SEARCH_FIELDS = ["identity", "camera"]
_SUMMARY_FIELDS = ["identity", "camera", "start_us", "end_us"]


# ----------------------------------------------------------------------------- locations


def is_server_uri(uri: str) -> bool:
    """True for a Milvus server address, False for a Milvus Lite path."""
    return uri.split(":", 1)[0].lower() in ("http", "https", "tcp", "unix")


def redact(uri: str) -> str:
    """The URI without its credentials, for logs and messages (pymilvus reads a user name
    alone as a token, so that goes too)."""
    if not is_server_uri(uri) or uri.lower().startswith("unix:"):
        return uri
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _lite_path(uri: str) -> str:
    """The absolute Milvus Lite path of ``uri`` (how pymilvus and Milvus Lite key it)."""
    if not uri.endswith(".db"):
        raise ValueError(
            f"Milvus location {uri!r} is neither a server URI (http://host:19530) nor a Milvus "
            "Lite path ending in .db (e.g. ./reid-data/milvus.db): set REID_MILVUS_URI to one"
        )
    return os.path.abspath(uri)


class _LiteServers:
    """Reference counts of the Milvus Lite servers this module opened in this process.

    pymilvus starts one in-process Milvus Lite server per path and keeps it (with its directory
    lock) until the process exits. Releasing it when the last gallery on that path closes lets
    another process (``reid-gallery``, a restarted service) open the path, and makes a reopen
    read the data back from disk.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._lock:
            self._counts[path] = self._counts.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._lock:
            left = self._counts.get(path, 0) - 1
            if left > 0:
                self._counts[path] = left
                return
            self._counts.pop(path, None)
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(path)


_LITE_SERVERS = _LiteServers()


def _lite_lock_holder(path: str) -> bool:
    """Whether another process holds Milvus Lite's directory lock on ``path`` (a diagnosis after
    a failed open: Milvus Lite allows one process per path)."""
    lock_path = os.path.join(path, "LOCK")
    if not os.path.exists(lock_path):
        return False
    try:
        descriptor = os.open(lock_path, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        return False
    finally:
        os.close(descriptor)


def _connect(uri: str) -> MilvusClient:
    """A dedicated client (closing it closes its connection) or a clear error."""
    try:
        return MilvusClient(uri=uri, dedicated=True)
    except MilvusException as exc:
        if not is_server_uri(uri) and _lite_lock_holder(os.path.abspath(uri)):
            raise GalleryError(
                f"the Milvus Lite gallery {uri} is open in another process (Milvus Lite allows "
                "one process per path): stop that process (the service, or another reid-gallery) "
                "and retry, or use a Milvus server"
            ) from exc
        raise GalleryError(
            f"cannot connect to Milvus at {redact(uri)}: {exc.message}. Check that the server "
            "runs and that REID_MILVUS_URI (or the reid-gallery SPEC) points at it"
        ) from exc


@contextlib.contextmanager
def _milvus_errors(action: str) -> Iterator[None]:
    """Milvus failures become :class:`GalleryError` (the API answers them with 503)."""
    try:
        yield
    except MilvusException as exc:
        raise GalleryError(f"{action} failed in Milvus: {exc.message}") from exc


def _signature_from(properties: dict[str, Any]) -> ModelSignature | None:
    if PROP_MODEL_VERSION not in properties or PROP_EMBEDDING_SIZE not in properties:
        return None
    return ModelSignature(properties[PROP_MODEL_VERSION], int(properties[PROP_EMBEDDING_SIZE]))


# -------------------------------------------------------------------------------- encoding


def _to_blob(values: np.ndarray, dtype: str) -> list[str]:
    raw = np.ascontiguousarray(values, dtype=dtype).tobytes()
    return [
        base64.b64encode(raw[start : start + BLOB_CHUNK_BYTES]).decode("ascii")
        for start in range(0, len(raw), BLOB_CHUNK_BYTES)
    ]


def _from_blob(chunks: Sequence[str], dtype: str) -> np.ndarray:
    return np.frombuffer(b"".join(base64.b64decode(chunk) for chunk in chunks), dtype=dtype)


def _check_sizes(record: TrackletRecord) -> None:
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


def _row(record: TrackletRecord) -> dict[str, Any]:
    features = np.asarray(record.features)
    created = record.created_at if record.created_at is not None else datetime.now(UTC)
    return {
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
        "attention": _to_blob(record.attention, "<f4"),
        "features": _to_blob(features, "<f2"),
        "embedding": np.asarray(record.embedding, dtype=np.float32).tolist(),
    }


def _row_bytes(row: dict[str, Any]) -> int:
    """About the bytes a row takes in an insert request."""
    blobs = sum(len(chunk) for chunk in row["attention"]) + sum(len(c) for c in row["features"])
    return blobs + 4 * len(row["embedding"]) + 256 + len(json.dumps(row["metadata"]))


def _record(row: dict[str, Any]) -> TrackletRecord:
    dim = int(row["feature_dim"])
    if "features" in row:
        # One row per embedded frame: fewer than num_frames for a subsampled tracklet.
        features = _from_blob(row["features"], "<f2").reshape(-1, dim).astype(np.float32)
    else:
        features = np.zeros((0, dim), np.float32)
    return TrackletRecord(
        tracklet_id=row["tracklet_id"],
        identity=row["identity"],
        embedding=np.asarray(row["embedding"], dtype=np.float32),
        features=features,
        attention=_from_blob(row["attention"], "<f4").copy(),
        camera=row.get("camera"),
        start_time=from_epoch_us(row.get("start_us")),
        end_time=from_epoch_us(row.get("end_us")),
        metadata=row.get("metadata") or {},
        created_at=from_epoch_us(row.get("created_us")),
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


def _string_list(values: Sequence[str]) -> str:
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
        clauses.append(f"camera in {_string_list(list(filters.cameras))}")
    if filters.exclude_cameras:
        # Written out for NULL: Milvus Lite keeps NULL rows in `not in`, a server drops them.
        excluded = _string_list(list(filters.exclude_cameras))
        clauses.append(f"(camera is null or camera not in {excluded})")
    if filters.start_after is not None:
        after = to_epoch_us(filters.start_after)
        clauses.append(f"(end_us >= {after} or (end_us is null and start_us >= {after}))")
    if filters.end_before is not None:
        before = to_epoch_us(filters.end_before)
        clauses.append(f"(start_us <= {before} or (start_us is null and end_us <= {before}))")
    return " and ".join(clauses) if clauses else None


def _and(*parts: str | None) -> str:
    present = [part for part in parts if part]
    return " and ".join(f"({part})" for part in present)


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
        self._lite_path = None if is_server_uri(self.uri) else _lite_path(self.uri)
        self._write_lock = threading.RLock()
        self._read_lock: Any = self._write_lock if self._lite_path else contextlib.nullcontext()
        self._paged_reads = self._lite_path is None
        self._closed = False
        if self._lite_path is not None:
            Path(self._lite_path).parent.mkdir(parents=True, exist_ok=True)
            _LITE_SERVERS.acquire(self._lite_path)
        try:
            self._client = _connect(self.uri)
            try:
                with _milvus_errors(f"opening the gallery at {redact(self.uri)}"):
                    self._open_collection(index_type)
            except BaseException:
                self._client.close()
                raise
        except BaseException:
            if self._lite_path is not None:
                _LITE_SERVERS.release(self._lite_path)
            raise
        log.info("gallery at %s: %s", redact(self.uri), self.index_description)

    # ------------------------------------------------------------------------------ setup

    @classmethod
    def read_signature(
        cls, location: str, collection: str = DEFAULT_COLLECTION
    ) -> ModelSignature | None:
        """The signature of the gallery at ``location``; None when there is none. Creates
        nothing (a missing Milvus Lite path is not created), writes nothing."""
        lite_path = None if is_server_uri(location) else _lite_path(location)
        if lite_path is not None:
            if not os.path.exists(lite_path):
                return None
            _LITE_SERVERS.acquire(lite_path)
        try:
            client = _connect(location)
            try:
                with _milvus_errors(f"reading the gallery at {redact(location)}"):
                    if not client.has_collection(collection):
                        return None
                    properties = client.describe_collection(collection).get("properties", {})
            finally:
                client.close()
        finally:
            if lite_path is not None:
                _LITE_SERVERS.release(lite_path)
        signature = _signature_from(properties)
        if signature is None:
            raise GalleryError(
                f"the Milvus collection {collection!r} at {redact(location)} was not created by "
                "astpn-reid (it has no model signature): use another collection or database"
            )
        return signature

    def _open_collection(self, index_type: str | None) -> None:
        if not self._client.has_collection(self.collection):
            self._create_collection()
        # Creating a collection and its indexes are separate requests: a gallery whose creation
        # was interrupted between them gets its indexes now.
        self._ensure_indexes(index_type)
        described = self._client.describe_collection(self.collection)
        properties = described.get("properties", {})
        recorded = _signature_from(properties)
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
        if int(properties.get(PROP_SCHEMA_VERSION, "0")) != SCHEMA_VERSION:
            raise GalleryError(
                f"the Milvus {where} has schema version {properties.get(PROP_SCHEMA_VERSION)}; "
                f"this code reads version {SCHEMA_VERSION}"
            )
        # A server keeps collections loaded across restarts; Milvus Lite opens them released.
        self._client.load_collection(self.collection)
        self._index = self._client.describe_index(self.collection, "embedding") or {}

    def _create_collection(self) -> None:
        schema = self._client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field(
            "tracklet_id", DataType.VARCHAR, is_primary=True, max_length=MAX_STRING_BYTES
        )
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
        schema.add_field("embedding", DataType.FLOAT_VECTOR, dim=self.signature.embedding_size)
        self._client.create_collection(
            self.collection,
            schema=schema,
            consistency_level="Strong",
            properties={
                PROP_MODEL_VERSION: self.signature.version,
                PROP_EMBEDDING_SIZE: str(self.signature.embedding_size),
                PROP_SCHEMA_VERSION: str(SCHEMA_VERSION),
            },
        )

    def _ensure_indexes(self, index_type: str | None) -> None:
        existing = set(self._client.list_indexes(self.collection))
        index_params = self._client.prepare_index_params()
        if "embedding" not in existing:
            index = dict(_LITE_INDEX if self._lite_path else _SERVER_INDEX)
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
            self._client.create_index(self.collection, index_params, sync=False)

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
            _check_sizes(record)
        if not records:
            return
        rows = [_row(record) for record in records]
        ids = [record.tracklet_id for record in records]
        with self._write_lock:
            with _milvus_errors(f"checking {len(ids)} tracklet ids"):
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
            row_size = _row_bytes(row)
            if chunk and size + row_size > MAX_INSERT_BYTES:
                yield chunk
                chunk, size = [], 0
            chunk.append(row)
            size += row_size
        if chunk:
            yield chunk

    def _existing(self, ids: Sequence[str]) -> list[str]:
        found: list[str] = []
        for start in range(0, len(ids), ID_BATCH):
            rows = self._client.get(
                self.collection,
                ids=list(ids[start : start + ID_BATCH]),
                output_fields=["tracklet_id"],
                consistency_level="Strong",
            )
            found.extend(row["tracklet_id"] for row in rows)
        return found

    def delete_tracklet(self, tracklet_id: str) -> bool:
        with self._write_lock, _milvus_errors(f"deleting tracklet {tracklet_id!r}"):
            if not self._existing([tracklet_id]):
                return False
            self._client.delete(self.collection, ids=[tracklet_id])
            return True

    def delete_identity(self, identity: str) -> int:
        with self._write_lock, _milvus_errors(f"deleting identity {identity!r}"):
            ids = [row["tracklet_id"] for row in self._scan(f"identity == {quote(identity)}", [])]
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
        query = np.asarray(embedding, dtype=np.float32).reshape(-1)
        if query.shape[0] != self.signature.embedding_size:
            raise ValueError(
                f"the query embedding has {query.shape[0]} values; the gallery stores "
                f"{self.signature.embedding_size}"
            )
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
        limit = None if max_distance is None else float(max_distance) ** 2
        vector = query.tolist()
        with self._read_lock, _milvus_errors("searching the gallery"):
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
            excluded = f"identity not in {_string_list(sorted(seen))}" if seen else None
            hits = self._ann(vector, k, _and(expression, excluded) or None)
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
            params["params"] = {"ef": max(_HNSW_MIN_EF, k)}
        result = self._client.search(
            self.collection,
            data=[vector],
            anns_field="embedding",
            limit=k,
            filter=expression or "",
            output_fields=_SEARCH_FIELDS,
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

    def _scan(
        self, expression: str, fields: list[str], batch_size: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Every row matching ``expression``. A server caps one query's result window (16384
        rows), so it is read through pymilvus's query iterator, in primary-key pages. Milvus
        Lite answers a query without a limit whole, and lacks the timestamp service the iterator
        asks it for (every call would log a server error), so it is read in one query."""
        output_fields = ["tracklet_id", *fields]
        if not self._paged_reads:
            yield from self._client.query(
                self.collection,
                filter=expression,
                output_fields=output_fields,
                consistency_level="Strong",
            )
            return
        iterator = self._client.query_iterator(
            self.collection,
            batch_size=batch_size,
            filter=expression,
            output_fields=output_fields,
            consistency_level="Strong",
        )
        try:
            while True:
                page = iterator.next()
                if not page:
                    return
                yield from page
        finally:
            iterator.close()

    def get_tracklet(self, tracklet_id: str, with_features: bool = False) -> TrackletRecord | None:
        fields = _ALL_FIELDS if with_features else _META_FIELDS
        with self._read_lock, _milvus_errors(f"reading tracklet {tracklet_id!r}"):
            rows = self._client.get(
                self.collection,
                ids=[tracklet_id],
                output_fields=fields,
                consistency_level="Strong",
            )
        return _record(rows[0]) if rows else None

    def get_features(self, tracklet_ids: Sequence[str]) -> dict[str, StoredFeatures]:
        ids = list(dict.fromkeys(tracklet_ids))
        found: dict[str, StoredFeatures] = {}
        with self._read_lock, _milvus_errors("reading features"):
            for start in range(0, len(ids), ID_BATCH):
                rows = self._client.get(
                    self.collection,
                    ids=ids[start : start + ID_BATCH],
                    output_fields=["tracklet_id", "feature_dim", "features", "num_frames"],
                    consistency_level="Strong",
                )
                for row in rows:
                    features = _from_blob(row["features"], "<f2")
                    found[row["tracklet_id"]] = StoredFeatures(
                        features.reshape(-1, int(row["feature_dim"])).astype(np.float32),
                        int(row["num_frames"]),
                    )
        return found

    def get_identity(self, identity: str) -> list[TrackletRecord]:
        with self._read_lock, _milvus_errors(f"reading identity {identity!r}"):
            rows = list(self._scan(f"identity == {quote(identity)}", _META_FIELDS))
        records = [_record(row) for row in rows]
        # Enrolment order, as the faiss backend answers.
        records.sort(
            key=lambda r: (r.created_at or datetime.min.replace(tzinfo=UTC), r.tracklet_id)
        )
        return records

    def list_identities(
        self, offset: int = 0, limit: int = 100
    ) -> tuple[list[IdentitySummary], int]:
        # Milvus has no GROUP BY: aggregate the four small scalar fields of every row here.
        summaries: dict[str, _Summary] = {}
        with self._read_lock, _milvus_errors("listing identities"):
            for row in self._scan("", _SUMMARY_FIELDS):
                summary = summaries.setdefault(row["identity"], _Summary())
                summary.add(row)
        names = sorted(summaries)
        page = names[max(offset, 0) : max(offset, 0) + max(limit, 0)]
        return [summaries[name].summary(name) for name in page], len(names)

    def count(self) -> int:
        with self._read_lock, _milvus_errors("counting tracklets"):
            rows = self._client.query(
                self.collection,
                filter="",
                output_fields=["count(*)"],
                consistency_level="Strong",
            )
        return int(rows[0]["count(*)"])

    def iter_records(self, batch_size: int = 1000) -> Iterator[list[TrackletRecord]]:
        """Batches in primary-key order, the lock held one batch at a time so concurrent adds
        and deletes stay possible during a long migration."""
        if not self._paged_reads:
            # Ids first (small), then the records batch by batch.
            with self._read_lock, _milvus_errors("reading the gallery"):
                ids = sorted(row["tracklet_id"] for row in self._scan("", []))
            for start in range(0, len(ids), batch_size):
                with self._read_lock, _milvus_errors("reading the gallery"):
                    rows = self._client.get(
                        self.collection,
                        ids=ids[start : start + batch_size],
                        output_fields=_ALL_FIELDS,
                        consistency_level="Strong",
                    )
                rows.sort(key=lambda row: row["tracklet_id"])
                if rows:
                    yield [_record(row) for row in rows]
            return
        with _milvus_errors("reading the gallery"):
            iterator = self._client.query_iterator(
                self.collection,
                batch_size=batch_size,
                filter="",
                output_fields=_ALL_FIELDS,
                consistency_level="Strong",
            )
        try:
            while True:
                with _milvus_errors("reading the gallery"):
                    page = iterator.next()
                if not page:
                    return
                yield [_record(row) for row in page]
        finally:
            iterator.close()

    def close(self) -> None:
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._client.close()
            if self._lite_path is not None:
                _LITE_SERVERS.release(self._lite_path)


class _Summary:
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
