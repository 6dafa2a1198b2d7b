"""Thumbnails through the HTTP API: kept at enrolment, listed with the tracklet, served as JPEG,
deleted with it, counted in /readyz, never left behind by a refused enrolment, and not kept at
all with REID_THUMBNAILS=false."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
from service_fixtures import (
    SERVER_ENV,
    ServiceProcess,
    b64,
    encoded_frames,
    enroll,
    multipart_files,
)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def thumbnail_stats(client: httpx.Client) -> dict:
    return client.get("/readyz").json()["gallery"]["thumbnails"]


def test_enrolment_keeps_thumbnails_of_the_telling_frames(service_client: httpx.Client) -> None:
    before = thumbnail_stats(service_client)
    name = unique("thumbs")
    enrolled = enroll(service_client, name, 501, count=8, camera=unique("cam"))
    attention = enrolled["attention"]

    tracklet = service_client.get(f"/tracklets/{enrolled['tracklet_id']}").json()
    thumbnails = tracklet["thumbnails"]
    frames = [t["frame_index"] for t in thumbnails]
    most = int(np.argmax(attention))
    assert len(frames) == 3 and frames == sorted(frames)
    assert {0, 7, most} <= set(frames) or (most in (0, 7) and {0, 7} <= set(frames))
    for position, thumbnail in enumerate(thumbnails):
        assert thumbnail["position"] == position
        assert thumbnail["attention"] == attention[thumbnail["frame_index"]]
        response = service_client.get(thumbnail["url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/jpeg"
        image = cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (96, 48, 3)  # the 96x48 frames fit the 128-pixel default

    identity = service_client.get(f"/identities/{name}").json()
    assert identity["tracklets"][0]["thumbnails"] == thumbnails
    after = thumbnail_stats(service_client)
    assert after["enabled"] is True
    assert after["count"] == before["count"] + 3
    assert after["bytes"] > before["bytes"]

    assert service_client.delete(f"/identities/{name}").status_code == 200
    gone = service_client.get(thumbnails[0]["url"])
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "thumbnail_not_found"
    assert thumbnail_stats(service_client) == before


def test_a_refused_batch_leaves_no_thumbnail(service_client: httpx.Client) -> None:
    before = thumbnail_stats(service_client)
    response = service_client.post(
        "/tracklets/batch",
        json={
            "tracklets": [
                {"identity": unique("ok"), "frames": b64(encoded_frames(502))},
                {"identity": unique("bad"), "frames": ["bm90IGFuIGltYWdl"]},
            ]
        },
    )
    assert response.status_code == 415  # not an image: the whole batch is refused
    assert thumbnail_stats(service_client) == before


def test_unknown_thumbnails_are_404(service_client: httpx.Client) -> None:
    enrolled = enroll(service_client, unique("few"), 503, count=2)
    tracklet_id = enrolled["tracklet_id"]
    assert len(service_client.get(f"/tracklets/{tracklet_id}").json()["thumbnails"]) == 2
    for url in (f"/tracklets/{tracklet_id}/thumbnails/2", "/tracklets/nope/thumbnails/0"):
        response = service_client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "thumbnail_not_found"
    for position in ("x", "-1", "16", "99999999999999999999"):
        invalid = service_client.get(f"/tracklets/{tracklet_id}/thumbnails/{position}")
        assert invalid.status_code == 422, position
        assert invalid.json()["error"]["code"] == "invalid_request"


def test_identities_are_searched_by_name(service_client: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    for name in (f"Ann-{tag}", f"joANNa-{tag}", f"bob-{tag}"):
        enroll(service_client, name, 504, count=2)
    page = service_client.get("/identities", params={"contains": "ann"}).json()
    names = [item["identity"] for item in page["items"] if tag in item["identity"]]
    assert names == [f"Ann-{tag}", f"joANNa-{tag}"]
    exact = service_client.get("/identities", params={"contains": f"bob-{tag}"}).json()
    assert exact["total"] == 1 and exact["items"][0]["identity"] == f"bob-{tag}"
    assert service_client.get("/identities", params={"contains": ""}).status_code == 422


def test_thumbnails_can_be_turned_off(exported_model: Path, tmp_path: Path) -> None:
    env = {**SERVER_ENV, "REID_THUMBNAILS": "false"}
    with ServiceProcess(exported_model, tmp_path / "data", env) as server, server.client() as c:
        response = c.post(
            "/tracklets", data={"identity": "nobody"}, files=multipart_files(encoded_frames(505))
        )
        assert response.status_code == 201
        tracklet = c.get(f"/tracklets/{response.json()['tracklet_id']}").json()
        assert tracklet["thumbnails"] == []
        assert thumbnail_stats(c) == {"enabled": False, "count": 0, "bytes": 0}
