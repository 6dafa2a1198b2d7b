"""``python -m training attention``: the frames a model attends to, from the exported files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from service_fixtures import person_frames

from training.__main__ import main
from training.attention import explain, read_tracklet


def write_tracklet(folder: Path, seed: int, count: int) -> list[np.ndarray]:
    folder.mkdir(parents=True)
    frames = person_frames(seed, count)
    # Names whose lexical order is not the frame order: 10 would sort before 9.
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i + 5}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    return frames


def test_explain_gives_one_weight_per_frame_and_both_distances(
    exported_model: Path, tmp_path: Path
) -> None:
    query = write_tracklet(tmp_path / "q", 1, 7)
    gallery = write_tracklet(tmp_path / "g", 2, 5)
    assert np.array_equal(read_tracklet(tmp_path / "q")[5], query[5])
    result = explain(exported_model, query, gallery)
    for side, length in (("query", 7), ("gallery", 5)):
        for key in ("attention", "pair_attention"):
            weights = result[side][key]
            assert weights.shape == (length,) and weights.sum() == pytest.approx(1.0, abs=1e-5)
    assert result["index_distance"] > 0 and result["pair_distance"] > 0
    alone = explain(exported_model, query)
    assert set(alone) == {"query"}
    np.testing.assert_allclose(alone["query"]["attention"], result["query"]["attention"])


@pytest.mark.slow
def test_cli_draws_the_picture(exported_model: Path, tmp_path: Path, capsys) -> None:
    write_tracklet(tmp_path / "q", 3, 6)
    write_tracklet(tmp_path / "g", 4, 4)
    out = tmp_path / "attention.png"
    code = main(
        [
            "attention",
            "--model",
            str(exported_model),
            "--query",
            str(tmp_path / "q"),
            "--gallery",
            str(tmp_path / "g"),
            "--out",
            str(out),
        ]
    )
    assert code == 0 and f"wrote {out}" in capsys.readouterr().out
    image = cv2.imread(str(out))
    assert image is not None and image.shape[0] > 300 and image.shape[1] > 300


def test_empty_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        read_tracklet(tmp_path / "empty")
