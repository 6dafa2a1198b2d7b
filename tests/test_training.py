"""Pair sampling, clip augmentation, tracklet cache, and short end-to-end train/evaluate runs."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.preprocessing import CROP_SIZE, FLOW_X, FRAME_SIZE, mirror
from training.augment import AugmentConfig, choose_frames, make_clip, photometric
from training.sampling import PairSampler, build_pair_batch
from training.sequences import load_sequences, tracklet_cache_key

# ----------------------------------------------------------------------------- pair sampler

# 6 persons in cameras 1 and 2; person 6 only in camera 1 (can't anchor a positive).
LABELS = [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]
CAMERAS = [1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1, 2, 1]


def test_sampler_balances_and_alternates_pairs():
    sampler = PairSampler(LABELS, CAMERAS, seed=3)
    pairs = sampler.epoch(0)
    assert len(pairs) == len(sampler) == 12
    assert [p.positive for p in pairs] == [True, False] * 6
    for pair in pairs:
        same = LABELS[pair.probe] == LABELS[pair.gallery]
        assert same == pair.positive
        # Positives always cross cameras; negatives too whenever the other person allows it.
        assert CAMERAS[pair.probe] != CAMERAS[pair.gallery] or LABELS[pair.gallery] == 6


def test_every_person_with_two_cameras_is_a_positive_once_per_epoch():
    sampler = PairSampler(LABELS, CAMERAS, seed=0)
    for epoch in range(3):
        positives = Counter(LABELS[p.probe] for p in sampler.epoch(epoch) if p.positive)
        assert positives == Counter({person: 1 for person in range(6)})


def test_sampler_is_deterministic_by_seed_and_varies_by_epoch():
    a = PairSampler(LABELS, CAMERAS, seed=7)
    b = PairSampler(LABELS, CAMERAS, seed=7)
    c = PairSampler(LABELS, CAMERAS, seed=8)
    assert a.epoch(2) == b.epoch(2)
    assert a.epoch(2) != c.epoch(2)
    assert a.epoch(0) != a.epoch(1)


def test_fixed_probe_camera_puts_camera_one_in_the_probe_branch():
    sampler = PairSampler(LABELS, CAMERAS, seed=1, fixed_probe_camera=True)
    for pair in sampler.epoch(0):
        if pair.positive:
            assert CAMERAS[pair.probe] == 1 and CAMERAS[pair.gallery] == 2


def test_multi_camera_positives_use_two_different_cameras():
    labels = [0] * 4 + [1] * 4
    cameras = [1, 2, 3, 4] * 2
    sampler = PairSampler(labels, cameras, seed=0)
    for epoch in range(5):
        for pair in sampler.epoch(epoch):
            assert cameras[pair.probe] != cameras[pair.gallery]


def test_sampler_rejects_data_without_cross_camera_positives():
    with pytest.raises(ValueError, match="two cameras"):
        PairSampler([0, 1], [1, 1])


# ----------------------------------------------------------------------------- clips


def _sequence(t: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(t, 5, *FRAME_SIZE)).astype(np.float16)


def test_clip_is_sixteen_consecutive_cropped_frames():
    seq = _sequence(40)
    x, valid = make_clip(seq, np.random.default_rng(0), AugmentConfig.paper())
    assert x.shape == (16, 5, *CROP_SIZE) and x.dtype == np.float32
    assert valid == 16
    idx = choose_frames(40, 16, np.random.default_rng(0))
    assert np.array_equal(np.diff(idx), np.ones(15))


def test_short_sequence_uses_all_frames_and_zero_pads():
    seq = _sequence(5)
    x, valid = make_clip(seq, np.random.default_rng(0), AugmentConfig.none())
    assert valid == 5
    assert not x[5:].any()
    # "none" = central crop, no mirror: the real frames are the sequence's central view.
    np.testing.assert_array_equal(x[:5], seq[:, :, 4:60, 4:44].astype(np.float32))


def test_frame_dropping_keeps_order_and_clip_length():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = choose_frames(60, 16, rng, drop_prob=0.3)
        assert len(idx) == 16 and np.all(np.diff(idx) >= 1)


def test_crop_and_mirror_are_drawn_once_per_sequence():
    # A sequence whose frames are identical must give a clip whose frames are identical: the
    # crop offset and the mirror decision may not change from frame to frame.
    frame = _sequence(1, seed=1)
    seq = np.repeat(frame, 30, axis=0)
    cfg = AugmentConfig(photometric_prob=0.0, erase_prob=0.0, frame_drop_prob=0.0)
    for seed in range(10):
        x, _ = make_clip(seq, np.random.default_rng(seed), cfg)
        assert np.all(x == x[:1])


def test_mirror_in_clips_negates_horizontal_flow():
    seq = _sequence(16)
    cfg = AugmentConfig(
        crop=False, mirror_prob=1.0, photometric_prob=0.0, erase_prob=0.0, frame_drop_prob=0.0
    )
    x, _ = make_clip(seq, np.random.default_rng(0), cfg)
    centred = seq[:, :, 4:60, 4:44].astype(np.float32)
    np.testing.assert_array_equal(x, mirror(centred))
    np.testing.assert_array_equal(x[:, FLOW_X, :, 0], -centred[:, FLOW_X, :, -1])


def test_photometric_changes_content_but_keeps_per_frame_statistics():
    seq = _sequence(8).astype(np.float32)
    seq[:, :3] -= seq[:, :3].mean(axis=(2, 3), keepdims=True)
    seq[:, :3] /= seq[:, :3].std(axis=(2, 3), keepdims=True)
    out = photometric(seq, np.random.default_rng(0), AugmentConfig(photometric_prob=1.0))
    np.testing.assert_allclose(out[:, :3].mean(axis=(2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(out[:, :3].std(axis=(2, 3)), 1, atol=1e-3)
    assert not np.allclose(out[:, :3], seq[:, :3], atol=0.05)
    np.testing.assert_array_equal(out[:, 3:], seq[:, 3:])  # flow untouched


def test_pair_batch_shapes_masks_and_determinism():
    seqs = [_sequence(t, seed=t) for t in (30, 10, 25, 40)]
    labels = [0, 0, 1, 1]
    sampler = PairSampler(labels, [1, 2, 1, 2], seed=0)
    pairs = sampler.epoch(0)
    a = build_pair_batch(pairs, seqs, labels, np.random.default_rng(5), AugmentConfig())
    b = build_pair_batch(pairs, seqs, labels, np.random.default_rng(5), AugmentConfig())
    assert a.probe.shape == (4, 16, 5, *CROP_SIZE)
    assert a.positive.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(a.probe, b.probe)
    np.testing.assert_array_equal(a.gallery_mask, b.gallery_mask)
    lengths = {0: 30, 1: 10, 2: 25, 3: 40}
    for i, pair in enumerate(pairs):
        assert a.probe_mask[i].sum() == min(16, lengths[pair.probe])
        assert a.gallery_mask[i].sum() == min(16, lengths[pair.gallery])
        assert a.probe_labels[i] == labels[pair.probe]


# ----------------------------------------------------------------------------- loading / cache


@dataclass(frozen=True)
class _Tracklet:
    frames: tuple[Path, ...]


def _write_tracklet(folder: Path, n: int, seed: int) -> _Tracklet:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 255, size=(32, 24, 3), dtype=np.uint8))
        paths.append(path)
    return _Tracklet(tuple(paths))


def test_cache_round_trip_and_invalidation(tmp_path):
    tracklets = [_write_tracklet(tmp_path / f"t{i}", 4 + i, i) for i in range(2)]
    cache = tmp_path / "cache"
    fresh = load_sequences(tracklets, cache_dir=cache, progress=False)
    assert [s.shape for s in fresh] == [(4, 5, *FRAME_SIZE), (5, 5, *FRAME_SIZE)]
    assert fresh[0].dtype == np.float16
    assert len(list(cache.glob("*.npy"))) == 2
    cached = load_sequences(tracklets, cache_dir=cache, progress=False, mmap=True)
    np.testing.assert_array_equal(np.asarray(cached[1]), fresh[1])
    # Rewriting a frame changes the key: no stale cache entry is served.
    key = tracklet_cache_key(tracklets[0].frames)
    cv2.imwrite(str(tracklets[0].frames[0]), np.zeros((40, 20, 3), np.uint8))
    assert tracklet_cache_key(tracklets[0].frames) != key
    uncached = load_sequences(tracklets[:1], progress=False, workers=2)
    assert not np.array_equal(uncached[0], fresh[0])


# ----------------------------------------------------------------------------- end to end
# A tiny synthetic dataset (8 persons x 2 cameras, short sequences) and short clips keep the
# whole section to seconds on two CPU cores.


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """The runs below use one thread (fastest on a loaded CI box); later tests get it back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from training.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic")
    generate_dataset(
        root,
        num_identities=8,
        seed=0,
        min_frames=10,
        max_frames=14,
        workers=1,
        num_splits=2,
        progress=False,
    )
    return root


