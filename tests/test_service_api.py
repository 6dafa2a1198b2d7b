"""End-to-end API behaviour through a real uvicorn process (tests/service_fixtures.py).

Every test names its identities and cameras uniquely, so tests sharing the server do not see
each other's tracklets; camera filters scope the queries.
"""

from __future__ import annotations

import json
import math
import uuid

import httpx
import pytest
from service_fixtures import (
    b64,
    encoded_frames,
    enroll,
    multipart_files,
    query,
    zip_archive,
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_multipart_enrollment_is_stored_with_its_fields(service_client: httpx.Client) -> None:
    camera = unique("cam")
    identity = unique("alice")
    body = enroll(
        service_client,
        identity,
        seed=1,
        count=5,
        camera=camera,
        start_time="2024-05-01T10:00:00+02:00",
        end_time="2024-05-01T10:00:05+02:00",
        metadata=json.dumps({"site": "north", "lane": 3}),
    )
    assert uuid.UUID(body["tracklet_id"])
    assert body["identity"] == identity
    assert body["camera"] == camera
    assert body["num_frames"] == 5
    assert len(body["attention"]) == 5
    assert math.isclose(sum(body["attention"]), 1.0, abs_tol=1e-4)

    stored = service_client.get(f"/tracklets/{body['tracklet_id']}")
    assert stored.status_code == 200
    record = stored.json()
    assert record["identity"] == identity
    assert record["metadata"] == {"site": "north", "lane": 3}
    assert record["start_time"].startswith("2024-05-01T08:00:00")  # normalised to UTC
    assert record["num_frames"] == 5
    assert record["attention"] == pytest.approx(body["attention"])


def test_query_ranks_the_identical_tracklet_first(service_client: httpx.Client) -> None:
    camera = unique("cam")
    names = {seed: unique(f"person{seed}") for seed in range(100, 106)}
    for seed, name in names.items():
        enroll(service_client, name, seed, camera=camera)
    for seed, name in names.items():
        result = query(service_client, seed, cameras=[camera], top_k=10)
        matches = result["matches"]
        assert [m["rank"] for m in matches] == list(range(1, len(names) + 1))
        assert matches[0]["identity"] == name
        # Probe and gallery roles differ, so "itself" is near, not at 0, but nearer than others.
        assert matches[0]["distance"] < matches[1]["distance"]
        for match in matches:
            assert 0.0 < match["score"] <= 1.0
            assert match["score"] == pytest.approx(1.0 / (1.0 + match["distance"]))
        assert len(result["attention"]) == result["num_frames"] == 6
        timings = result["timings"]
        assert set(timings) == {
            "decode_ms",
            "preprocess_ms",
            "embed_ms",
            "search_ms",
            "rerank_ms",
            "total_ms",
        }
        assert result["reranked"] == 0 and timings["rerank_ms"] == 0
        assert timings["total_ms"] >= timings["embed_ms"] + timings["search_ms"]


def test_zip_archive_is_ordered_numerically_by_entry_name(service_client: httpx.Client) -> None:
    camera = unique("cam")
    frames = encoded_frames(seed=7, count=12)
    # Written out of order, with names that sort differently as text (frame10 < frame2).
    entries = {f"clip/frame{i + 1}.png": frames[i] for i in (11, 0, 5, 1, 9, 3, 10, 2, 8, 4, 7, 6)}
    entries["clip/"] = b""  # a directory entry is skipped
    response = service_client.post(
        "/tracklets",
        data={"identity": unique("zip"), "camera": camera},
        files={"archive": ("clip.zip", zip_archive(entries), "application/zip")},
    )
    assert response.status_code == 201, response.text
    assert response.json()["num_frames"] == 12
    zipped_id = response.json()["tracklet_id"]
    in_order = enroll(service_client, unique("files"), seed=7, count=12, camera=camera)
    reversed_frames = multipart_files(frames[::-1])
    reversed_id = service_client.post(
        "/tracklets", data={"identity": unique("rev"), "camera": camera}, files=reversed_frames
    ).json()["tracklet_id"]

    result = query(service_client, seed=7, count=12, cameras=[camera], group_by_identity=False)
    distance = {m["tracklet_id"]: m["distance"] for m in result["matches"]}
    # Same frames in the same order give the same embedding; reversed order does not.
    assert distance[zipped_id] == pytest.approx(distance[in_order["tracklet_id"]], abs=1e-4)
    assert abs(distance[reversed_id] - distance[zipped_id]) > 1e-3


def test_json_base64_enrollment(service_client: httpx.Client) -> None:
    identity = unique("json")
    frames = b64(encoded_frames(seed=3, count=4, fmt="jpeg"))
    frames[0] = "data:image/jpeg;base64," + frames[0]  # data URLs are accepted
    response = service_client.post(
        "/tracklets",
        json={"identity": identity, "frames": frames, "metadata": {"source": "json"}},
    )
    assert response.status_code == 201, response.text
    assert response.json()["num_frames"] == 4
    detail = service_client.get(f"/identities/{identity}").json()
    assert [t["metadata"] for t in detail["tracklets"]] == [{"source": "json"}]


def test_batch_enrollment_stores_all_tracklets(service_client: httpx.Client) -> None:
    camera = unique("cam")
    names = [unique(f"batch{i}") for i in range(3)]
    payload = {
        "tracklets": [
            {"identity": name, "camera": camera, "frames": b64(encoded_frames(300 + i, 3 + i))}
            for i, name in enumerate(names)
        ]
    }
    response = service_client.post("/tracklets/batch", json=payload)
    assert response.status_code == 201, response.text
    results = response.json()["tracklets"]
    assert [r["identity"] for r in results] == names
    assert [r["num_frames"] for r in results] == [3, 4, 5]
    for result in results:
        assert service_client.get(f"/tracklets/{result['tracklet_id']}").status_code == 200
    found = query(service_client, seed=301, count=4, cameras=[camera])["matches"]
    assert found[0]["identity"] == names[1]


def test_batch_enrollment_is_all_or_nothing(service_client: httpx.Client) -> None:
    before = service_client.get("/readyz").json()["gallery"]["count"]
    names = [unique("atomic"), unique("atomic")]
    payload = {
        "tracklets": [
            {"identity": names[0], "frames": b64(encoded_frames(400, 3))},
            {"identity": names[1], "frames": b64([encoded_frames(401, 1)[0], b"not an image"])},
        ]
    }
    response = service_client.post("/tracklets/batch", json=payload)
    assert response.status_code == 415
    assert "tracklets[1]" in response.json()["error"]["message"]
    assert service_client.get("/readyz").json()["gallery"]["count"] == before
    for name in names:
        assert service_client.get(f"/identities/{name}").status_code == 404


def test_group_by_identity(service_client: httpx.Client) -> None:
    camera = unique("cam")
    twice, once = unique("twice"), unique("once")
    enroll(service_client, twice, 500, camera=camera)
    enroll(service_client, twice, 501, camera=camera)
    enroll(service_client, once, 502, camera=camera)
    grouped = query(service_client, 500, cameras=[camera])["matches"]
    assert sorted(m["identity"] for m in grouped) == sorted([twice, once])
    assert grouped[0]["identity"] == twice
    ungrouped = query(service_client, 500, cameras=[camera], group_by_identity=False)["matches"]
    assert [m["identity"] for m in ungrouped].count(twice) == 2
    assert len(ungrouped) == 3
    limited = query(service_client, 500, cameras=[camera], top_k=1)["matches"]
    assert [m["identity"] for m in limited] == [twice]


def test_camera_and_time_filters(service_client: httpx.Client) -> None:
    cam_a, cam_b = unique("cam"), unique("cam")
    early, late = unique("early"), unique("late")
    enroll(
        service_client,
        early,
        600,
        camera=cam_a,
        start_time="2024-01-01T08:00:00Z",
        end_time="2024-01-01T08:01:00Z",
    )
    enroll(
        service_client,
        late,
        601,
        camera=cam_b,
        start_time="2024-02-01T08:00:00Z",
        end_time="2024-02-01T08:01:00Z",
    )
    both = [cam_a, cam_b]

    def identities(**fields: object) -> list[str]:
        return [m["identity"] for m in query(service_client, 600, **fields)["matches"]]

    assert sorted(identities(cameras=both)) == sorted([early, late])
    assert identities(cameras=[cam_a]) == [early]
    assert identities(cameras=both, exclude_cameras=[cam_a]) == [late]
    assert identities(cameras=both, start_after="2024-01-15T00:00:00Z") == [late]
    assert identities(cameras=both, end_before="2024-01-15T00:00:00Z") == [early]
    assert (
        identities(
            cameras=both, start_after="2024-03-01T00:00:00Z", end_before="2024-03-02T00:00:00Z"
        )
        == []
    )

    # The same filters as form fields: cameras comma-separated.
    form = service_client.post(
        "/query",
        data={"cameras": f"{cam_a},{cam_b}", "exclude_cameras": cam_b, "top_k": "5"},
        files=multipart_files(encoded_frames(600)),
    )
    assert form.status_code == 200, form.text
    assert [m["identity"] for m in form.json()["matches"]] == [early]


def test_max_distance_gives_an_open_set_answer(service_client: httpx.Client) -> None:
    camera = unique("cam")
    enroll(service_client, unique("open"), 700, camera=camera)
    everything = query(service_client, 700, cameras=[camera])["matches"]
    assert len(everything) == 1
    nearest = everything[0]["distance"]
    assert query(service_client, 700, cameras=[camera], max_distance=nearest * 0.5)["matches"] == []
    kept = query(service_client, 700, cameras=[camera], max_distance=nearest * 2 + 1e-3)
    assert len(kept["matches"]) == 1


def test_identities_are_paged(service_client: httpx.Client) -> None:
    mine = sorted(unique("page") for _ in range(5))
    for i, name in enumerate(mine):
        enroll(service_client, name, 800 + i, count=2)
    seen: list[str] = []
    offset = 0
    while True:
        page = service_client.get("/identities", params={"offset": offset, "limit": 2}).json()
        assert page["offset"] == offset and page["limit"] == 2
        assert len(page["items"]) <= 2
        seen += [item["identity"] for item in page["items"]]
        offset += 2
        if offset >= page["total"]:
            break
    assert seen == sorted(set(seen))
    assert len(seen) == page["total"]
    assert set(mine) <= set(seen)
    item = next(
        i
        for i in service_client.get("/identities", params={"limit": 1000}).json()["items"]
        if i["identity"] == mine[0]
    )
    assert item["num_tracklets"] == 1


def test_get_and_delete_tracklets_and_identities(service_client: httpx.Client) -> None:
    camera = unique("cam")
    identity = unique("gone")
    first = enroll(service_client, identity, 900, camera=camera)
    second = enroll(service_client, identity, 901, camera=camera)
    detail = service_client.get(f"/identities/{identity}").json()
    assert sorted(t["tracklet_id"] for t in detail["tracklets"]) == sorted(
        [first["tracklet_id"], second["tracklet_id"]]
    )

    deleted = service_client.delete(f"/tracklets/{first['tracklet_id']}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    missing = service_client.get(f"/tracklets/{first['tracklet_id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "tracklet_not_found"
    assert first["tracklet_id"] in missing.json()["error"]["message"]
    matches = query(service_client, 900, cameras=[camera], group_by_identity=False)["matches"]
    assert [m["tracklet_id"] for m in matches] == [second["tracklet_id"]]

    gone = service_client.delete(f"/identities/{identity}")
    assert gone.status_code == 200 and gone.json()["deleted_tracklets"] == 1
    assert service_client.get(f"/identities/{identity}").status_code == 404
    assert query(service_client, 901, cameras=[camera])["matches"] == []
    again = service_client.delete(f"/identities/{identity}")
    assert again.status_code == 404
    assert again.json()["error"]["code"] == "identity_not_found"
    assert identity in again.json()["error"]["message"]
    assert service_client.delete(f"/tracklets/{uuid.uuid4()}").status_code == 404


def test_health_ready_and_metrics(service_client: httpx.Client) -> None:
    assert service_client.get("/healthz").json() == {"status": "ok"}
    ready = service_client.get("/readyz").json()
    assert ready["status"] == "ready"
    assert ready["provider"] == "CPUExecutionProvider"
    assert ready["provider"] in ready["available_providers"]
    assert ready["model"]["name"] and ready["model"]["version"]
    assert ready["model"]["roles"] == {"enroll": "gallery", "query": "probe"}
    assert ready["gallery"]["backend"] == "faiss"
    enroll(service_client, unique("metrics"), 950)
    text = service_client.get("/metrics").text
    for name in (
        'reid_request_duration_seconds_bucket{le="0.005",method="POST",route="/tracklets"',
        "reid_frames_embedded_total",
        "reid_batch_size_bucket",
        "reid_gallery_tracklets",
        'reid_model_info{gallery_backend="faiss"',
        'provider="CPUExecutionProvider"',
    ):
        assert name in text, name
    gauge = next(line for line in text.splitlines() if line.startswith("reid_gallery_tracklets "))
    assert float(gauge.split()[1]) == service_client.get("/readyz").json()["gallery"]["count"]


def test_openapi_documents_every_input_form(service_client: httpx.Client) -> None:
    spec = service_client.get("/openapi.json").json()
    for path in ("/tracklets", "/query"):
        content = spec["paths"][path]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "multipart/form-data"}
        assert {"frames", "archive"} <= set(content["multipart/form-data"]["schema"]["properties"])
    assert "BatchEnrollRequest" in spec["components"]["schemas"]
    # The shared server runs without keys: its schema asks for none.
    assert "securitySchemes" not in spec["components"]
    assert all("security" not in op for ops in spec["paths"].values() for op in ops.values())


# ----------------------------------------------------------------------------- re-scoring


def test_rerank_rescores_pairs_and_explains_each_match(service_client: httpx.Client) -> None:
    camera = unique("cam")
    names = {seed: unique(f"pair{seed}") for seed in range(900, 905)}
    enrolled = {
        seed: enroll(service_client, name, seed, count=4 + seed % 3, camera=camera)
        for seed, name in names.items()
    }
    for seed, name in names.items():
        plain = query(service_client, seed, cameras=[camera], top_k=3)
        result = query(service_client, seed, count=5, cameras=[camera], top_k=3, rerank=4)
        assert result["reranked"] == 4
        matches = result["matches"]
        assert [m["rank"] for m in matches] == [1, 2, 3]
        assert matches[0]["identity"] == name
        distances = [m["distance"] for m in matches]
        assert distances == sorted(distances)
        assert {m["tracklet_id"] for m in matches} <= {b["tracklet_id"] for b in enrolled.values()}
        for match in matches:
            frames = enrolled[next(s for s, n in names.items() if n == match["identity"])]
            assert len(match["attention"]) == frames["num_frames"]
            assert sum(match["attention"]) == pytest.approx(1.0, abs=1e-4)
            assert len(match["query_attention"]) == result["num_frames"] == 5
            assert sum(match["query_attention"]) == pytest.approx(1.0, abs=1e-4)
            assert match["index_distance"] is not None
            assert match["score"] == pytest.approx(1.0 / (1.0 + match["distance"]))
        assert result["timings"]["rerank_ms"] > 0
        # Without re-scoring no pair fields are sent, and the index's distances rule.
        assert all(m["attention"] is None and m["index_distance"] is None for m in plain["matches"])


def test_rerank_groups_and_cuts_on_the_pair_distance(service_client: httpx.Client) -> None:
    camera = unique("cam")
    twice, once = unique("twice"), unique("once")
    enroll(service_client, twice, 950, camera=camera)
    enroll(service_client, twice, 951, camera=camera)
    enroll(service_client, once, 952, camera=camera)
    grouped = query(service_client, 950, cameras=[camera], rerank=10)
    assert grouped["reranked"] == 3
    assert sorted(m["identity"] for m in grouped["matches"]) == sorted([twice, once])
    ungrouped = query(service_client, 950, cameras=[camera], rerank=10, group_by_identity=False)
    assert len(ungrouped["matches"]) == 3
    nearest = grouped["matches"][0]["distance"]
    assert (
        query(service_client, 950, cameras=[camera], rerank=10, max_distance=nearest * 0.5)[
            "matches"
        ]
        == []
    )
    kept = query(service_client, 950, cameras=[camera], rerank=10, max_distance=nearest + 1e-6)
    assert [m["distance"] for m in kept["matches"]] == [pytest.approx(nearest)]
    # rerank smaller than top_k still answers top_k: top_k candidates are re-scored.
    assert (
        query(service_client, 950, cameras=[camera], rerank=1, top_k=3, group_by_identity=False)[
            "reranked"
        ]
        == 3
    )


def test_rerank_limit_is_a_named_422(service_client: httpx.Client) -> None:
    response = service_client.post(
        "/query", json={"frames": b64(encoded_frames(960, 2)), "rerank": 100000}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "rerank_too_large" and "REID_MAX_RERANK" in error["message"]
    ready = service_client.get("/readyz").json()["model"]
    assert ready["pair_scorer"] is True and ready["rerank_default"] == 0
