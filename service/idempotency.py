"""Idempotent enrolment: an ``Idempotency-Key`` header makes a retried request return the first
answer instead of enrolling again, across crashes and restarts, on every gallery backend.

Two mechanisms, so that no instant of a crash can lose the guarantee:

* **Deterministic tracklet ids.** Under a key, the n-th tracklet a request enrolls gets the id
  ``uuid5(scope, key, fingerprint, n)``, where the fingerprint is a digest of the request's
  content. A retry computes the same ids; if the first attempt's atomic ``gallery.add`` went
  through (even if the process died before answering), the retry's add finds them
  (``TrackletExists``) and the answer is rebuilt from the stored tracklets. The gallery is the
  source of truth, so this holds for every backend and every replica sharing a gallery.
* **The answer store** (SQLite in ``REID_DATA_DIR/idempotency.sqlite3``): the first answer,
  written before it is sent, replayed as is for ``REID_IDEMPOTENCY_TTL_S``. It also refuses a
  key reused for a different request (422), and spares a retry the decoding and embedding.

Keys are scoped by the API key that sent them (its SHA-256), so clients cannot see each other's
answers. Concurrent requests with one key run one at a time in a process.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import inspect
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from service import durable_sqlite
from service.gallery import Gallery, TrackletExists, TrackletRecord
from service.schemas import ApiError
from service.security import API_KEY_HEADER

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_NAMESPACE = uuid.UUID("6f1d9d0e-8f5e-4a55-9a57-2b6f3f6e0a15")

KEY_DESCRIPTION = (
    "Makes a retry of this request answer the first answer instead of enrolling again (also "
    "after a crash): one key (e.g. a UUID) per request, reused only for its retries."
)
KEY_PARAMETER = inspect.Parameter(
    "idempotency_key",
    inspect.Parameter.KEYWORD_ONLY,
    default=None,
    annotation=Annotated[str | None, Header(alias=HEADER, description=KEY_DESCRIPTION)],
)

_current: contextvars.ContextVar[IdContext | None] = contextvars.ContextVar(
    "reid_idempotency", default=None
)


@dataclass
class IdContext:
    """One keyed request: derives its tracklet ids and remembers them."""

    scope: str
    key: str
    fingerprint: str
    issued: list[str] = field(default_factory=list)

    def tracklet_id(self, label: str) -> str:
        name = "\x1f".join((self.scope, self.key, self.fingerprint, label))
        return str(uuid.uuid5(_NAMESPACE, name))

    def next_id(self) -> str:
        tracklet_id = self.tracklet_id(str(len(self.issued)))
        self.issued.append(tracklet_id)
        return tracklet_id


def new_tracklet_id() -> str:
    """The id of the next tracklet the current request enrolls: derived from its
    Idempotency-Key when it has one, else random."""
    context = _current.get()
    return context.next_id() if context is not None else str(uuid.uuid4())


def read_key(request: Request) -> str | None:
    """The request's Idempotency-Key, checked; ``None`` when it sends none."""
    return check_key(request.headers.get(HEADER))


def check_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not _KEY.match(key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            f"the {HEADER} header must be 1 to 255 printable ASCII characters without spaces "
            "(a UUID is a good key): one key per logical request, reused only for its retries",
        )
    return key


def key_scope(request: Request) -> str:
    api_key = request.headers.get(API_KEY_HEADER)
    return hashlib.sha256(api_key.encode()).hexdigest()[:32] if api_key else "-"


@dataclass(frozen=True)
class StoredAnswer:
    route: str
    fingerprint: str
    status: int
    body: Any
    created: float


