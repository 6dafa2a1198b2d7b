"""``reid-client grid``: a folder of query tracklets against the running service, drawn as the
ranked-results PNG with right matches framed green and wrong ones red."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from service_fixtures import ServiceProcess, encode, enroll, person_frames

from service.client_cli import main
from service.grid_png import BORDER, CELL_W, COLOURS, GAP, MARGIN, QUERY_GAP


def write_tracklet(folder: Path, seed: int, count: int = 5) -> None:
    folder.mkdir(parents=True)
    for i, frame in enumerate(person_frames(seed, count)):
        (folder / f"{i + 1}.png").write_bytes(encode(frame))


def border_colour(picture: np.ndarray, rows: int, row: int, column: int) -> tuple[int, ...]:
    """The frame colour of a match cell (row and column from 0)."""
    row_height = (picture.shape[0] - 2 * MARGIN) // rows
    y = MARGIN + row * row_height + BORDER // 2
    x = MARGIN + CELL_W + QUERY_GAP + column * (CELL_W + GAP) + CELL_W // 2
    return tuple(int(v) for v in picture[y, x])


def test_grid_frames_right_matches_green_and_wrong_red(
    service_client: httpx.Client, service: ServiceProcess, tmp_path: Path
) -> None:
    camera = f"grid-{uuid.uuid4().hex[:6]}"
    for identity, seed in (("alice", 930), ("bob", 931), ("carol", 932)):
        enroll(service_client, f"{identity}-{camera}", seed, count=5, camera=camera)
    queries = tmp_path / "queries" / "cam1"
    write_tracklet(queries / f"alice-{camera}", 930)  # alice again: found first
    write_tracklet(queries / "stranger", 933)  # nobody enrolled: every match is wrong
    out = tmp_path / "ranked.png"
    common = ["--url", service.url, "--cameras", camera, "--top-k", "3", "--no-progress"]

    assert main(["grid", str(tmp_path / "queries"), "--out", str(out), *common]) == 0
    picture = cv2.imread(str(out))
    assert picture.shape[1] == 2 * MARGIN + CELL_W + QUERY_GAP + 3 * (CELL_W + GAP)
    assert border_colour(picture, 2, 0, 0) == COLOURS["correct"]
    assert border_colour(picture, 2, 0, 1) == COLOURS["wrong"]
    assert [border_colour(picture, 2, 1, c) for c in range(3)] == [COLOURS["wrong"]] * 3

    grey = tmp_path / "unlabelled.png"
    assert (
        main(["grid", str(tmp_path / "queries"), "--out", str(grey), "--unlabelled", *common]) == 0
    )
    assert border_colour(cv2.imread(str(grey)), 2, 0, 0) == COLOURS["unknown"]


def test_an_unreachable_service_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_tracklet(tmp_path / "cam1" / "alice", 1)
    out = tmp_path / "x.png"
    argv = ["grid", str(tmp_path), "--url", "http://127.0.0.1:9", "--out", str(out)]
    assert main([*argv, "--retries", "0", "--no-progress"]) == 1
    assert "reid-client:" in capsys.readouterr().err
    assert not out.exists()