def _config(root: Path, **overrides):
    from training.train import TrainConfig

    settings = dict(
        dataset="synthetic",
        root=root,
        epochs=100,
        batch_pairs=8,
        clip_length=4,
        checkpoint_every=0,
        validation="none",
        progress=False,
        threads=1,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.mark.slow
def test_training_loss_falls(tiny_root, tmp_path):
    from training.train import train_model

    # No augmentation or dropout and a 3x step: the 8 training pairs are fitted quickly (the
    # last/first ratio is ~0.15 for seeds 0-2), so the comparison is not at the mercy of
    # sampling noise. (1e-2 diverges with momentum 0.9.)
    result = train_model(
        _config(
            tiny_root, max_iterations=30, augment="none", dropout=0.0, lr=3e-3, out=tmp_path / "run"
        )
    )
    losses = [step["loss"] for step in result.losses]
    assert len(losses) == 30 and result.stopped_by == "max_iterations"
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])
    assert (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_resume_continues_at_saved_iteration_with_identical_updates(tiny_root, tmp_path):
    from training.train import train_model

    full = train_model(_config(tiny_root, max_iterations=4, out=tmp_path / "full"))
    first = train_model(_config(tiny_root, max_iterations=2, out=tmp_path / "resumed"))
    second = train_model(
        _config(
            tiny_root,
            max_iterations=4,
            out=tmp_path / "resumed",
            resume=tmp_path / "resumed" / "last.pt",
        )
    )
    assert first.iterations == 2 and second.iterations == 4
    assert [s["iteration"] for s in second.losses] == [3, 4]
    # Same pairs, clips, dropout draws and optimiser state as the uninterrupted run.
    resumed = [s["loss"] for s in first.losses + second.losses]
    assert resumed == pytest.approx([s["loss"] for s in full.losses], rel=1e-5)


def test_pair_loss_follows_equation_6():
    import torch

    from training.train import pair_loss

    v_p = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    v_g = torch.tensor([[1.0, 1.0], [1.0, 0.0], [3.0, 0.0]])
    positive = torch.tensor([True, False, False])
    squared = pair_loss(v_p, v_g, positive, margin=3.0, hinge="squared")
    unsquared = pair_loss(v_p, v_g, positive, margin=3.0, hinge="unsquared")
    assert squared.tolist() == pytest.approx([2.0, 2.0, 0.0])
    assert unsquared.tolist() == pytest.approx([2**0.5, 2.0, 0.0])


@pytest.mark.slow
def test_train_validate_export_and_evaluate_checkpoint_and_onnx(tiny_root, tmp_path):
    from training.evaluate import EvalConfig, evaluate_runs
    from training.train import train_model

    out = tmp_path / "run"
    result = train_model(
        _config(
            tiny_root, max_iterations=3, validation="test", out=out, export=tmp_path / "model.onnx"
        )
    )
    assert result.best_checkpoint == out / "best.pt" and result.best_rank1 is not None
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["training"]["dataset"] == "synthetic"
    assert "rank1" in json.dumps(card["training"]["metrics"])

    report_path, plot_path = tmp_path / "report.json", tmp_path / "cmc.png"
    report = evaluate_runs(
        EvalConfig(
            dataset="synthetic",
            root=tiny_root,
            checkpoints=[str(out / "best.pt")],
            onnx=[str(tmp_path / "model.onnx")],
            labels=["torch", "onnx"],
            splits=[0],
            rerank=[1, 4],
            report=report_path,
            plot=plot_path,
            progress=False,
            threads=1,
        )
    )
    assert json.loads(report_path.read_text())["runs"][0]["label"] == "torch"
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    torch_run, onnx_run = report["runs"]
    cmc = np.array(torch_run["per_split"][0]["cmc"])
    assert np.all(np.diff(cmc) >= 0) and cmc[-1] == 1.0
    assert set(torch_run["per_split"][0]["role_table"]) == {
        "probe->probe",
        "probe->gallery",
        "gallery->probe",
        "gallery->gallery",
    }
    # The exported model ranks the test persons exactly as the checkpoint it came from.
    np.testing.assert_allclose(onnx_run["per_split"][0]["cmc"], cmc, atol=1e-6)
    # Re-scoring one candidate cannot change the order; the exported pair scorer re-ranks as
    # the checkpoint does.
    reranked = torch_run["per_split"][0]["rerank"]
    assert reranked["1"]["cmc"] == pytest.approx(list(cmc))
    np.testing.assert_allclose(
        onnx_run["per_split"][0]["rerank"]["4"]["cmc"], reranked["4"]["cmc"], atol=1e-6
    )
    assert set(torch_run["rerank_summary"]) == {"1", "4"}


@pytest.mark.parametrize("command", ["train", "evaluate", "ablate"])
def test_cli_help_exits_zero(command, capsys):
    from training.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "--dataset" in capsys.readouterr().out


def test_rerank_reorders_the_top_k_and_keeps_the_rest_behind():
    from training.embedding import rerank_distances

    distmat = np.array([[0.1, 0.2, 0.3, 0.4, 0.05]])
    seen = {}

    def score(query, candidates, lengths):
        seen["lengths"] = lengths.tolist()
        seen["query"] = query.shape
        # Candidates come nearest first: gallery 4, 0, 1. Reverse their order.
        return np.array([3.0, 2.0, 1.0])

    features = [np.ones((n, 2), np.float32) for n in (2, 3, 1, 1, 4)]
    out = rerank_distances(distmat, [np.ones((5, 2), np.float32)], features, 3, score)
    assert list(np.argsort(out[0], kind="stable")) == [1, 0, 4, 2, 3]
    assert seen == {"lengths": [4, 2, 3], "query": (5, 2)}


def test_step_schedule_follows_the_iteration():
    from training.train import TrainConfig, learning_rate

    config = TrainConfig(dataset="synthetic", root=".", lr=1e-3, lr_steps=(10, 20), lr_gamma=0.1)
    rates = [learning_rate(config, it) for it in (0, 9, 10, 19, 20, 500)]
    assert rates == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])
    assert learning_rate(TrainConfig(dataset="synthetic", root="."), 10**6) == 1e-3
