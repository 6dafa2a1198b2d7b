"""API keys and restarts, on a second server started the way ``reid-serve`` starts it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fixtures import ServiceProcess, b64, encoded_frames, multipart_files

READ_KEY = "read-key-0123456789"
WRITE_KEY = "write-key-9876543210"


@pytest.fixture(scope="module")
def keyed_service(
    exported_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    server = ServiceProcess(
        exported_model,
        tmp_path_factory.mktemp("keyed") / "data",
        {
            "REID_API_KEYS_READ": f"{READ_KEY}, other-read-key",
            "REID_API_KEYS_WRITE": f"ingest:{WRITE_KEY}",
            "REID_BATCHING": "false",
            "REID_LOG_LEVEL": "info",  # the audit and access lines
        },
        entry="reid-serve",
    )
    server.start()
    yield server
    server.stop()


def _enroll(client: httpx.Client, key: str | None, identity: str = "keyed") -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return client.post(
        "/tracklets",
        data={"identity": identity, "camera": "gate"},
        files=multipart_files(encoded_frames(31, 4)),
        headers=headers,
    )


def _query(client: httpx.Client, key: str | None) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return client.post("/query", json={"frames": b64(encoded_frames(31, 4))}, headers=headers)


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        (None, 401, "missing_api_key"),
        ("", 401, "missing_api_key"),
        ("wrong-key", 401, "invalid_api_key"),
        (READ_KEY, 403, "insufficient_scope"),
    ],
)
def test_enrolling_needs_a_write_key(
    keyed_service: ServiceProcess, key: str | None, status: int, code: str
) -> None:
    with keyed_service.client() as client:
        before = client.get("/readyz").json()["gallery"]["count"]
        response = _enroll(client, key)
        assert response.status_code == status
        error = response.json()["error"]
        assert error["code"] == code
        assert ("X-API-Key" if status == 401 else "write key") in error["message"]
        assert client.get("/readyz").json()["gallery"]["count"] == before


@pytest.mark.parametrize(
    ("key", "status"),
    [(None, 401), ("wrong-key", 401), (READ_KEY, 200), ("other-read-key", 200), (WRITE_KEY, 200)],
)
def test_reading_needs_a_read_or_write_key(
    keyed_service: ServiceProcess, key: str | None, status: int
) -> None:
    headers = {"X-API-Key": key} if key is not None else {}
    with keyed_service.client() as client:
        assert _query(client, key).status_code == status
        assert client.get("/identities", headers=headers).status_code == status


def test_deleting_needs_a_write_key(keyed_service: ServiceProcess) -> None:
    with keyed_service.client() as client:
        assert _enroll(client, WRITE_KEY, "to-delete").status_code == 201
        refused = client.delete("/identities/to-delete", headers={"X-API-Key": READ_KEY})
        assert refused.status_code == 403
        read = client.get("/identities/to-delete", headers={"X-API-Key": READ_KEY})
        assert read.status_code == 200
        deleted = client.delete("/identities/to-delete", headers={"X-API-Key": WRITE_KEY})
        assert deleted.status_code == 200


def test_openapi_asks_for_the_key_on_every_keyed_route(keyed_service: ServiceProcess) -> None:
    with keyed_service.client() as client:
        spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    keyed = {
        (method, path)
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
        if operation.get("security") == [{"APIKeyHeader": []}]
    }
    assert ("post", "/tracklets") in keyed and ("get", "/identities") in keyed
    assert ("get", "/readyz") not in keyed and ("get", "/healthz") not in keyed


def test_audit_lines_name_the_key_never_show_it(keyed_service: ServiceProcess) -> None:
    with keyed_service.client() as client:
        enrolled = _enroll(client, WRITE_KEY, "audited")
        assert enrolled.status_code == 201
        tracklet_id = enrolled.json()["tracklet_id"]
        deleted = client.delete(f"/tracklets/{tracklet_id}", headers={"X-API-Key": WRITE_KEY})
        assert deleted.status_code == 200
        assert _query(client, READ_KEY).status_code == 200
    log = keyed_service.log()
    assert WRITE_KEY not in log and READ_KEY not in log
    audit = [json.loads(line) for line in log.splitlines() if '"reid.audit"' in line]
    events = {(entry["event"], entry["key"]) for entry in audit}
    assert ("enroll", "ingest") in events and ("delete_tracklet", "ingest") in events
    assert any(tracklet_id in entry.get("tracklet_ids", []) for entry in audit)
    access = [json.loads(line) for line in log.splitlines() if '"reid.access"' in line]
    assert any(entry["path"] == "/query" and entry["key"] == "read-1" for entry in access)


def test_operations_endpoints_need_no_key(keyed_service: ServiceProcess) -> None:
    with keyed_service.client() as client:
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert client.get(path).status_code == 200, path


def test_gallery_survives_a_restart(keyed_service: ServiceProcess) -> None:
    write = {"X-API-Key": WRITE_KEY}
    with keyed_service.client() as client:
        enrolled = _enroll(client, WRITE_KEY, "persistent")
        assert enrolled.status_code == 201
        tracklet_id = enrolled.json()["tracklet_id"]
        count = client.get("/readyz").json()["gallery"]["count"]
        before = _query(client, WRITE_KEY).json()["matches"]
        thumbnail = client.get(f"/tracklets/{tracklet_id}/thumbnails/0", headers=write)
        assert thumbnail.status_code == 200

    keyed_service.stop()
    keyed_service.start()

    with keyed_service.client() as client:
        assert client.get("/readyz").json()["gallery"]["count"] == count
        stored = client.get(f"/tracklets/{tracklet_id}", headers=write)
        assert stored.status_code == 200
        assert stored.json()["identity"] == "persistent"
        # The thumbnails were acknowledged with the enrolment: they survive too.
        url = stored.json()["thumbnails"][0]["url"]
        assert client.get(url, headers=write).content == thumbnail.content
        assert client.get(url).status_code == 401
        after = _query(client, WRITE_KEY).json()["matches"]
        assert [m["tracklet_id"] for m in after] == [m["tracklet_id"] for m in before]
        assert [m["distance"] for m in after] == pytest.approx([m["distance"] for m in before])
