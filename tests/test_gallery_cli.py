"""``reid-gallery``: migrate faiss -> milvus -> faiss loses nothing, and refuses what it must."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import requires_milvus
from test_gallery_contract import SIGNATURE, T0, make_record, random_records

from service.backends import open_gallery
from service.gallery import ModelSignature, Thumbnail, TrackletRecord
from service.gallery_cli import main


def _records() -> list[TrackletRecord]:
    records = random_records(30, identities=7, seed=20, camera="cam")
    records[0].start_time, records[0].end_time = T0, None
    records[1].start_time, records[1].end_time = None, T0
    records[2].camera = None
    records[3].metadata = {"site": "nörth", "nested": {"list": [1, 2.5, None]}}
    records.append(make_record("long", "tall", np.ones(8), frames=40, steps=16, seed=3))
    records[4].thumbnails = [Thumbnail(0, b"\xff\xd8first"), Thumbnail(3, b"\xff\xd8second")]
    return records


def _by_id(backend: str, location: str) -> dict[str, TrackletRecord]:
    with open_gallery(backend, location, SIGNATURE) as gallery:
        return {r.tracklet_id: r for batch in gallery.iter_records(7) for r in batch}


@requires_milvus
def test_migrate_round_trip_faiss_milvus_faiss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, lite, back = tmp_path / "faiss", str(tmp_path / "lite.db"), tmp_path / "back"
    records = _records()
    with open_gallery("faiss", str(source), SIGNATURE) as gallery:
        gallery.add(records)
        query = np.full(8, 0.3)
        expected = gallery.search(query, 5)

    for origin, target in (
        (f"faiss:{source}", f"milvus:{lite}"),
        (f"milvus:{lite}", f"faiss:{back}"),
    ):
        assert main(["migrate", "--from", origin, "--to", target, "--batch-size", "4"]) == 0
        assert f"migrated {len(records)} tracklets" in capsys.readouterr().out

    original = {r.tracklet_id: r for r in records}
    for backend, location in (("milvus", lite), ("faiss", str(back))):
        migrated = _by_id(backend, location)
        assert set(migrated) == set(original)
        for tracklet_id, record in original.items():
            copy = migrated[tracklet_id]
            np.testing.assert_array_equal(copy.embedding, record.embedding)
            np.testing.assert_array_equal(copy.attention, record.attention)
            np.testing.assert_array_equal(copy.features, record.features.astype(np.float16))
            assert (copy.identity, copy.camera, copy.metadata) == (
                record.identity,
                record.camera,
                record.metadata,
            )
            assert (copy.start_time, copy.end_time) == (record.start_time, record.end_time)
            assert copy.thumbnails == record.thumbnails
        with open_gallery(backend, location, SIGNATURE) as gallery:
            found = gallery.search(query, 5)
        assert [m.tracklet_id for m in found] == [m.tracklet_id for m in expected]
        # Each engine computes the distance its own way in float32.
        assert [m.distance for m in found] == pytest.approx([m.distance for m in expected])

    assert main(["info", f"milvus:{lite}", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["tracklets"] == len(records) and shown["identities"] == 8
    assert (shown["thumbnails"], shown["thumbnail_bytes"]) == (2, None)  # Milvus cannot sum
    assert (shown["model_version"], shown["embedding_size"]) == (SIGNATURE.version, 8)
    assert "FLAT" in shown["index"]


@requires_milvus
def test_migrate_refuses_a_target_with_tracklets_unless_appending(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, target = tmp_path / "faiss", str(tmp_path / "target.db")
    with open_gallery("faiss", str(source), SIGNATURE) as gallery:
        gallery.add(random_records(5, identities=2, seed=30))
    with open_gallery("milvus", target, SIGNATURE) as gallery:
        gallery.add(random_records(2, identities=1, seed=40))

    assert main(["migrate", "--from", f"faiss:{source}", "--to", f"milvus:{target}"]) == 1
    assert "already holds 2 tracklets" in capsys.readouterr().err
    args = ["migrate", "--from", f"faiss:{source}", "--to", f"milvus:{target}", "--append"]
    assert main([*args, "--no-progress"]) == 0
    with open_gallery("milvus", target, SIGNATURE) as gallery:
        assert gallery.count() == 7
    # Appending the same tracklets again stops at the first one present.
    assert main([*args, "--no-progress"]) == 1
    assert "already enrolled" in capsys.readouterr().err


@requires_milvus
def test_migrate_refuses_missing_sources_and_other_models(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--from", f"faiss:{tmp_path / 'none'}", "--to", "faiss:x"]) == 1
    assert "there is no gallery at faiss:" in capsys.readouterr().err
    with open_gallery("faiss", str(tmp_path / "a"), SIGNATURE) as gallery:
        gallery.add(random_records(1, identities=1))
    open_gallery("milvus", str(tmp_path / "b.db"), ModelSignature("other", 8)).close()
    assert (
        main(
            ["migrate", "--from", f"faiss:{tmp_path / 'a'}", "--to", f"milvus:{tmp_path / 'b.db'}"]
        )
        == 1
    )
    assert "different models" in capsys.readouterr().err
    assert main(["info", f"milvus:{tmp_path / 'none.db'}"]) == 1
    assert "no gallery" in capsys.readouterr().err


def test_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for option in ("--from", "--to", "--batch-size", "--append", "--no-progress"):
        assert option in text
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--from", "sqlite:x", "--to", "faiss:y"])
    assert exited.value.code == 2
    assert "not a gallery SPEC" in capsys.readouterr().err
