"""The gallery contract for thumbnails and the name search, on both backends (the fixtures of
tests/test_gallery_contract.py): stored atomically with their record, deleted with it, carried
by iter_records, surviving a reopen, counted; and the making of thumbnails
(service/thumbnails.py)."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import test_gallery_contract as contract
from service_fixtures import requires_milvus
from test_gallery_contract import DIM, SIGNATURE, OpenGallery, make_record, reopen

from service.faiss_gallery import FaissGallery
from service.faiss_store import database_path
from service.gallery import MAX_THUMBNAIL_BYTES, Thumbnail, TrackletRecord
from service.thumbnails import ThumbnailConfig, encode_jpeg, make_thumbnails, pick_frames

# The contract suite's fixtures: every test here runs on each backend.
backend = contract.backend
open_gallery = contract.open_gallery
own_location = contract.own_location
shared_lite = contract.shared_lite


def jpeg(seed: int, side: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (side * 2, side, 3), dtype=np.uint8)
    return encode_jpeg(image)


def with_thumbnails(record: TrackletRecord, frames: list[int], seed: int = 0) -> TrackletRecord:
    record.thumbnails = [Thumbnail(f, jpeg(seed + i)) for i, f in enumerate(frames)]
    return record


def stored_bytes(records: list[TrackletRecord]) -> int:
    return sum(len(t.jpeg) for r in records for t in r.thumbnails)


def test_thumbnails_are_stored_read_and_counted(backend: str, open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    a = with_thumbnails(make_record("a", "alice", np.zeros(DIM), frames=9), [0, 4, 8], seed=1)
    b = with_thumbnails(make_record("b", "bob", np.ones(DIM)), [2], seed=7)
    plain = make_record("c", "carol", np.ones(DIM))
    gallery.add([a, b, plain])

    assert gallery.thumbnail_frames(["a", "b", "c", "missing", "a"]) == {"a": [0, 4, 8], "b": [2]}
    for record in (a, b):
        for position, thumbnail in enumerate(record.thumbnails):
            assert gallery.get_thumbnail(record.tracklet_id, position) == thumbnail.jpeg
    assert gallery.get_thumbnail("a", 3) is None
    assert gallery.get_thumbnail("a", -1) is None
    assert gallery.get_thumbnail("a", 2**70) is None
    assert gallery.get_thumbnail("c", 0) is None
    assert gallery.get_thumbnail("missing", 0) is None

    stats = gallery.thumbnail_stats()
    assert stats.count == 4
    assert stats.bytes == (stored_bytes([a, b]) if backend.startswith("faiss") else None)
    # Other reads leave the pictures out.
    light = gallery.get_tracklet("a", with_features=True)
    assert light is not None and light.thumbnails == []


def test_thumbnails_go_with_their_tracklet_and_identity(
    backend: str, open_gallery: OpenGallery
) -> None:
    gallery = open_gallery()
    records = [
        with_thumbnails(make_record(f"t{i}", f"id{i % 2}", np.full(DIM, i)), [0, 1, 4], seed=i)
        for i in range(4)
    ]
    gallery.add(records)
    assert gallery.thumbnail_stats().count == 12

    assert gallery.delete_tracklet("t0")
    assert gallery.get_thumbnail("t0", 0) is None
    assert gallery.thumbnail_stats().count == 9
    assert gallery.delete_identity("id1") == 2
    assert gallery.thumbnail_frames(["t1", "t2", "t3"]) == {"t2": [0, 1, 4]}
    stats = gallery.thumbnail_stats()
    assert stats.count == 3
    assert stats.bytes == (stored_bytes(records[2:3]) if backend.startswith("faiss") else None)


def test_a_refused_add_leaves_no_thumbnail(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    gallery.add([with_thumbnails(make_record("dup", "alice", np.zeros(DIM)), [0])])
    fresh = with_thumbnails(make_record("fresh", "bob", np.ones(DIM)), [0, 2], seed=3)
    again = with_thumbnails(make_record("dup", "carol", np.ones(DIM)), [1], seed=4)
    with pytest.raises(Exception, match="dup"):
        gallery.add([fresh, again])
    beyond = with_thumbnails(make_record("beyond", "bob", np.ones(DIM), frames=3), [3])
    with pytest.raises(ValueError, match="frame 3"):
        gallery.add([fresh, beyond])
    not_jpeg = make_record("png", "bob", np.ones(DIM))
    not_jpeg.thumbnails = [Thumbnail(0, b"\x89PNG\r\n")]
    with pytest.raises(ValueError, match="JPEG"):
        gallery.add([fresh, not_jpeg])
    huge = make_record("huge", "bob", np.ones(DIM))
    huge.thumbnails = [Thumbnail(0, b"\xff\xd8" + bytes(MAX_THUMBNAIL_BYTES))]
    with pytest.raises(ValueError, match="at most"):
        gallery.add([fresh, huge])

    assert gallery.thumbnail_frames(["fresh", "dup"]) == {"dup": [0]}
    assert gallery.thumbnail_stats().count == 1


def test_thumbnails_survive_a_reopen_and_travel_with_iter_records(
    backend: str, own_location: str
) -> None:
    records = [
        with_thumbnails(make_record(f"r{i}", "alice", np.full(DIM, i)), [i % 5], seed=i)
        for i in range(7)
    ]
    records.append(make_record("bare", "bob", np.ones(DIM)))
    gallery = reopen(backend, own_location)
    gallery.add(records)
    gallery.close()

    gallery = reopen(backend, own_location)
    try:
        assert gallery.get_thumbnail("r3", 0) == records[3].thumbnails[0].jpeg
        copied = {r.tracklet_id: r for batch in gallery.iter_records(batch_size=3) for r in batch}
        for record in records:
            assert copied[record.tracklet_id].thumbnails == record.thumbnails
    finally:
        gallery.close()


def test_faiss_gallery_made_before_thumbnails_opens_and_keeps_them(tmp_path: Path) -> None:
    FaissGallery(tmp_path, SIGNATURE).close()
    with sqlite3.connect(database_path(tmp_path)) as db:  # as the schema-1 code left it
        db.executescript(
            "DROP TRIGGER thumbnail_added; DROP TRIGGER thumbnail_removed; "
            "DROP TABLE thumbnails; DROP TABLE thumbnail_totals;"
        )
    db.close()
    with FaissGallery(tmp_path, SIGNATURE) as gallery:
        gallery.add([with_thumbnails(make_record("a", "alice", np.zeros(DIM)), [1])])
        assert gallery.thumbnail_frames(["a"]) == {"a": [1]}
        assert gallery.thumbnail_stats().count == 1


def test_identities_are_searched_by_name(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    names = ["alice", "ALBERT", "sal_ly", "salxly", "Zoë", "bob%", "bob"]
    gallery.add([make_record(f"t{i}", name, np.ones(DIM)) for i, name in enumerate(names)])

    def found(text: str) -> list[str]:
        items, total = gallery.list_identities(0, 100, contains=text)
        assert total == len(items)
        return [item.identity for item in items]

    assert found("al") == ["ALBERT", "alice", "sal_ly", "salxly"]
    assert found("l_l") == ["sal_ly"]  # LIKE's wildcards are literal here
    assert found("%") == ["bob%"]
    assert found("zoë") == ["Zoë"]
    assert found("ZOË") == []  # only ASCII letters ignore case
    assert found("nobody") == []
    page, total = gallery.list_identities(1, 2, contains="AL")
    assert total == 4 and [i.identity for i in page] == ["alice", "sal_ly"]


# ------------------------------------------------------------------------ making thumbnails


def test_picked_frames_are_the_most_attended_then_the_ends() -> None:
    attention = np.array([0.1, 0.05, 0.4, 0.3, 0.15])
    assert pick_frames(attention, 1) == [2]
    assert pick_frames(attention, 2) == [0, 2]
    assert pick_frames(attention, 3) == [0, 2, 4]
    assert pick_frames(attention, 4) == [0, 2, 3, 4]
    assert pick_frames(attention, 16) == [0, 1, 2, 3, 4]
    # The most attended frame is an end: the next most attended fills its place.
    assert pick_frames(np.array([0.5, 0.1, 0.3, 0.1]), 3) == [0, 2, 3]
    assert pick_frames(np.array([1.0]), 3) == [0]


def test_thumbnails_are_small_jpegs_of_the_picked_frames() -> None:
    frames = [np.full((40, 20, 3), 20 * i, np.uint8) for i in range(6)]
    attention = np.array([0.1, 0.1, 0.5, 0.1, 0.1, 0.1])
    thumbnails = make_thumbnails(frames, attention, ThumbnailConfig(count=3, max_side=64))
    assert [t.frame_index for t in thumbnails] == [0, 2, 5]
    decoded = cv2.imdecode(np.frombuffer(thumbnails[1].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (40, 20, 3)
    assert abs(int(decoded.mean()) - 40) <= 2
    noise = np.random.default_rng(0).integers(0, 256, (256, 128, 3), dtype=np.uint8)
    assert len(encode_jpeg(noise)) <= MAX_THUMBNAIL_BYTES
    with pytest.raises(ValueError, match="attention"):
        make_thumbnails(frames[:2], attention, ThumbnailConfig(count=3, max_side=64))


@requires_milvus
def test_milvus_collection_made_before_thumbnails_opens_without_them(
    shared_lite: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from pymilvus import MilvusClient

    from service.milvus_gallery import MilvusGallery
    from service.milvus_schema import PROP_SCHEMA_VERSION, create_collection

    # Schema version 1 as that code created it: the same collection without the two fields.
    client = MilvusClient(shared_lite)
    real_add_field = type(client.create_schema()).add_field

    def without_thumbnails(schema, name, *args, **kwargs):
        return (
            schema
            if name.startswith("thumbnail")
            else real_add_field(schema, name, *args, **kwargs)
        )

    collection = f"v1_{uuid.uuid4().hex}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(client.create_schema()), "add_field", without_thumbnails)
        create_collection(client, collection, SIGNATURE)
    client.alter_collection_properties(collection, {PROP_SCHEMA_VERSION: "1"})
    client.close()

    with MilvusGallery(shared_lite, SIGNATURE, collection=collection) as gallery:
        assert "predates thumbnails" in caplog.text
        gallery.add([with_thumbnails(make_record("a", "alice", np.zeros(DIM)), [0])])
        assert gallery.get_tracklet("a") is not None
        assert gallery.thumbnail_frames(["a"]) == {}
        assert gallery.get_thumbnail("a", 0) is None
        assert gallery.thumbnail_stats().count == 0
        assert [r.thumbnails for b in gallery.iter_records() for r in b] == [[]]
