"""The central end-to-end flow on the Milvus backend: a real service process configured with
REID_GALLERY_BACKEND=milvus and REID_MILVUS_URI (a Milvus Lite path), enrolling, querying with
filters, surviving a restart and deleting. tests/test_gallery_contract.py covers the backend's
behaviour in detail; this checks the service wires it in as deployed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fixtures import (
    SERVER_ENV,
    ServiceProcess,
    b64,
    encoded_frames,
    enroll,
    gallery_count,
    query,
    requires_milvus,
)

pytestmark = requires_milvus


@pytest.fixture(scope="module")
def milvus_service(
    exported_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    root = tmp_path_factory.mktemp("milvus-service")
    server = ServiceProcess(
        exported_model,
        root / "data",
        {
            **SERVER_ENV,
            "REID_GALLERY_BACKEND": "milvus",
            "REID_MILVUS_URI": str(root / "gallery" / "milvus.db"),
        },
    )
    server.start()
    yield server
    server.stop()


def _ids(matches: list[dict]) -> list[str]:
    return [m["tracklet_id"] for m in matches]


def test_enroll_query_restart_delete_on_milvus(milvus_service: ServiceProcess) -> None:
    with milvus_service.client() as client:
        ready = client.get("/readyz").json()
        assert ready["gallery"] == {
            "backend": "milvus",
            "count": 0,
            "index": ready["gallery"]["index"],
            "thumbnails": {"enabled": True, "count": 0, "bytes": None},
        }
        assert ready["gallery"]["index"].startswith("milvus lite collection")
        alice = enroll(
            client,
            "alice",
            800,
            camera="gate",
            start_time="2024-05-01T10:00:00Z",
            end_time="2024-05-01T10:00:05Z",
            metadata='{"site": "north"}',
        )
        alice_again = enroll(client, "alice", 801, camera="hall")
        batch = client.post(
            "/tracklets/batch",
            json={
                "tracklets": [
                    {"identity": "bob", "camera": "gate", "frames": b64(encoded_frames(802))},
                    {"identity": "carol", "frames": b64(encoded_frames(803))},
                ]
            },
        )
        assert batch.status_code == 201, batch.text
        assert gallery_count(client) == 4

        grouped = query(client, 800)["matches"]
        assert [m["identity"] for m in grouped][:1] == ["alice"]
        assert sorted(m["identity"] for m in grouped) == ["alice", "bob", "carol"]
        assert _ids(grouped)[0] == alice["tracklet_id"]
        everything = query(client, 800, group_by_identity=False)["matches"]
        assert len(everything) == 4
        assert [m["identity"] for m in query(client, 800, cameras=["gate"])["matches"]] == [
            "alice",
            "bob",
        ]
        excluded = query(client, 800, exclude_cameras=["gate"], group_by_identity=False)
        assert sorted(_ids(excluded["matches"])) == sorted(
            [alice_again["tracklet_id"], batch.json()["tracklets"][1]["tracklet_id"]]
        )
        timed = query(client, 800, start_after="2024-05-01T10:00:03Z", top_k=5)["matches"]
        assert _ids(timed) == [alice["tracklet_id"]]
        # Pair re-scoring reads the stored per-step features and frame counts back.
        rescored = query(client, 800, top_k=3, rerank=4)
        assert rescored["reranked"] == 4
        assert rescored["matches"][0]["identity"] == "alice"
        for match in rescored["matches"]:
            assert match["index_distance"] is not None
            assert sum(match["attention"]) == pytest.approx(1.0, abs=1e-4)
        assert len(rescored["matches"][0]["attention"]) == alice["num_frames"]

        stored = client.get(f"/tracklets/{alice['tracklet_id']}").json()
        assert stored["metadata"] == {"site": "north"}
        assert stored["start_time"].startswith("2024-05-01T10:00:00")
        assert stored["attention"] == pytest.approx(alice["attention"])
        identities = client.get("/identities").json()
        assert [i["identity"] for i in identities["items"]] == ["alice", "bob", "carol"]
        assert identities["items"][0]["cameras"] == ["gate", "hall"]
        # Thumbnails live in the same Milvus rows: 3 per 6-frame tracklet.
        thumbnail = client.get(stored["thumbnails"][0]["url"])
        assert thumbnail.status_code == 200 and thumbnail.content.startswith(b"\xff\xd8")
        assert client.get("/readyz").json()["gallery"]["thumbnails"]["count"] == 12
        before = everything

    milvus_service.stop()
    milvus_service.start()

    with milvus_service.client() as client:
        assert gallery_count(client) == 4
        after = query(client, 800, group_by_identity=False)["matches"]
        assert _ids(after) == _ids(before)
        assert [m["distance"] for m in after] == pytest.approx([m["distance"] for m in before])
        assert client.get(f"/tracklets/{alice['tracklet_id']}").json()["identity"] == "alice"
        assert client.get(stored["thumbnails"][0]["url"]).content == thumbnail.content

        deleted = client.delete(f"/tracklets/{alice['tracklet_id']}")
        assert deleted.status_code == 200 and deleted.json()["deleted"] is True
        assert client.get(f"/tracklets/{alice['tracklet_id']}").status_code == 404
        remaining = _ids(query(client, 800, group_by_identity=False)["matches"])
        assert alice["tracklet_id"] not in remaining and len(remaining) == 3
        gone = client.delete("/identities/alice")
        assert gone.status_code == 200 and gone.json()["deleted_tracklets"] == 1
        assert client.get("/identities/alice").status_code == 404
        assert "alice" not in {m["identity"] for m in query(client, 801)["matches"]}
        assert gallery_count(client) == 2
        assert client.get(stored["thumbnails"][0]["url"]).status_code == 404
        assert client.get("/readyz").json()["gallery"]["thumbnails"]["count"] == 6
        metrics = client.get("/metrics").text
        assert 'gallery_backend="milvus"' in metrics


def test_milvus_gallery_file_is_where_the_setting_says(milvus_service: ServiceProcess) -> None:
    # REID_MILVUS_URI, not REID_DATA_DIR/milvus.db, holds the gallery.
    configured = Path(milvus_service.env["REID_MILVUS_URI"])
    assert configured.is_dir() and (configured / "LOCK").exists()
    assert not (milvus_service.data_dir / "milvus.db").exists()
    with httpx.Client(base_url=milvus_service.url, timeout=30) as client:
        assert client.get("/readyz").json()["gallery"]["backend"] == "milvus"
