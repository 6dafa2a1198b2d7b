"""Reaching Milvus: Milvus Lite paths and server URIs, the in-process Milvus Lite servers this
process opened, connecting with clear errors, and Milvus failures turned into gallery errors.

A local path ending in ``.db`` runs **Milvus Lite** inside this process (a gRPC server on a
loopback port, storing a *directory* of that name; one process at a time may hold it, through a
file lock). ``http://host:19530`` (or ``https://``, optionally with credentials and a database)
talks to a **Milvus standalone or cluster**.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

from pymilvus import MilvusClient, MilvusException

from service.gallery import GalleryError


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


def lite_path(uri: str) -> str:
    """The absolute Milvus Lite path of ``uri`` (how pymilvus and Milvus Lite key it)."""
    if not uri.endswith(".db"):
        raise ValueError(
            f"Milvus location {uri!r} is neither a server URI (http://host:19530) nor a Milvus "
            "Lite path ending in .db (e.g. ./reid-data/milvus.db): set REID_MILVUS_URI to one"
        )
    return os.path.abspath(uri)


class LiteServers:
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


LITE_SERVERS = LiteServers()


def lite_lock_holder(path: str) -> bool:
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


def connect(uri: str) -> MilvusClient:
    """A dedicated client (closing it closes its connection) or a clear error."""
    try:
        return MilvusClient(uri=uri, dedicated=True)
    except MilvusException as exc:
        if not is_server_uri(uri) and lite_lock_holder(os.path.abspath(uri)):
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
def opened_client(uri: str) -> Iterator[MilvusClient]:
    """A dedicated client of ``uri``; for a Milvus Lite path, its in-process server is held
    while the client is open (and released with the last client of that path)."""
    lite = None if is_server_uri(uri) else lite_path(uri)
    if lite is not None:
        LITE_SERVERS.acquire(lite)
    try:
        client = connect(uri)
        try:
            yield client
        finally:
            client.close()
    finally:
        if lite is not None:
            LITE_SERVERS.release(lite)


@contextlib.contextmanager
def milvus_errors(action: str) -> Iterator[None]:
    """Milvus failures become :class:`GalleryError` (the API answers them with 503)."""
    try:
        yield
    except MilvusException as exc:
        raise GalleryError(f"{action} failed in Milvus: {exc.message}") from exc
