"""API keys with two scopes, sent in the ``X-API-Key`` header.

``read`` keys may query and list; ``write`` keys may also enroll and delete. With no key
configured at all, authentication is off (a local, single-user deployment).
"""

from __future__ import annotations

import enum
import hmac
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


def _contains(keys: Iterable[bytes], candidate: bytes) -> bool:
    """Constant-time membership, checking every key so timing reveals nothing about which."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(key, candidate)
    return found


class ApiKeys:
    """The configured keys and the check each route runs."""

    def __init__(self, read_keys: Iterable[str], write_keys: Iterable[str]) -> None:
        self._write = [key.encode() for key in write_keys]
        self._read = [key.encode() for key in read_keys] + self._write

    @property
    def enabled(self) -> bool:
        return bool(self._read)

    def check(self, key: str | None, scope: Scope) -> None:
        """Raise :class:`ApiError` (401 or 403) unless ``key`` grants ``scope``."""
        if not self.enabled:
            return
        if not key:
            raise ApiError(
                401,
                "missing_api_key",
                f"this server requires an API key: send it in the {API_KEY_HEADER} header",
            )
        candidate = key.encode()
        if not _contains(self._read, candidate):
            raise ApiError(401, "invalid_api_key", f"the {API_KEY_HEADER} key is not valid")
        if scope is Scope.WRITE and not _contains(self._write, candidate):
            raise ApiError(
                403,
                "insufficient_scope",
                "this key may only read (query, list, get); enrolling and deleting need a "
                "write key (REID_API_KEYS_WRITE)",
            )
