"""API keys with two scopes, sent in the ``X-API-Key`` header.

``read`` keys may query and list; ``write`` keys may also enroll and delete. With no key
configured at all, authentication is off (a local, single-user deployment).

Each key has a name, which the access and audit lines record instead of the key: an entry
``name:key`` names it (a name is letters, digits and ``._-``, at most 64), and an entry without
one is named by its setting and position (``write-1`` for the first ``REID_API_KEYS_WRITE``
entry). A key that itself contains ``:`` therefore needs a name in front of it.
"""

from __future__ import annotations

import enum
import hmac
import re
from collections.abc import Iterable

from fastapi.security import APIKeyHeader

from service.schemas import ApiError

API_KEY_HEADER = "X-API-Key"

#: The header as OpenAPI documents it; :mod:`service.dependencies` reads keys through it.
API_KEY_SCHEME = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Read keys (REID_API_KEYS_READ) may query and list; write keys "
    "(REID_API_KEYS_WRITE) may also enroll and delete.",
)


class Scope(enum.StrEnum):
    READ = "read"
    WRITE = "write"


_KEY_NAME = re.compile(r"([A-Za-z0-9._-]{1,64}):(.+)", re.DOTALL)


def named_keys(entries: Iterable[str], prefix: str) -> list[tuple[str, bytes]]:
    """``(name, key)`` for each configured entry (``name:key``, or a bare key named
    ``<prefix>-<position>``)."""
    keys = []
    for position, entry in enumerate(entries, start=1):
        named = _KEY_NAME.fullmatch(entry)
        name, key = (named.group(1), named.group(2)) if named else (f"{prefix}-{position}", entry)
        keys.append((name, key.encode()))
    return keys


def _find(keys: Iterable[tuple[str, bytes]], candidate: bytes) -> str | None:
    """The name of the key equal to ``candidate``, compared in constant time against every
    key, so timing reveals nothing about which (or whether one) matched."""
    found = None
    for name, key in keys:
        if hmac.compare_digest(key, candidate):
            found = name
    return found


class ApiKeys:
    """The configured keys and the check each route runs."""

    def __init__(self, read_keys: Iterable[str], write_keys: Iterable[str]) -> None:
        self._write = named_keys(write_keys, "write")
        self._read = named_keys(read_keys, "read") + self._write

    @property
    def enabled(self) -> bool:
        return bool(self._read)

    def check(self, key: str | None, scope: Scope) -> str | None:
        """The accepted key's name (None when authentication is off); raises
        :class:`ApiError` (401 or 403) unless ``key`` grants ``scope``."""
        if not self.enabled:
            return None
        if not key:
            raise ApiError(
                401,
                "missing_api_key",
                f"this server requires an API key: send it in the {API_KEY_HEADER} header",
            )
        candidate = key.encode()
        name = _find(self._read, candidate)
        if name is None:
            raise ApiError(401, "invalid_api_key", f"the {API_KEY_HEADER} key is not valid")
        if scope is Scope.WRITE and _find(self._write, candidate) is None:
            raise ApiError(
                403,
                "insufficient_scope",
                "this key may only read (query, list, get); enrolling and deleting need a "
                "write key (REID_API_KEYS_WRITE)",
            )
        return name
