"""``reid-client grid``: a folder of query tracklets against the running service, drawn as the
ranked-results PNG with right matches framed green and wrong ones red."""

from __future__ import annotations

import uuid
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from service_fixtures import encode, enroll, person_frames

from service.client_cli import find_tracklets, main
from service.grid_png import BORDER, CELL_W, COLOURS, MARGIN, QUERY_GAP


def write_tracklet(folder: Path, seed: int, count: int = 5) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(person_frames(seed, count)):
        (folder / f"{i + 1}.png").write_bytes(encode(frame))


def border_colour(picture: np.ndarray, row: int, column: int) -> tuple[int, ...]:
    """The frame colour of a match cell (row and column from 0)."""
    row_height = (picture.shape[0] - 2 * MARGIN) // 2
    y = MARGIN + row * row_height + BORDER // 2
    x = MARGIN + CELL_W + QUERY_GAP + column * (CELL_W + 6) + CELL_W // 2
    return tuple(int(v) for v in picture[y, x])


def test_grid_frames_right_matches_green_and_wrong_red(
    service_client: httpx.Client,
    service,
    tmp_path: Path,
) -> None:
    camera = f"grid-{uuid.uuid4().hex[:6]}"
    for identity, seed in (("alice", 930), ("bob", 931), ("carol", 932)):
        enroll(service_client, f"{identity}-{camera}", seed, count=5, camera=camera)
    queries = tmp_path / "queries" / "cam1"
    write_tracklet(queries / f"alice-{camera}", 930)  # alice again: found first
    write_tracklet(queries / "stranger", 933)  # nobody enrolled: every match is wrong
    out = tmp_path / "ranked.png"

    code = main(
        [
            "grid",
            str(tmp_path / "queries"),
            "--url",
            service.url,
            "--out",
            str(out),
            "--cameras",
            camera,
            "--top-k",
            "3",
        ]
    )

    assert code == 0
    picture = cv2.imread(str(out))
    assert picture.shape[1] == 2 * MARGIN + CELL_W + QUERY_GAP + 3 * (CELL_W + 6)
    assert border_colour(picture, 0, 0) == COLOURS["correct"]
    assert border_colour(picture, 0, 1) == COLOURS["wrong"]
    assert [border_colour(picture, 1, c) for c in range(3)] == [COLOURS["wrong"]] * 3


def test_tracklets_are_found_as_folders_and_zips(tmp_path: Path) -> None:
    write_tracklet(tmp_path / "cam1" / "alice", 1, count=12)
    write_tracklet(tmp_path / "bob" / "t1", 2)
    with zipfile.ZipFile(tmp_path / "carol.zip", "w") as archive:
        for i in (10, 2, 1):
            archive.writestr(f"f{i}.png", encode(person_frames(3, 1)[0] + i))
        archive.writestr("__MACOSX/._f1.png", b"junk")
    found = {t.name: t for t in find_tracklets(tmp_path, "folder")}
    assert sorted(found) == ["bob/t1", "cam1/alice", "carol.zip"]
    assert found["cam1/alice"].identity == "alice"
    assert found["carol.zip"].identity == "carol"
    assert len(found["cam1/alice"].frames) == 12
    # Numeric order, as the service reads a zip: 1, 2, 10.
    assert found["cam1/alice"].frames[1] == (tmp_path / "cam1" / "alice" / "2.png").read_bytes()
    decoded = [
        cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)
        for f in found["carol.zip"].frames
    ]
    assert [int(d.mean()) for d in decoded] == sorted(int(d.mean()) for d in decoded)
    assert find_tracklets(tmp_path, "parent")[0].identity == "bob"
    assert {t.identity for t in find_tracklets(tmp_path, "none")} == {None}


def test_an_unreachable_service_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    write_tracklet(tmp_path / "alice", 1)
    code = main(
        ["grid", str(tmp_path), "--url", "http://127.0.0.1:9", "--out", str(tmp_path / "x.png")]
    )
    assert code == 1
    assert "cannot reach the service at http://127.0.0.1:9" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
