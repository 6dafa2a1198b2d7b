"""What training on real people added: input specs, the MobileNetV2 backbone and its ImageNet
weights, several datasets per run, identity batches, the triplet term, short tracklets."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from model.backbones import MobileNetV2, build_backbone
from model.card import PreprocessingMismatch, input_spec_of
from model.network import ASTPN
from model.preprocessing import (
    FLOW_X,
    PAPER_INPUT,
    InputSpec,
    prepare_tracklet,
    preprocess_frames,
    preprocessing_config,
)
from training.augment import AugmentConfig, make_clip
from training.losses import batch_hard_triplet
from training.pretrained import MOBILENETV2_FILE, load_imagenet_weights
from training.sampling import IdentitySampler, batch_pairs, build_clip_batch
from training.sources import Source, check_held_out, training_set

torch.set_num_threads(1)
RGB_SPEC = InputSpec((72, 36), (64, 32), "rgb", "zero")


def walking_frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, size=(128, 64, 3), dtype=np.uint8)
    return [np.roll(base, 2 * i, axis=1) for i in range(count)]


# ----------------------------------------------------------------------------- input specs


def test_paper_spec_record_is_unchanged_and_round_trips() -> None:
    record = json.loads(json.dumps(preprocessing_config()))
    assert record["channels"] == ["Y", "U", "V", "flow_x", "flow_y"]
    assert InputSpec.from_config(record) == PAPER_INPUT
    assert InputSpec.from_config(json.loads(json.dumps(RGB_SPEC.config()))) == RGB_SPEC


def test_a_record_this_code_does_not_reproduce_is_refused() -> None:
    # Another crop is another spec (a model may take any); another resize is another code.
    assert input_spec_of({"preprocessing": dict(PAPER_INPUT.config(), crop_size=[56, 32])})
    record = RGB_SPEC.config()
    record["flow"] = {"method": "zero", "extra": 1}
    with pytest.raises(ValueError, match="flow"):
        InputSpec.from_config(record)
    card = {"preprocessing": dict(PAPER_INPUT.config(), resize="INTER_CUBIC")}
    with pytest.raises(PreprocessingMismatch, match="re-train or re-export"):
        input_spec_of(card)


def test_bad_specs_are_refused() -> None:
    with pytest.raises(ValueError, match="larger than the frame"):
        InputSpec((64, 48), (70, 40))
    with pytest.raises(ValueError, match="colour"):
        InputSpec(colour="hsv")


def test_rgb_zero_flow_spec_keeps_colour_and_gives_zero_flow() -> None:
    frames = walking_frames(3)
    x = preprocess_frames(frames, RGB_SPEC)
    assert x.shape == (3, 5, 72, 36) and x.dtype == np.float32
    resized = cv2.resize(frames[0], (36, 72), interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(x[0, :3].transpose(1, 2, 0), resized / 255.0, atol=2 / 255)
    assert not x[:, FLOW_X:].any()
    assert prepare_tracklet(frames, RGB_SPEC).shape == (3, 5, 64, 32)


def test_flow_at_another_frame_size_is_the_paper_flow_resized() -> None:
    frames = walking_frames(3)
    large = InputSpec((128, 96), (112, 80), "yuv", "lucas-kanade")
    paper_flow = preprocess_frames(frames)[:, FLOW_X:]
    flow = preprocess_frames(frames, large)[:, FLOW_X:]
    assert flow.shape == (3, 2, 128, 96)
    assert flow[1:].any()  # the content moves: flow is measured between consecutive frames
    small = np.stack(
        [[cv2.resize(p, (48, 64), interpolation=cv2.INTER_AREA) for p in f] for f in flow]
    )
    np.testing.assert_allclose(small, paper_flow, atol=0.05)


# ----------------------------------------------------------------------------- backbones


def test_mobilenet_map_and_pyramid_sizes() -> None:
    spec = InputSpec((136, 68), (128, 64), "rgb")
    model = ASTPN("astpn", backbone="mobilenetv2", input_spec=spec)
    assert model.conv_map_size() == (8, 4)
    assert model.spatial_size == 128 * (16 + 4 + 1)
    with torch.no_grad():
        assert model.eval().conv(torch.zeros(2, 5, 128, 64)).shape == (2, 128, 8, 4)
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet")


def test_imagenet_weights_load_by_name_with_zero_flow_inputs() -> None:
    backbone = MobileNetV2()
    assert load_imagenet_weights(backbone) == 255
    with np.load(MOBILENETV2_FILE) as archive:
        expected = archive["features.5.conv.3.weight"].astype(np.float32)
        stem = archive["features.0.0.weight"].astype(np.float32)
    state = backbone.state_dict()
    np.testing.assert_array_equal(state["features.5.conv.3.weight"].numpy(), expected)
    np.testing.assert_array_equal(state["features.0.colour.weight"].numpy(), stem)
    assert not state["features.0.flow.weight"].any()


def test_masked_frames_skip_the_cnn_and_leave_real_steps_unchanged() -> None:
    torch.manual_seed(0)
    model = ASTPN("astpn", backbone="mobilenetv2", input_spec=RGB_SPEC, dropout=0.0).eval()
    x = torch.rand(2, 4, 5, 64, 32)
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    with torch.no_grad():
        masked = model.encode(x, mask)
        alone = model.encode(x[:1, :2])
    torch.testing.assert_close(masked[0, :2], alone[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- several datasets


def _folder(root: Path, persons: int, cameras: tuple[str, ...] = ("a", "b")) -> Path:
    frame = np.zeros((16, 8, 3), np.uint8)
    for camera in cameras:
        for person in range(persons):
            folder = root / camera / f"p{person:02d}"
            folder.mkdir(parents=True)
            for shot in range(2):
                cv2.imwrite(str(folder / f"{shot}.png"), frame + person)
    return root


def test_sources_keep_datasets_apart_and_validation_held_out(tmp_path: Path) -> None:
    first = _folder(tmp_path / "one", 6)
    second = _folder(tmp_path / "two", 4)
    train = [
        Source.parse(f"folder:{first}:test_identities=2"),
        Source.parse(f"folder:{second}:part=all"),
    ]
    data = training_set(train)
    assert data.num_identities == 4 + 4 and len(set(data.cameras)) == 4
    assert [s["identities"] for s in data.summary] == [4, 4]
    held_out = Source.parse(f"folder:{first}:test_identities=2", default_part="test")
    split = held_out.load_split()
    check_held_out(train, held_out, split.query, split.gallery)
    overlapping = Source.parse(f"folder:{second}:num_splits=1", default_part="test")
    split = overlapping.load_split()
    with pytest.raises(ValueError, match="shares"):
        check_held_out(train, overlapping, split.query, split.gallery)
    with pytest.raises(ValueError, match="NAME:ROOT"):
        Source.parse("folder")


def test_identity_batches_hold_every_person_once_per_epoch_across_cameras() -> None:
    labels = [p for p in range(10) for _ in range(3)]
    cameras = [c for _ in range(10) for c in (1, 2, 2)]
    sampler = IdentitySampler(labels, cameras, seed=3, identities=4, per_identity=2)
    batches = sampler.epoch(0)
    assert len(batches) == len(sampler) == 2
    seen = [labels[i] for batch in batches for i in batch]
    assert len(seen) == len(set(seen)) * 2 == 16
    for batch in batches:
        for first, second in zip(batch[::2], batch[1::2], strict=True):
            assert labels[first] == labels[second] and cameras[first] != cameras[second]
    assert sampler.epoch(0) == batches and sampler.epoch(1) != batches
    probe, gallery, positive = batch_pairs(np.array([labels[i] for i in batches[0]]), 2)
    assert probe.tolist() == [0, 0, 2, 2, 4, 4, 6, 6]
    assert gallery.tolist() == [1, 3, 3, 5, 5, 7, 7, 1]
    assert positive.tolist() == [True, False] * 4


def test_batch_hard_triplet_is_zero_when_separated_and_positive_otherwise() -> None:
    labels = torch.tensor([0, 0, 1, 1])
    apart = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 0.0], [5.1, 0.0]])
    assert batch_hard_triplet(apart, apart, labels, margin=0.3).item() == 0.0
    mixed = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.1, 0.0], [5.1, 0.0]])
    assert batch_hard_triplet(mixed, mixed, labels, margin=0.3).item() > 4.0


def test_short_tracklets_make_clips_of_one_to_all_frames() -> None:
    sequence = np.random.default_rng(0).random((5, 5, 72, 36)).astype(np.float16)
    lengths = set()
    for seed in range(40):
        clip, valid = make_clip(
            sequence, np.random.default_rng(seed), AugmentConfig.reid(), 8, RGB_SPEC
        )
        assert clip.shape == (8, 5, 64, 32) and not clip[valid:].any()
        assert clip[:valid, :3].min() >= 0.0 and clip[:valid, :3].max() <= 1.0
        lengths.add(valid)
    assert lengths == {1, 2, 3, 4, 5}
    batch = build_clip_batch(
        [0, 1],
        [sequence, sequence[:2]],
        [0, 1],
        np.random.default_rng(0),
        AugmentConfig.none(),
        8,
        RGB_SPEC,
    )
    assert batch.clips.shape == (2, 5, 5, 64, 32) and batch.mask.sum(1).tolist() == [5, 2]


def test_frozen_stages_keep_their_weights_and_statistics() -> None:
    backbone = MobileNetV2()
    backbone.freeze(4)
    backbone.train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    out = backbone(torch.rand(4, 5, 64, 32).contiguous(memory_format=torch.channels_last) - 0.5)
    out.sum().backward()
    after = backbone.state_dict()
    frozen_prefixes = ("features.0.colour", "features.0.bn", "features.3.")
    frozen = [k for k in before if k.startswith(frozen_prefixes)]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert backbone.features[0].colour.weight.grad is None
    # The flow part always learns: its ImageNet weights do not exist.
    assert backbone.features[0].flow.weight.grad.abs().sum() > 0
    assert backbone.features[4].conv[0].weight.grad is not None
    assert not torch.equal(
        before["features.5.conv.1.running_mean"], after["features.5.conv.1.running_mean"]
    )


def test_weights_only_checkpoint_initialises_a_run_with_other_persons(tmp_path: Path) -> None:
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.config import TrainConfig
    from training.trainer import Trainer

    root = _folder(tmp_path / "cams", 6)
    torch.manual_seed(1)
    source = ASTPN("astpn", num_identities=9, dropout=0.0)
    path = save_checkpoint(tmp_path / "w.pt", source, weights_only=True)
    loaded, state = load_checkpoint(path)
    assert state["num_identities"] == 0 and loaded.classifier is None
    assert state["state_dict"]["input_layer.weight"].dtype == torch.float16
    config = TrainConfig(
        train=(f"folder:{root}:num_splits=1",),
        init_from=path,
        validation="none",
        max_iterations=0,
        progress=False,
        threads=1,
    )
    trainer = Trainer(config)
    assert trainer.model.classifier.out_features == 3
    expected = source.input_layer.weight.half().float()
    torch.testing.assert_close(trainer.model.input_layer.weight, expected)