class IdempotencyStore:
    """First answers by (scope, key). Thread-safe; every write is durable before it returns."""

    def __init__(self, path: Path, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._db = durable_sqlite.connect(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS answers (scope TEXT NOT NULL, key TEXT NOT NULL, "
            "route TEXT NOT NULL, fingerprint TEXT NOT NULL, status INTEGER NOT NULL, "
            "body TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (scope, key))"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS answers_created ON answers (created)")

    def get(self, scope: str, key: str) -> StoredAnswer | None:
        with self._lock:
            row = self._db.execute(
                "SELECT route, fingerprint, status, body, created FROM answers "
                "WHERE scope = ? AND key = ? AND created >= ?",
                (scope, key, time.time() - self.ttl_s),
            ).fetchone()
        if row is None:
            return None
        return StoredAnswer(row[0], row[1], int(row[2]), json.loads(row[3]), float(row[4]))

    def put(self, scope: str, key: str, answer: StoredAnswer) -> None:
        with self._lock:
            self._db.execute("DELETE FROM answers WHERE created < ?", (time.time() - self.ttl_s,))
            self._db.execute(
                "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    scope,
                    key,
                    answer.route,
                    answer.fingerprint,
                    answer.status,
                    json.dumps(answer.body, separators=(",", ":")),
                    answer.created,
                ),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()


class KeyLocks:
    """One asyncio lock per (scope, key) in use; forgotten when nobody holds or waits."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, scope: str, key: str):
        lock, users = self._locks.get((scope, key), (asyncio.Lock(), 0))
        self._locks[(scope, key)] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[(scope, key)]
            if users <= 1:
                del self._locks[(scope, key)]
            else:
                self._locks[(scope, key)] = (lock, users - 1)


def check_reuse(stored: StoredAnswer, route: str, fingerprint: str, key: str) -> None:
    if stored.route != route or stored.fingerprint != fingerprint:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stored.created))
        raise ApiError(
            422,
            "idempotency_key_reused",
            f"{HEADER} {key!r} was first used at {when} for a different request ({stored.route}"
            "): a key names one request and its retries; send a new key for a new request",
        )


def replay(stored: StoredAnswer) -> JSONResponse:
    return JSONResponse(stored.body, status_code=stored.status, headers={REPLAYED_HEADER: "true"})


async def body_fingerprint(request: Request) -> str:
    """Digest of the request's content: the body with its multipart boundary taken out (a
    client draws a new boundary for each attempt), plus the media type."""
    body = await request.body()
    content_type = request.headers.get("content-type", "")
    media_type, _, params = content_type.partition(";")
    match = re.search(r'boundary="?([^";]+)"?', params)
    if match:
        body = body.replace(match.group(1).encode(), b"")
    digest = hashlib.sha256(f"{request.url.path}\x1f{media_type.strip().lower()}\x1f".encode())
    digest.update(body)
    return digest.hexdigest()


def existing_records(gallery: Gallery, ids: Sequence[str]) -> list[TrackletRecord] | None:
    """The stored tracklets with these ids, in order; ``None`` unless every one is stored."""
    records = [gallery.get_tracklet(tracklet_id) for tracklet_id in ids]
    if not ids or any(record is None for record in records):
        return None
    return [record for record in records if record is not None]


Rebuild = Callable[[list[TrackletRecord]], BaseModel]
Handler = Callable[..., Awaitable[BaseModel]]


def idempotent(rebuild: Rebuild, status: int = 201) -> Callable[[Handler], Handler]:
    """Make an enrolment route idempotent under an ``Idempotency-Key``. ``rebuild`` makes the
    route's answer from its stored tracklets (after a crash between storing and answering).
    The route must take ids from :func:`new_tracklet_id`; the API key is checked before this
    runs (route dependencies come first)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request, idempotency_key: str | None = None, **kwargs: Any):
            key = check_key(idempotency_key)
            if key is None:
                return await handler(request, **kwargs)
            state = request.app.state
            store: IdempotencyStore = state.idempotency
            scope, route = key_scope(request), f"{request.method} {request.url.path}"
            fingerprint = await body_fingerprint(request)
            async with state.idempotency_locks.hold(scope, key):
                stored = await anyio.to_thread.run_sync(store.get, scope, key)
                if stored is not None:
                    check_reuse(stored, route, fingerprint, key)
                    return replay(stored)
                context = IdContext(scope, key, fingerprint)
                token = _current.set(context)
                try:
                    answer = await handler(request, **kwargs)
                except TrackletExists:
                    gallery = state.runtime.gallery
                    records = await anyio.to_thread.run_sync(
                        existing_records, gallery, list(context.issued)
                    )
                    if records is None:
                        raise
                    answer = rebuild(records)
                finally:
                    _current.reset(token)
                body = answer.model_dump(mode="json")
                stored = StoredAnswer(route, fingerprint, status, body, time.time())
                await anyio.to_thread.run_sync(store.put, scope, key, stored)
                return answer

        # The handler's own parameters (its dependencies), resolved in its module, plus the
        # header, which FastAPI then documents in OpenAPI and hands to the wrapper.
        signature = inspect.signature(handler, eval_str=True)
        wrapper.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), KEY_PARAMETER]
        )
        return wrapper

    return decorate
