"""The gallery contract (service/gallery.py), one suite run on both backends.

``faiss`` opens a SQLite + FAISS gallery in a temporary directory, with the exact index and, as
``faiss-hnsw``, with the approximate HNSW index (REID_FAISS_INDEX=hnsw; on these small galleries
its answers are exact, so the same expectations hold); ``milvus`` opens a collection of
its own in a Milvus Lite path shared by the module (one embedded server for the whole module, kept
running by one open gallery, so each test only pays for its collection). Tests that must see data
come back from disk (reopening, a killed process) use a Milvus Lite path of their own, so closing
the gallery really stops the embedded server.

Expected answers come from brute-force NumPy over the records the test enrolled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import MILVUS_MISSING, requires_milvus

from service import backends
from service.faiss_gallery import FaissGallery
from service.faiss_index import FaissIndexConfig
from service.gallery import (
    Gallery,
    GalleryError,
    GalleryModelMismatch,
    ModelSignature,
    SearchFilters,
    TrackletExists,
    TrackletRecord,
)

if MILVUS_MISSING is None:
    from service.milvus_gallery import MilvusGallery

DIM = 8
FEATURES = 6
SIGNATURE = ModelSignature("contract-1", DIM)
T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[1]

OpenGallery = Callable[..., Gallery]

#: The test cases of the ``backend`` fixture: registry name and the gallery's own options.
BACKEND_CASES: dict[str, tuple[str, dict]] = {
    "faiss": ("faiss", {}),
    "faiss-hnsw": ("faiss", {"index": FaissIndexConfig(kind="hnsw")}),
    "milvus": ("milvus", {}),
}


def read_signature(backend: str, location: str) -> ModelSignature | None:
    return backends.read_signature(BACKEND_CASES[backend][0], location)


def make_record(
    tracklet_id: str,
    identity: str,
    embedding: np.ndarray,
    *,
    camera: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    frames: int = 5,
    steps: int = 3,
    seed: int = 0,
    metadata: dict | None = None,
) -> TrackletRecord:
    rng = np.random.default_rng(seed)
    attention = rng.random(frames).astype(np.float32)
    return TrackletRecord(
        tracklet_id=tracklet_id,
        identity=identity,
        embedding=np.asarray(embedding, dtype=np.float32),
        features=rng.normal(size=(steps, FEATURES)).astype(np.float32),
        attention=attention / attention.sum(),
        camera=camera,
        start_time=start,
        end_time=end,
        metadata=metadata if metadata is not None else {"seed": seed},
    )


def random_records(count: int, identities: int, seed: int = 0, **fields) -> list[TrackletRecord]:
    rng = np.random.default_rng(seed)
    return [
        make_record(
            f"t{seed}-{i}", f"id{i % identities}", rng.normal(size=DIM), seed=seed + i, **fields
        )
        for i in range(count)
    ]


def brute_force(
    records: list[TrackletRecord], query: np.ndarray, keep: Callable[[TrackletRecord], bool]
) -> list[tuple[str, str, float]]:
    """(tracklet_id, identity, Euclidean distance) of the records ``keep`` admits, nearest first."""
    kept = [r for r in records if keep(r)]
    if not kept:
        return []
    vectors = np.stack([r.embedding for r in kept]).astype(np.float64)
    distances = np.linalg.norm(vectors - np.asarray(query, np.float64), axis=1)
    order = np.argsort(distances, kind="stable")
    return [(kept[i].tracklet_id, kept[i].identity, float(distances[i])) for i in order]


def grouped(ranked: list[tuple[str, str, float]]) -> list[tuple[str, str, float]]:
    seen: set[str] = set()
    best = []
    for hit in ranked:
        if hit[1] not in seen:
            seen.add(hit[1])
            best.append(hit)
    return best


def assert_matches(matches, expected) -> None:
    assert [m.tracklet_id for m in matches] == [e[0] for e in expected]
    assert [m.identity for m in matches] == [e[1] for e in expected]
    assert [m.distance for m in matches] == pytest.approx([e[2] for e in expected], rel=1e-5)


def everything(_: TrackletRecord) -> bool:
    return True


# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def shared_lite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Milvus Lite path for the module, its embedded server kept up by an open gallery."""
    uri = str(tmp_path_factory.mktemp("milvus") / "shared.db")
    keeper = MilvusGallery(uri, SIGNATURE, collection="keeper")
    yield uri
    keeper.close()


