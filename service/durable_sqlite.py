"""SQLite files whose committed writes are on disk before the call returns.

The service acknowledges a write (an idempotent answer, a finished job) only once it would
survive a kill -9 or a power cut: WAL journal, ``synchronous=FULL``, autocommit (callers open
their own transactions), and one connection shared across threads behind the caller's lock.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating its folder) a durable SQLite file for use behind one lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db
