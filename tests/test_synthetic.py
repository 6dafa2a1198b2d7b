"""The synthetic pedestrian generator: i-LIDS-VID layout, determinism, motion, identity cues."""

from __future__ import annotations

import argparse
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.io import loadmat

from training.color_baseline import color_histogram_features, evaluate_color_baseline
from training.datasets import build_dataset
from training.synthetic import (
    generate_dataset,
    person_appearance,
    register,
    synthesize_tracklet,
    tracklet_length,
)
from training.synthetic.tracklet import walking_direction

N_IDS, MIN_F, MAX_F, SEED = 4, 20, 25, 7
FRAME_RE = re.compile(r"^cam([12])_person(\d{3})_(\d{5})\.png$")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_w1")
    return generate_dataset(root, N_IDS, SEED, MIN_F, MAX_F, workers=1, progress=False)


@pytest.fixture(scope="module")
def dataset_two_workers(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth_w2")
    return generate_dataset(root, N_IDS, SEED, MIN_F, MAX_F, workers=2, progress=False)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_frames_are_ilidsvid(dataset: Path) -> None:
    seq = dataset / "i-LIDS-VID" / "sequences"
    assert sorted(p.name for p in seq.iterdir()) == ["cam1", "cam2"]
    expected_people = [f"person{i:03d}" for i in range(1, N_IDS + 1)]
    for cam in (1, 2):
        people = sorted(p.name for p in (seq / f"cam{cam}").iterdir())
        assert people == expected_people
        for person in people:
            names = sorted(p.name for p in (seq / f"cam{cam}" / person).iterdir())
            assert MIN_F <= len(names) <= MAX_F
            numbers = []
            for name in names:
                m = FRAME_RE.match(name)
                assert m, name
                assert int(m[1]) == cam and f"person{m[2]}" == person
                numbers.append(int(m[3]))
            assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # consecutive
            frame = cv2.imread(str(seq / f"cam{cam}" / person / names[0]), cv2.IMREAD_UNCHANGED)
            assert frame.shape == (128, 64, 3) and frame.dtype == np.uint8


def test_split_table_is_ilidsvid_ls_set(dataset: Path) -> None:
    mat = loadmat(str(dataset / "train-test people splits" / "train_test_splits_ilidsvid.mat"))
    ls_set = np.asarray(mat["ls_set"])
    assert ls_set.shape == (10, N_IDS)
    for row in ls_set.astype(int):
        assert sorted(row.tolist()) == list(range(1, N_IDS + 1))
    assert len({tuple(r) for r in ls_set.astype(int)}) > 1  # rows are different permutations


def test_metadata_records_seed_counts_and_attributes(dataset: Path) -> None:
    meta = json.loads((dataset / "synthetic.json").read_text())
    assert meta["seed"] == SEED and meta["version"] and meta["num_identities"] == N_IDS
    seq = dataset / "i-LIDS-VID" / "sequences"
    assert meta["num_frames"] == len(list(seq.rglob("*.png")))
    for rec in meta["persons"]:
        assert {"top", "bottom", "pattern", "gait", "body"} <= rec["attributes"].keys()
        for cam in ("cam1", "cam2"):
            on_disk = len(list((seq / cam / rec["name"]).glob("*.png")))
            assert rec["tracklets"][cam]["frames"] == on_disk


@pytest.mark.slow
def test_workers_do_not_change_a_single_byte(dataset: Path, dataset_two_workers: Path) -> None:
    one, two = _files(dataset), _files(dataset_two_workers)
    assert one.keys() == two.keys()
    assert all(one[k] == two[k] for k in one)  # PNGs, the .mat and synthetic.json


def test_same_seed_same_frames_other_seed_other_frames() -> None:
    a = synthesize_tracklet(2, 1, 6, seed=11)
    b = synthesize_tracklet(2, 1, 6, seed=11)
    c = synthesize_tracklet(2, 1, 6, seed=12)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not any(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert all(f.shape == (128, 64, 3) and f.dtype == np.uint8 for f in a)


def test_walking_person_produces_optical_flow_in_the_person_region() -> None:
    frames = synthesize_tracklet(1, 1, 12, seed=3)
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    magnitudes = []
    for prev, nxt in itertools.pairwise(grey):
        assert np.abs(prev.astype(int) - nxt.astype(int)).mean() > 1.0  # frames change
        flow = cv2.calcOpticalFlowFarneback(prev, nxt, None, 0.5, 2, 9, 3, 5, 1.1, 0)
        magnitudes.append(np.hypot(flow[..., 0], flow[..., 1])[20:120, 18:46].mean())
    assert np.mean(magnitudes) > 0.3  # pixels per frame: limbs swing, the body bobs


def test_persons_differ_and_no_single_attribute_identifies_anyone() -> None:
    people = [person_appearance(i, seed=0) for i in range(1, 201)]
    keys = ("top", "bottom", "shoes", "pattern", "hair", "lower", "bag", "headwear", "carried")
    for key in keys:
        counts = Counter(getattr(p, key) for p in people)
        assert counts.most_common(1)[0][1] >= 15, key  # every cue is shared by many people
    combos = Counter(tuple(getattr(p, k) for k in keys) for p in people)
    assert len(combos) >= 190  # ... but the combination is (nearly always) unique
    a = np.stack(synthesize_tracklet(1, 1, 4, seed=0)).astype(float)
    b = np.stack(synthesize_tracklet(2, 1, 4, seed=0)).astype(float)
    assert np.abs(a - b).mean() > 10.0


def test_each_camera_sees_a_person_walk_a_different_way() -> None:
    for identity in range(1, 40):
        assert walking_direction(identity, 1, 0)[0] != walking_direction(identity, 2, 0)[0]


def test_lengths_span_the_requested_range() -> None:
    lengths = [tracklet_length(i, c, 0, 20, 150) for i in range(1, 300) for c in (1, 2)]
    assert min(lengths) >= 20 and max(lengths) <= 150
    assert min(lengths) < 30 and max(lengths) > 135


def test_existing_output_needs_overwrite(dataset: Path) -> None:
    with pytest.raises(FileExistsError):
        generate_dataset(dataset, N_IDS, SEED, MIN_F, MAX_F, workers=1, progress=False)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_cli_help_explains_every_option(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["synth", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--identities",
        "--seed",
        "--min-frames",
        "--max-frames",
        "--workers",
        "--splits",
        "--overwrite",
    ):
        assert option in text


@pytest.mark.slow
def test_cli_writes_dataset_and_summary(tmp_path: Path, capsys) -> None:
    args = _parser().parse_args(
        [
            "synth",
            "--out",
            str(tmp_path),
            "--identities",
            "2",
            "--min-frames",
            "3",
            "--max-frames",
            "4",
            "--workers",
            "1",
            "--splits",
            "2",
            "--preview",
            str(tmp_path / "preview.png"),
        ]
    )
    assert args.handler(args) == 0
    assert "2 persons x 2 cameras" in capsys.readouterr().out
    assert (tmp_path / "i-LIDS-VID" / "sequences" / "cam2" / "person002").is_dir()
    preview = cv2.imread(str(tmp_path / "preview.png"))
    # Two persons (rows) x (5 frames + gap + 5 frames) of 128x64 crops.
    assert preview.shape == (2 * 128, 10 * 64 + 16, 3)


def test_color_baseline_features_and_protocol(dataset: Path) -> None:
    frames = synthesize_tracklet(1, 1, 5, seed=0)
    f = color_histogram_features(frames)
    assert f.ndim == 1 and np.isclose(np.linalg.norm(f), 1.0, atol=1e-5)
    assert np.array_equal(f, color_histogram_features(list(frames)))
    split = build_dataset("synthetic", dataset).split(1)
    result = evaluate_color_baseline(split.query, split.gallery)
    assert result["num_query"] == result["num_gallery"] == N_IDS // 2
    assert 0.0 <= result["rank1"] <= result["rank5"] <= result["rank20"] == 1.0


def test_sites_per_camera_give_persons_different_scenes_and_cameras(tmp_path: Path) -> None:
    from training.synthetic.tracklet import camera_site, site_variant

    variants = {site_variant(i, 1, 0, 8) for i in range(1, 41)}
    assert len(variants) >= 6 and variants <= set(range(8))
    assert {site_variant(i, 2, 0, 1) for i in range(1, 41)} == {0}
    # Different sites are different places and cameras, not the same scene again.
    sites = [camera_site(1, 0, v) for v in range(4)]
    assert len({s.panorama.tobytes()[:4096] for s in sites}) == 4
    assert len({s.model.summary()["exposure"] for s in sites}) > 1
    # A generated dataset records its sites and which one filmed each tracklet.
    root = generate_dataset(tmp_path, 3, 0, 3, 4, workers=1, progress=False, sites_per_camera=3)
    meta = json.loads((root / "synthetic.json").read_text())
    assert meta["sites_per_camera"] == 3 and len(meta["camera_sites"]["cam1"]) == 3
    drawn = [t["site"] for p in meta["persons"] for t in p["tracklets"].values()]
    assert all(0 <= v < 3 for v in drawn)
    a = synthesize_tracklet(1, 1, 2, seed=0, sites_per_camera=3)
    b = synthesize_tracklet(1, 1, 2, seed=0, sites_per_camera=3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