@pytest.fixture(params=["faiss", "faiss-hnsw", pytest.param("milvus", marks=requires_milvus)])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def open_gallery(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[OpenGallery]:
    """Opens this test's gallery (the same one on every call), closing them all at the end."""
    opened: list[Gallery] = []
    collection = f"c_{uuid.uuid4().hex}"

    def _open(signature: ModelSignature = SIGNATURE) -> Gallery:
        if backend.startswith("faiss"):
            gallery: Gallery = FaissGallery(
                tmp_path / "faiss", signature, **BACKEND_CASES[backend][1]
            )
        else:
            uri = request.getfixturevalue("shared_lite")
            gallery = MilvusGallery(uri, signature, collection=collection)
        opened.append(gallery)
        return gallery

    yield _open
    for gallery in opened:
        gallery.close()


@pytest.fixture
def own_location(backend: str, tmp_path: Path) -> str:
    """A location of this test's own: closing its last gallery shuts Milvus Lite down."""
    return str(tmp_path / "faiss") if backend.startswith("faiss") else str(tmp_path / "own.db")


def reopen(backend: str, location: str, signature: ModelSignature = SIGNATURE) -> Gallery:
    name, options = BACKEND_CASES[backend]
    return backends.open_gallery(name, location, signature, **options)


# ---------------------------------------------------------------------------------- enrol


def test_enrolled_records_read_back(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    created = T0 - timedelta(days=3)
    record = make_record(
        "a",
        "alice",
        np.arange(DIM) / 7,
        camera="gate",
        start=T0,
        end=T0 + timedelta(seconds=5, microseconds=7),
        frames=9,
        steps=4,
        metadata={"site": "nörth", "lane": 3, "tags": ["x", None], "nested": {"ok": True}},
    )
    record.created_at = created
    plain = make_record("b", "bob", np.ones(DIM), seed=5)
    gallery.add([record, plain])
    assert gallery.count() == 2

    full = gallery.get_tracklet("a", with_features=True)
    assert full is not None
    assert (full.identity, full.camera, full.metadata) == ("alice", "gate", record.metadata)
    assert (full.start_time, full.end_time, full.created_at) == (
        record.start_time,
        record.end_time,
        created,
    )
    assert full.start_time.tzinfo is not None
    np.testing.assert_array_equal(full.embedding, record.embedding)
    np.testing.assert_array_equal(full.attention, record.attention)
    assert full.num_frames == 9
    # Features are stored as float16: (T', F) with T' below the frame count.
    np.testing.assert_array_equal(full.features, record.features.astype(np.float16))
    assert full.features.shape == (4, FEATURES)

    light = gallery.get_tracklet("a")
    assert light is not None and light.features.shape == (0, FEATURES)
    np.testing.assert_array_equal(light.attention, record.attention)

    other = gallery.get_tracklet("b")
    assert other is not None and other.camera is None
    assert other.start_time is None and other.end_time is None
    assert other.created_at is not None and other.created_at.tzinfo is not None
    assert gallery.get_tracklet("missing") is None

    features = gallery.get_features(["b", "a", "missing", "a"])
    assert set(features) == {"a", "b"}
    np.testing.assert_array_equal(features["a"].features, record.features.astype(np.float16))
    # The same read gives the frame counts the pair attention is spread over.
    assert {key: item.num_frames for key, item in features.items()} == {"a": 9, "b": 5}


def test_refused_records_store_nothing(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    first = make_record("dup", "alice", np.zeros(DIM))
    gallery.add([first])

    fresh = make_record("fresh", "bob", np.ones(DIM))
    with pytest.raises(TrackletExists, match="dup"):
        gallery.add([fresh, make_record("dup", "carol", np.ones(DIM))])
    with pytest.raises(TrackletExists):
        gallery.add([fresh, make_record("fresh", "bob", np.ones(DIM))])
    with pytest.raises(ValueError, match="embedding"):
        gallery.add([fresh, make_record("short", "bob", np.ones(DIM - 1))])
    wrong_features = make_record("wide", "bob", np.ones(DIM), frames=2, steps=3)
    with pytest.raises(ValueError, match="features"):
        gallery.add([fresh, wrong_features])

    assert gallery.count() == 1
    assert gallery.get_tracklet("fresh") is None
    stored = gallery.get_tracklet("dup")
    assert stored is not None and stored.identity == "alice"
    gallery.add([fresh])
    assert gallery.count() == 2


# --------------------------------------------------------------------------------- search


def test_search_order_and_distances_match_brute_force(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    records = random_records(60, identities=12, seed=1)
    gallery.add(records)
    rng = np.random.default_rng(99)
    for _ in range(3):
        query = rng.normal(size=DIM)
        ranked = brute_force(records, query, everything)
        assert_matches(gallery.search(query, 10, group_by_identity=False), ranked[:10])
        assert_matches(gallery.search(query, 5, group_by_identity=True), grouped(ranked)[:5])
    # More than there are: everything, still in order.
    assert_matches(gallery.search(query, 500, group_by_identity=False), ranked)
    assert_matches(gallery.search(query, 500), grouped(ranked))
    assert gallery.search(query, 0) == []
    with pytest.raises(ValueError, match="embedding"):
        gallery.search(np.zeros(DIM + 1), 3)


def test_grouping_finds_top_k_identities_behind_one_crowded_identity(
    open_gallery: OpenGallery,
) -> None:
    # 150 tracklets of one identity lie nearer than anybody else: finding 3 identities needs
    # far more than the first fetch of any backend.
    gallery = open_gallery()
    rng = np.random.default_rng(2)
    query = np.zeros(DIM)
    crowd = [
        make_record(f"crowd{i}", "crowd", rng.normal(scale=0.1, size=DIM), seed=i)
        for i in range(150)
    ]
    others = [
        make_record(f"o{i}", f"other{i % 4}", rng.normal(size=DIM) + 3, seed=500 + i)
        for i in range(12)
    ]
    gallery.add(crowd + others)
    expected = grouped(brute_force(crowd + others, query, everything))
    assert len(expected) == 5
    assert_matches(gallery.search(query, 3), expected[:3])
    assert_matches(gallery.search(query, 5), expected)
    assert_matches(gallery.search(query, 9), expected)


def test_camera_filters_apply_before_top_k(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    rng = np.random.default_rng(3)
    query = np.zeros(DIM)
    # Strings a naive expression would break on.
    odd = 'door "B"\\2\nnord\'s ünïcode'
    near = [
        make_record(f"near{i}", f"n{i}", rng.normal(scale=0.1, size=DIM), camera="lobby")
        for i in range(30)
    ]
    far = [
        make_record(f"far{i}", f"f{i}", rng.normal(size=DIM) + 2, camera=odd if i % 2 else None)
        for i in range(12)
    ]
    records = near + far
    gallery.add(records)

    only_odd = gallery.search(query, 5, SearchFilters(cameras=[odd]), group_by_identity=False)
    assert_matches(only_odd, brute_force(records, query, lambda r: r.camera == odd)[:5])
    assert len(only_odd) == 5  # the 30 nearer lobby tracklets did not eat the top 5

    both = SearchFilters(cameras=["lobby", odd])
    expected = brute_force(records, query, lambda r: r.camera in ("lobby", odd))
    assert_matches(gallery.search(query, 40, both, group_by_identity=False), expected)

    # Excluding keeps tracklets without a camera.
    excluded = gallery.search(
        query, 8, SearchFilters(exclude_cameras=["lobby"]), group_by_identity=False
    )
    assert_matches(excluded, brute_force(records, query, lambda r: r.camera != "lobby")[:8])
    assert {m.camera for m in excluded} == {odd, None}

    assert gallery.search(query, 5, SearchFilters(cameras=[])) == []
    assert gallery.search(query, 5, SearchFilters(cameras=["nowhere"])) == []
    assert gallery.search(query, 5, SearchFilters(exclude_cameras=[])) != []
    mixed = SearchFilters(cameras=["lobby", odd], exclude_cameras=[odd])
    assert_matches(
        gallery.search(query, 3, mixed, group_by_identity=False),
        brute_force(records, query, lambda r: r.camera == "lobby")[:3],
    )


def _overlaps(record: TrackletRecord, after: datetime | None, before: datetime | None) -> bool:
    """The documented rule: span [start, end], one instant when only one end is known, no
    times never pass a time filter."""
    first = record.start_time or record.end_time
    last = record.end_time or record.start_time
    if first is None or last is None:
        return after is None and before is None
    return (after is None or last >= after) and (before is None or first <= before)


def test_time_window_filters(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    rng = np.random.default_rng(4)
    hour = timedelta(hours=1)
    spans = [
        (T0, T0 + hour),  # 10:00-11:00
        (T0 + 2 * hour, T0 + 3 * hour),  # 12:00-13:00
        (T0 + hour, None),  # only a start: the instant 11:00
        (None, T0 + 2 * hour),  # only an end: the instant 12:00
        (None, None),  # no times: never passes a time filter
        (T0 - hour, T0 + 5 * hour),  # 09:00-15:00
    ]
    records = [
        make_record(f"s{i}-{j}", f"p{i}", rng.normal(size=DIM), start=s, end=e)
        for i, (s, e) in enumerate(spans)
        for j in range(2)
    ]
    gallery.add(records)
    query = np.zeros(DIM)
    windows = [
        (T0 + hour, None),  # from 11:00 on: an end at 11:00 counts
        (None, T0 + hour),  # until 11:00
        (T0 + hour + timedelta(microseconds=1), T0 + 2 * hour - timedelta(microseconds=1)),
        (T0 + 90 * timedelta(minutes=1), T0 + 2 * hour),  # 11:30-12:00: the end-only instant
        (T0 + 6 * hour, None),
        (None, None),
    ]
    for after, before in windows:
        filters = SearchFilters(start_after=after, end_before=before)
        matches = gallery.search(query, 100, filters, group_by_identity=False)
        expected = brute_force(records, query, lambda r, a=after, b=before: _overlaps(r, a, b))
        assert_matches(matches, expected)
    # Naive datetimes are UTC.
    naive = SearchFilters(start_after=datetime(2024, 5, 1, 14, 0))
    assert {m.identity for m in gallery.search(query, 100, naive)} == {"p5"}


def test_open_set_max_distance(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    records = random_records(30, identities=6, seed=5)
    gallery.add(records)
    query = np.full(DIM, 0.2)
    ranked = brute_force(records, query, everything)
    cut = (ranked[6][2] + ranked[7][2]) / 2
    assert_matches(gallery.search(query, 20, group_by_identity=False, max_distance=cut), ranked[:7])
    expected = [hit for hit in grouped(ranked) if hit[2] <= cut]
    assert_matches(gallery.search(query, 20, max_distance=cut), expected)
    assert gallery.search(query, 20, max_distance=ranked[0][2] / 2) == []


# ------------------------------------------------------------------------- delete, browse


def test_deleted_tracklets_are_never_returned(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    records = random_records(24, identities=4, seed=6)
    gallery.add(records)
    query = records[0].embedding
    assert (
        gallery.search(query, 1, group_by_identity=False)[0].tracklet_id == records[0].tracklet_id
    )

    assert gallery.delete_tracklet(records[0].tracklet_id) is True
    assert gallery.delete_tracklet(records[0].tracklet_id) is False
    assert gallery.get_tracklet(records[0].tracklet_id) is None
    hits = gallery.search(query, 100, group_by_identity=False)
    assert records[0].tracklet_id not in {m.tracklet_id for m in hits}
    assert len(hits) == 23

    assert gallery.delete_identity("id1") == 6
    assert gallery.delete_identity("id1") == 0
    assert gallery.get_identity("id1") == []
    remaining = [r for r in records[1:] if r.identity != "id1"]
    assert_matches(
        gallery.search(query, 100, group_by_identity=False),
        brute_force(remaining, query, everything),
    )
    assert gallery.count() == len(remaining)
    assert not {r.tracklet_id for r in records if r.identity == "id1"} & set(
        gallery.get_features([r.tracklet_id for r in records])
    )


def test_identities_are_listed_and_read(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    hour = timedelta(hours=1)
    gallery.add(
        [
            make_record("z1", "zoe", np.zeros(DIM), camera="b", start=T0, end=T0 + hour),
            make_record("z2", "zoe", np.ones(DIM), camera="a", start=T0 + 3 * hour),
            make_record("z3", "zoe", np.ones(DIM), end=T0 - hour),
            make_record("m1", "max", np.ones(DIM)),
            make_record("A1", "Anna", np.ones(DIM), camera="a"),
        ]
    )
    items, total = gallery.list_identities(0, 100)
    assert total == 3
    assert [i.identity for i in items] == ["Anna", "max", "zoe"]  # byte order, as SQLite
    zoe = items[2]
    assert zoe.num_tracklets == 3
    assert zoe.cameras == ("a", "b")
    assert zoe.first_seen == T0 - hour and zoe.last_seen == T0 + 3 * hour
    assert items[1].first_seen is None and items[1].last_seen is None and items[1].cameras == ()

    page, total = gallery.list_identities(1, 1)
    assert total == 3 and [i.identity for i in page] == ["max"]
    assert gallery.list_identities(5, 10) == ([], 3)

    tracklets = gallery.get_identity("zoe")
    assert sorted(t.tracklet_id for t in tracklets) == ["z1", "z2", "z3"]
    for tracklet in tracklets:
        assert tracklet.identity == "zoe"
        assert tracklet.features.shape == (0, FEATURES)
        assert tracklet.num_frames == 5
    assert gallery.get_identity("nobody") == []


def test_iter_records_yields_every_record_with_features(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    records = random_records(23, identities=5, seed=7, camera="c", start=T0)
    gallery.add(records)
    batches = list(gallery.iter_records(batch_size=5))
    assert [len(b) for b in batches][:4] == [5, 5, 5, 5]
    seen = {r.tracklet_id: r for batch in batches for r in batch}
    assert len(seen) == 23 == sum(len(b) for b in batches)
    for record in records:
        back = seen[record.tracklet_id]
        np.testing.assert_array_equal(back.features, record.features.astype(np.float16))
        np.testing.assert_array_equal(back.embedding, record.embedding)
        assert (back.camera, back.start_time, back.metadata) == ("c", T0, record.metadata)


def test_concurrent_adds_lose_nothing(open_gallery: OpenGallery) -> None:
    gallery = open_gallery()
    threads, per_thread = 6, 8
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def enroll(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                records = random_records(2, identities=2, seed=1000 * worker + 10 * i)
                gallery.add(records)
        except BaseException as exc:
            errors.append(exc)

    def search() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                gallery.search(np.zeros(DIM), 5)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=enroll, args=(w,)) for w in range(threads - 1)]
    workers.append(threading.Thread(target=search))
    for worker in workers:
        worker.start()
    start.wait()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert gallery.count() == 2 * per_thread * (threads - 1)
    ids = {r.tracklet_id for batch in gallery.iter_records() for r in batch}
    assert len(ids) == gallery.count()


# ------------------------------------------------------------------- persistence, models


def test_reopened_gallery_has_everything(backend: str, own_location: str) -> None:
    records = random_records(12, identities=3, seed=8, camera="cam", start=T0)
    records[0].end_time = T0 + timedelta(minutes=1)
    records[1].start_time = None
    records[1].end_time = T0
    records[2].metadata = {"note": "survives", "n": [1, 2.5]}
    gallery = reopen(backend, own_location)
    gallery.add(records)
    gallery.delete_tracklet(records[3].tracklet_id)
    query = np.zeros(DIM)
    before = gallery.search(query, 5)
    gallery.close()

    gallery = reopen(backend, own_location)
    try:
        assert gallery.count() == 11
        assert gallery.search(query, 5) == before
        assert gallery.get_tracklet(records[3].tracklet_id) is None
        for record in records[:3]:
            back = gallery.get_tracklet(record.tracklet_id, with_features=True)
            assert back is not None
            np.testing.assert_array_equal(back.features, record.features.astype(np.float16))
            np.testing.assert_array_equal(back.attention, record.attention)
            np.testing.assert_array_equal(back.embedding, record.embedding)
            assert (back.start_time, back.end_time) == (record.start_time, record.end_time)
            assert back.metadata == record.metadata
    finally:
        gallery.close()


def test_another_model_is_refused(backend: str, own_location: str) -> None:
    assert read_signature(backend, own_location) is None
    if backend == "milvus":
        assert not os.path.exists(own_location)  # reading created nothing
    reopen(backend, own_location).close()
    assert read_signature(backend, own_location) == SIGNATURE
    for other in (ModelSignature("contract-2", DIM), ModelSignature("contract-1", DIM * 2)):
        with pytest.raises(GalleryModelMismatch, match="contract-1"):
            reopen(backend, own_location, other)
    # The refusal changed nothing: the right model still opens it.
    reopen(backend, own_location).close()
    assert read_signature(backend, own_location) == SIGNATURE


# ---------------------------------------------------------------------------- milvus only


@requires_milvus
def test_milvus_add_that_fails_half_way_is_rolled_back(
    shared_lite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pymilvus import MilvusException

    import service.milvus_gallery as milvus_gallery

    gallery = MilvusGallery(shared_lite, SIGNATURE, collection=f"c_{uuid.uuid4().hex}")
    try:
        gallery.add(random_records(3, identities=1, seed=9))
        # Tiny requests: the batch goes in several inserts; the third one fails.
        monkeypatch.setattr(milvus_gallery, "MAX_INSERT_BYTES", 1)
        real_insert = gallery._client.insert
        calls = []

        def failing_insert(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise MilvusException(message="injected failure")
            return real_insert(*args, **kwargs)

        monkeypatch.setattr(gallery._client, "insert", failing_insert)
        batch = random_records(5, identities=2, seed=10)
        with pytest.raises(GalleryError, match="injected failure"):
            gallery.add(batch)
        assert len(calls) == 3
        assert gallery.count() == 3
        assert all(gallery.get_tracklet(r.tracklet_id) is None for r in batch)
        assert gallery.search(batch[0].embedding, 10, group_by_identity=False)[0].identity == "id0"
    finally:
        gallery.close()


@requires_milvus
def test_milvus_hnsw_index_answers_like_brute_force(shared_lite: str) -> None:
    # The server's default index, run here on Milvus Lite: small enough to be exact.
    gallery = MilvusGallery(
        shared_lite, SIGNATURE, collection=f"c_{uuid.uuid4().hex}", index_type="HNSW"
    )
    try:
        assert "HNSW" in gallery.index_description
        records = random_records(40, identities=8, seed=11)
        gallery.add(records)
        query = np.full(DIM, 0.1)
        ranked = brute_force(records, query, everything)
        assert_matches(gallery.search(query, 5, group_by_identity=False), ranked[:5])
        assert_matches(gallery.search(query, 4), grouped(ranked)[:4])
    finally:
        gallery.close()


@requires_milvus
def test_milvus_server_reads_page_through_the_query_iterator(shared_lite: str) -> None:
    # A server caps one query at 16384 rows, so there every scan pages through pymilvus's
    # query iterator; Milvus Lite serves it too (logging that it lacks a timestamp service).
    gallery = MilvusGallery(shared_lite, SIGNATURE, collection=f"c_{uuid.uuid4().hex}")
    try:
        records = random_records(25, identities=4, seed=12, camera="c")
        gallery.add(records)
        whole = (
            gallery.list_identities(0, 10),
            [r.tracklet_id for r in gallery.get_identity("id1")],
            {r.tracklet_id for batch in gallery.iter_records(7) for r in batch},
        )
        gallery._reads.paged = True
        assert gallery.list_identities(0, 10) == whole[0]
        assert [r.tracklet_id for r in gallery.get_identity("id1")] == whole[1]
        paged = list(gallery.iter_records(7))
        assert [len(batch) for batch in paged] == [7, 7, 7, 4]
        assert {r.tracklet_id for batch in paged for r in batch} == whole[2]
        np.testing.assert_array_equal(
            next(r for b in paged for r in b if r.tracklet_id == records[0].tracklet_id).features,
            records[0].features.astype(np.float16),
        )
        assert gallery.delete_identity("id0") == 7  # seeds 0, 4, ..., 24
        assert gallery.count() == 18
    finally:
        gallery.close()


@requires_milvus
def test_milvus_gallery_interrupted_while_being_created_opens(
    shared_lite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The collection and its indexes are created by separate requests; a crash between them
    # must not leave a gallery that cannot be opened.
    collection = f"c_{uuid.uuid4().hex}"

    def crash(self: MilvusGallery, index_type: str | None) -> None:
        raise GalleryError("crashed before the indexes")

    with monkeypatch.context() as patch:
        patch.setattr(MilvusGallery, "_ensure_indexes", crash)
        with pytest.raises(GalleryError, match="crashed"):
            MilvusGallery(shared_lite, SIGNATURE, collection=collection)
    gallery = MilvusGallery(shared_lite, SIGNATURE, collection=collection)
    try:
        assert "FLAT" in gallery.index_description
        records = random_records(5, identities=2, seed=13)
        gallery.add(records)
        assert gallery.search(records[2].embedding, 1, group_by_identity=False)[0].tracklet_id == (
            records[2].tracklet_id
        )
    finally:
        gallery.close()


@requires_milvus
def test_milvus_credentials_never_reach_messages() -> None:
    from service.milvus_client import redact

    assert redact("http://user:secret@milvus:19530/reid") == "http://***@milvus:19530/reid"
    assert redact("https://tok3n@milvus") == "https://***@milvus"
    assert redact("http://milvus:19530") == "http://milvus:19530"
    assert redact("./data/milvus.db") == "./data/milvus.db"


@requires_milvus
def test_milvus_location_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\.db"):
        MilvusGallery(str(tmp_path / "gallery"), SIGNATURE)
    assert not (tmp_path / "gallery").exists()


_HOLDER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {root!r})
    from service.gallery import ModelSignature, TrackletRecord
    from service.milvus_gallery import MilvusGallery
    gallery = MilvusGallery({uri!r}, ModelSignature("contract-1", {dim}))
    for i in range(3):
        gallery.add([TrackletRecord(f"k{{i}}", "killed", np.full({dim}, i, np.float32),
                                    np.ones((2, 3), np.float32), np.ones(2, np.float32))])
    gallery.delete_tracklet("k0")
    print("acknowledged", flush=True)
    sys.stdin.read()  # hold the gallery open until killed
    """
)


@requires_milvus
def test_milvus_lite_acknowledged_adds_survive_a_killed_process(tmp_path: Path) -> None:
    uri = str(tmp_path / "killed.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER.format(root=str(ROOT), uri=uri, dim=DIM)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.strip() == "acknowledged", holder.stderr.read() if holder.stderr else ""
        # Milvus Lite allows one process per path: the message says so.
        with pytest.raises(GalleryError, match="another process"):
            MilvusGallery(uri, SIGNATURE)
        holder.send_signal(signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
    gallery = MilvusGallery(uri, SIGNATURE)
    try:
        assert sorted(r.tracklet_id for b in gallery.iter_records() for r in b) == ["k1", "k2"]
        assert gallery.search(np.full(DIM, 2.0), 1, group_by_identity=False)[0].tracklet_id == "k2"
    finally:
        gallery.close()
