"""The faiss backend's approximate index (REID_FAISS_INDEX=hnsw, service/faiss_index.py): deletes
as tombstones, the rebuild at start, filtered searches on both of its paths, recall on clustered
embeddings, and the settings that choose it. The gallery contract itself runs on it in
tests/test_gallery_contract.py (case ``faiss-hnsw``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from service_fixtures import ServiceProcess, enroll
from service_fixtures import query as query_service
from test_gallery_contract import SIGNATURE, brute_force, everything, make_record, random_records

from service import faiss_index
from service.faiss_gallery import FaissGallery
from service.faiss_index import FaissIndexConfig, HnswIndex
from service.gallery import GalleryError, SearchFilters
from service.settings import Settings, SettingsInvalid, load_settings, settings_help

HNSW = FaissIndexConfig(kind="hnsw")


def ids_of(matches) -> list[str]:
    return [m.tracklet_id for m in matches]


def expected_ids(records, query, keep=everything) -> list[str]:
    return [tracklet_id for tracklet_id, _, _ in brute_force(records, query, keep)]


def test_deleted_tracklets_are_skipped_inside_faiss_and_kept_out_across_a_restart(
    tmp_path: Path,
) -> None:
    records = random_records(80, identities=10, seed=3)
    query = records[0].embedding
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        gallery.add(records)
        nearest = expected_ids(records, query)
        # Delete the query's 5 nearest tracklets: the answer is the next 10, exactly, in one
        # FAISS call (the tombstones take no place among its k results).
        for tracklet_id in nearest[:5]:
            assert gallery.delete_tracklet(tracklet_id)
        assert ids_of(gallery.search(query, 10, group_by_identity=False)) == nearest[5:15]
        assert "5 deleted ones kept" in gallery.index_description
        gone = gallery.delete_identity(records[1].identity)
        assert gone > 0
        remaining = [
            r
            for r in records
            if r.tracklet_id not in nearest[:5] and r.identity != records[1].identity
        ]
        assert ids_of(gallery.search(query, 500, group_by_identity=False)) == expected_ids(
            remaining, query
        )
        assert gallery.count() == len(remaining)
    deleted = len(records) - len(remaining)
    assert deleted <= faiss_index.TOMBSTONE_WARNING_SHARE * len(records)
    # The restart reads the graph written at close: the deleted stay tombstones, never answers.
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        assert f"{len(remaining)} vectors and {deleted} deleted" in gallery.index_description
        assert ids_of(gallery.search(query, 500, group_by_identity=False)) == expected_ids(
            remaining, query
        )
        # Deleting past the share rebuilds the graph at the next start, live rows only.
        survivors = remaining[: len(remaining) // 2]
        for record in remaining[len(survivors) :]:
            assert gallery.delete_tracklet(record.tracklet_id)
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        assert "deleted" not in gallery.index_description
        assert f"{len(survivors)} vectors" in gallery.index_description
        assert ids_of(gallery.search(query, 500, group_by_identity=False)) == expected_ids(
            survivors, query
        )


def test_a_stale_or_broken_hnsw_snapshot_is_reconciled_with_sqlite(tmp_path: Path) -> None:
    import shutil

    from service import hnsw_snapshot

    records = random_records(90, identities=9, seed=7)
    query = records[5].embedding
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        gallery.add(records[:60])
    old = tmp_path / "old"
    old.mkdir()
    for name in (hnsw_snapshot.GRAPH_FILE, hnsw_snapshot.RECORD_FILE):
        shutil.copy(tmp_path / name, old / name)
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        gallery.add(records[60:])
        for record in records[:4]:
            assert gallery.delete_tracklet(record.tracklet_id)
    live = records[4:]
    # As if the process had died after those writes: the graph on disk predates them.
    for name in (hnsw_snapshot.GRAPH_FILE, hnsw_snapshot.RECORD_FILE):
        shutil.copy(old / name, tmp_path / name)
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        assert gallery.count() == len(live)
        assert f"{len(live)} vectors and 4 deleted" in gallery.index_description
        answer = ids_of(gallery.search(query, 500, group_by_identity=False))
        assert answer == expected_ids(live, query)
    # An unreadable graph, or one built with other parameters, is rebuilt from SQLite.
    (tmp_path / hnsw_snapshot.GRAPH_FILE).write_bytes(b"not a faiss index")
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        assert "deleted" not in gallery.index_description
        assert ids_of(gallery.search(query, 500, group_by_identity=False)) == answer
    other = FaissIndexConfig(kind="hnsw", hnsw_m=8)
    with FaissGallery(tmp_path, SIGNATURE, index=other) as gallery:
        assert "M=8" in gallery.index_description
        assert ids_of(gallery.search(query, 500, group_by_identity=False)) == answer


def test_the_index_kind_is_not_stored_every_start_indexes_what_sqlite_holds(
    tmp_path: Path,
) -> None:
    records = random_records(40, identities=8, seed=4)
    query = np.zeros(SIGNATURE.embedding_size)
    with FaissGallery(tmp_path, SIGNATURE) as gallery:  # exact
        gallery.add(records[:30])
        exact = gallery.search(query, 5)
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        assert gallery.search(query, 5) == exact
        gallery.add(records[30:])
        gallery.delete_tracklet(records[0].tracklet_id)
        approximate = gallery.search(query, 5)
    with FaissGallery(tmp_path, SIGNATURE) as gallery:  # back to exact: nothing lost
        assert gallery.count() == 39
        assert gallery.search(query, 5) == approximate
        assert "exact" in gallery.index_description


@pytest.mark.parametrize("exact_subset_max", [0, 10_000], ids=["widened-ef", "exact-scan"])
def test_filtered_searches_on_both_paths_match_brute_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exact_subset_max: int
) -> None:
    monkeypatch.setattr(faiss_index, "EXACT_SUBSET_MAX", exact_subset_max)
    rng = np.random.default_rng(5)
    records = [
        make_record(
            f"t{i}", f"id{i % 15}", rng.normal(size=SIGNATURE.embedding_size), camera=f"c{i % 3}"
        )
        for i in range(150)
    ]
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        gallery.add(records)
        gallery.delete_tracklet("t0")
        live = records[1:]
        for _ in range(3):
            query = rng.normal(size=SIGNATURE.embedding_size)
            found = gallery.search(query, 7, SearchFilters(cameras=["c1"]), group_by_identity=False)
            assert ids_of(found) == expected_ids(live, query, lambda r: r.camera == "c1")[:7]
            found = gallery.search(
                query, 7, SearchFilters(exclude_cameras=["c0"]), group_by_identity=False
            )
            assert ids_of(found) == expected_ids(live, query, lambda r: r.camera != "c0")[:7]
        assert gallery.search(query, 3, SearchFilters(cameras=["nowhere"])) == []


def test_a_failed_index_add_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = random_records(10, identities=2, seed=6)
    with FaissGallery(tmp_path, SIGNATURE, index=HNSW) as gallery:
        gallery.add(records[:5])

        def broken(self: HnswIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
            raise RuntimeError("no memory")

        monkeypatch.setattr(HnswIndex, "add", broken)
        with pytest.raises(GalleryError, match="indexing 5 tracklets failed"):
            gallery.add(records[5:])
        assert gallery.count() == 5
        found = gallery.search(records[7].embedding, 100, group_by_identity=False)
        assert set(ids_of(found)) == {r.tracklet_id for r in records[:5]}


def test_recall_at_10_on_clustered_embeddings() -> None:
    """3 000 vectors of 300 identities, 64-d: tight clusters, where approximate indexes are at
    their worst. The default parameters keep recall@10 above 0.95 against exact search."""
    rng = np.random.default_rng(7)
    dim, count = 64, 3000
    centres = rng.normal(size=(300, dim)).astype(np.float32)
    labels = rng.integers(0, 300, count)
    vectors = centres[labels] + 0.4 * rng.normal(size=(count, dim)).astype(np.float32)
    index = HnswIndex(dim, HNSW)
    index.add(np.arange(count, dtype=np.int64) + 100, vectors)
    queries = centres[:50] + 0.4 * rng.normal(size=(50, dim)).astype(np.float32)
    hits = 0
    for query in queries:
        exact = np.argsort(((vectors - query) ** 2).sum(1))[:10] + 100
        _, found = index.search(query.reshape(1, -1), 10)
        hits += len(set(exact.tolist()) & set(found.tolist()))
    assert hits / 500 >= 0.95


def test_settings_choose_the_index(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().gallery_options() == {"index": FaissIndexConfig()}
    monkeypatch.setenv("REID_FAISS_INDEX", "hnsw")
    monkeypatch.setenv("REID_FAISS_HNSW_EF_SEARCH", "128")
    chosen = load_settings().gallery_options()["index"]
    assert (chosen.kind, chosen.hnsw_m, chosen.hnsw_ef_search) == ("hnsw", 32, 128)
    monkeypatch.setenv("REID_GALLERY_BACKEND", "milvus")
    assert load_settings().gallery_options() == {}
    monkeypatch.setenv("REID_FAISS_INDEX", "ivf")
    with pytest.raises(SettingsInvalid, match=r"REID_FAISS_INDEX='ivf'.*one of exact, hnsw"):
        load_settings()
    help_text = settings_help()
    for name in (
        "FAISS_INDEX",
        "FAISS_HNSW_M",
        "FAISS_HNSW_EF_CONSTRUCTION",
        "FAISS_HNSW_EF_SEARCH",
    ):
        assert f"REID_{name}  (default:" in help_text


def test_the_service_serves_the_hnsw_index_across_a_restart(
    exported_model: Path, tmp_path: Path
) -> None:
    """REID_FAISS_INDEX=hnsw end to end: every acknowledged enrolment is found by the next
    query, a delete is never answered, and a restart reads back the graph written at the stop
    without losing one (or answering the deleted one)."""
    env = {"REID_FAISS_INDEX": "hnsw", "REID_FAISS_HNSW_EF_SEARCH": "32"}
    server = ServiceProcess(exported_model, tmp_path / "data", env)
    server.start()
    try:
        with server.client() as client:
            assert "IndexHNSWFlat" in client.get("/readyz").json()["gallery"]["index"]
            enrolled = [enroll(client, f"person{seed}", seed)["tracklet_id"] for seed in range(4)]
            for seed, tracklet_id in enumerate(enrolled):
                top = query_service(client, seed, top_k=1)["matches"][0]
                assert top["tracklet_id"] == tracklet_id
            assert client.delete(f"/tracklets/{enrolled[0]}").status_code == 200
            answer = query_service(client, 0, top_k=10)["matches"]
            assert enrolled[0] not in {m["tracklet_id"] for m in answer}
    finally:
        server.stop()
    server.start()
    try:
        with server.client() as client:
            ready = client.get("/readyz").json()["gallery"]
            assert ready["count"] == 3 and "3 vectors and 1 deleted" in ready["index"]
            assert any((tmp_path / "data").rglob("hnsw.faiss"))
            for seed, tracklet_id in enumerate(enrolled[1:], start=1):
                assert (
                    query_service(client, seed, top_k=1)["matches"][0]["tracklet_id"] == tracklet_id
                )
            answer = query_service(client, 0, top_k=10)["matches"]
            assert enrolled[0] not in {m["tracklet_id"] for m in answer}
    finally:
        server.stop()
