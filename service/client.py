"""A small client of the service's HTTP API (standard library only): queries with frames, reads
tracklets and thumbnails. Used by ``reid-client``; errors carry the service's own message."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any


class ClientError(RuntimeError):
    """The service refused a request or could not be reached; the message says which and why."""


class ReidClient:
    """The service at ``url`` (``http://127.0.0.1:8000``), with an API key when it needs one."""

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _request(self, path: str, body: dict[str, Any] | None = None) -> tuple[bytes, str]:
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise ClientError(f"{path}: {exc.code} {_error_message(exc.read())}") from exc
        except urllib.error.URLError as exc:
            raise ClientError(f"cannot reach the service at {self.url}: {exc.reason}") from exc

    def _json(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        content, _ = self._request(path, body)
        return json.loads(content)

    def query(self, frames: Sequence[bytes], **fields: Any) -> dict[str, Any]:
        """``POST /query`` with these encoded frames; ``fields`` as the API names them (None
        values are left out)."""
        return self._json("/query", _frames_body(frames, fields))

    def enroll(self, frames: Sequence[bytes], identity: str, **fields: Any) -> dict[str, Any]:
        """``POST /tracklets`` with these encoded frames (needs a write key when keys are on)."""
        return self._json("/tracklets", _frames_body(frames, {**fields, "identity": identity}))

    def tracklet(self, tracklet_id: str) -> dict[str, Any]:
        return self._json(f"/tracklets/{urllib.parse.quote(tracklet_id, safe='')}")

    def thumbnail(self, url: str) -> bytes:
        """A thumbnail's JPEG, from the ``url`` a tracklet lists."""
        return self._request(url)[0]


def _frames_body(frames: Sequence[bytes], fields: dict[str, Any]) -> dict[str, Any]:
    body = {name: value for name, value in fields.items() if value is not None}
    body["frames"] = [base64.b64encode(frame).decode("ascii") for frame in frames]
    return body


def _error_message(content: bytes) -> str:
    try:
        error = json.loads(content)["error"]
        return f"{error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return content[:200].decode(errors="replace")
