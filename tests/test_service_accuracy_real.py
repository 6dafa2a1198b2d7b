"""The shipped default model on real people, served as a user starts it (``reid-serve``, the
on-disk gallery): the 200 CUHK03 persons held out of its training (``folder`` dataset,
``test_identities=200``, split 0), each enrolled from camera B (up to 5 JPEG crops, the files
as they are) and queried from camera A, as the README's validation figures are measured.

CUHK03 is research data that the repository does not hold: the test reads it from
``../shared/data/cuhk03`` (or ``REID_CUHK03_ROOT``) and skips, saying so, where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from service_fixtures import ROOT, ServiceProcess

from service.settings import DEFAULT_MODEL_PATH
from training.color_baseline import evaluate_color_baseline
from training.datasets import build_dataset

pytestmark = pytest.mark.slow

CUHK03 = Path(os.environ.get("REID_CUHK03_ROOT", ROOT.parent / "shared" / "data" / "cuhk03"))
HELD_OUT = 200
#: The shipped model's rank-1 on these persons is 65.5 % through `python -m training evaluate
#: --onnx` and through HTTP alike (the card's metrics); the bar sits a little below it and far
#: above the colour histogram (7.5 %).
MIN_RANK1 = 0.60


def _held_out_split():
    if not (CUHK03 / "camA").is_dir():
        pytest.skip(
            f"CUHK03 crops not found at {CUHK03} (research data kept outside the repository; "
            "set REID_CUHK03_ROOT to its folder to run this test)"
        )
    return build_dataset("folder", CUHK03, test_identities=HELD_OUT).split(0)


def _files(tracklet) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("frames", (path.name, path.read_bytes(), "image/jpeg")) for path in tracklet.frames]


@pytest.fixture(scope="module")
def real_service(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("accuracy-real") / "data"
    server = ServiceProcess(DEFAULT_MODEL_PATH, data, entry="reid-serve").start()
    yield server
    server.stop()


def test_shipped_model_finds_held_out_real_persons_across_cameras(
    real_service: ServiceProcess,
) -> None:
    split = _held_out_split()
    assert len(split.query) == len(split.gallery) == HELD_OUT
    with real_service.client() as client:
        for tracklet in split.gallery:
            response = client.post(
                "/tracklets",
                data={"identity": f"p{tracklet.identity}", "camera": "camB"},
                files=_files(tracklet),
            )
            assert response.status_code == 201, response.text
        hits = []
        for tracklet in split.query:
            response = client.post("/query", data={"top_k": "1"}, files=_files(tracklet))
            assert response.status_code == 200, response.text
            hits.append(response.json()["matches"][0]["identity"] == f"p{tracklet.identity}")
    rank1 = float(np.mean(hits))
    colour = evaluate_color_baseline(split.query, split.gallery)["rank1"]
    assert rank1 >= MIN_RANK1 and rank1 >= 5 * colour, (rank1, colour)
