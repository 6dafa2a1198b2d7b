"""Tests for model.preprocessing: the input contract shared by training and the service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from model.preprocessing import (
    CHANNELS,
    CROP_SIZE,
    FLOW_SCALE_PX,
    FLOW_X,
    FLOW_Y,
    FRAME_SIZE,
    InputSpec,
    center_crop,
    lucas_kanade_flow,
    mirror,
    prepare_tracklet,
    preprocess_frames,
    preprocessing_config,
    random_crop,
    read_frame,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MARGIN = 8  # interior: flow near the border sees content entering/leaving the frame


def textured(h: int, w: int, seed: int, sigma: float = 1.5) -> np.ndarray:
    """Smoothed noise in [0, 1]: texture everywhere, so LK is well-posed at every pixel."""
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), sigma)
    return (img - img.min()) / (img.max() - img.min())


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """img moved by (dx, dy) pixels (content moves right/down for positive values)."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    h, w = img.shape[:2]
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return np.clip(out, 0.0, 1.0)


def interior(a: np.ndarray) -> np.ndarray:
    return a[..., MARGIN:-MARGIN, MARGIN:-MARGIN]


def flow_px(x: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame t's flow channels back in 64x48 pixels, interior only."""
    return interior(x[t, FLOW_X]) * FLOW_SCALE_PX, interior(x[t, FLOW_Y]) * FLOW_SCALE_PX


def assert_shift(
    fx: np.ndarray, fy: np.ndarray, dx: float, dy: float, tol: float, pixel_tol: float
) -> None:
    """The shift (interior median) within tol px, and 90% of the pixels within pixel_tol px:
    right on average and locally."""
    assert abs(np.median(fx) - dx) < tol and abs(np.median(fy) - dy) < tol, (
        f"median flow ({np.median(fx):.3f}, {np.median(fy):.3f}) vs true ({dx}, {dy})"
    )
    err = np.hypot(fx - dx, fy - dy)
    assert np.percentile(err, 90) < pixel_tol, f"90th percentile error {np.percentile(err, 90)}"


# --------------------------------------------------------------------------------------------
# Shapes, dtypes, normalisation


def mixed_frames(t: int, seed: int = 0) -> list[np.ndarray]:
    """Grey, grey-with-axis, RGB and RGBA frames of assorted sizes, as trackers deliver them."""
    rng = np.random.default_rng(seed)
    makers = [
        lambda: rng.integers(0, 256, (128, 64), dtype=np.uint8),
        lambda: rng.integers(0, 256, (100, 50, 1), dtype=np.uint8),
        lambda: rng.integers(0, 256, (256, 128, 3), dtype=np.uint8),
        lambda: rng.integers(0, 256, (40, 30, 4), dtype=np.uint8),
        lambda: rng.random((64, 48, 3)),  # float64 in [0, 1]
        lambda: rng.random((70, 33)).astype(np.float32),
    ]
    return [makers[i % len(makers)]() for i in range(t)]


@pytest.mark.parametrize("t", [1, 2, 7])
def test_output_shape_dtype_and_range(t: int) -> None:
    x = preprocess_frames(mixed_frames(t))
    assert x.shape == (t, len(CHANNELS), *FRAME_SIZE)
    assert x.dtype == np.float32
    assert np.isfinite(x).all()
    # Uncorrelated noise frames give wild flow: it must still be clipped into [-1, 1].
    assert np.abs(x[:, FLOW_X:]).max() <= 1.0
    served = prepare_tracklet(mixed_frames(t))
    assert served.shape == (t, len(CHANNELS), *CROP_SIZE)
    assert served.dtype == np.float32 and served.flags.c_contiguous
    np.testing.assert_array_equal(served, center_crop(x))


@pytest.mark.parametrize("t", [1, 3, 8])
def test_rgb_zero_flow_serving_equals_crop_of_preprocessed_frames(t: int) -> None:
    # The shipped model's spec (RGB, zero flow): serving is the crop of the preprocessed frames.
    spec = InputSpec((136, 68), (128, 64), "rgb", "zero")
    frames = mixed_frames(t)
    served = prepare_tracklet(frames, spec)
    assert served.dtype == np.float32 and served.flags.c_contiguous
    np.testing.assert_array_equal(served, center_crop(preprocess_frames(frames, spec), (128, 64)))
    with pytest.raises(ValueError, match="empty"):
        prepare_tracklet([], spec)


def test_constants_match_contract() -> None:
    assert FRAME_SIZE == (64, 48) and CROP_SIZE == (56, 40)
    assert CHANNELS == ("Y", "U", "V", "flow_x", "flow_y")
    assert (CHANNELS[FLOW_X], CHANNELS[FLOW_Y]) == ("flow_x", "flow_y")


def test_stacked_array_is_accepted_as_a_sequence() -> None:
    frames = mixed_frames(3)
    rgb = np.stack([cv2.resize(f, (48, 64)) for f in frames if f.ndim == 3 and f.shape[2] == 3])
    np.testing.assert_array_equal(preprocess_frames(rgb), preprocess_frames(list(rgb)))


def test_flat_frames_give_finite_zeros() -> None:
    frames = [
        np.full((64, 48, 3), (200, 30, 90), np.uint8),
        np.zeros((128, 64), np.uint8),
        np.full((30, 20, 4), 255, np.uint8),
        np.full((64, 48, 3), 0.5, np.float32),
    ]
    x = preprocess_frames(frames)
    assert np.isfinite(x).all()
    np.testing.assert_array_equal(x, np.zeros_like(x))


def test_each_channel_of_each_frame_is_standardised() -> None:
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (96, 72, 3), dtype=np.uint8) for _ in range(4)]
    frames[2] = (frames[2] // 4 + 100).astype(np.uint8)  # low contrast: still unit variance
    yuv = preprocess_frames(frames)[:, :3]
    np.testing.assert_allclose(yuv.mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(yuv.std(axis=(2, 3)), 1.0, atol=1e-4)


def test_grey_frames_have_no_chroma() -> None:
    grey = (textured(64, 48, seed=2) * 255).astype(np.uint8)
    x = preprocess_frames([grey, np.repeat(grey[:, :, None], 3, axis=2)])
    np.testing.assert_array_equal(x[:, 1:3], 0.0)
    np.testing.assert_array_equal(x[0, 0], x[1, 0])  # grey == RGB with equal channels


def test_float_frames_match_uint8_frames() -> None:
    rng = np.random.default_rng(4)
    frames = [rng.integers(0, 256, (80, 60, 3), dtype=np.uint8) for _ in range(3)]
    as_float = [f.astype(np.float64) / 255.0 for f in frames]
    np.testing.assert_allclose(preprocess_frames(as_float), preprocess_frames(frames), atol=1e-5)


def test_rgba_alpha_is_ignored() -> None:
    rgb = np.random.default_rng(5).integers(0, 256, (64, 48, 3), dtype=np.uint8)
    alpha = np.random.default_rng(6).integers(0, 256, (64, 48, 1), dtype=np.uint8)
    rgba = np.concatenate([rgb, alpha], axis=2)
    np.testing.assert_array_equal(preprocess_frames([rgba]), preprocess_frames([rgb]))


def test_colour_order_is_rgb() -> None:
    # Pure red has the largest V (R - Y) of the primaries; BGR input would make it blue instead.
    red = np.zeros((64, 48, 3), np.uint8)
    red[:, 24:] = (255, 0, 0)
    x = preprocess_frames([red])
    assert x[0, 2, 0, 30] > 0 > x[0, 1, 0, 30]  # V up, U down on the red half


# --------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        ([], "empty"),
        (np.zeros((0, 64, 48, 3), np.uint8), "empty"),
        ([np.zeros((64, 48, 3), np.uint8), np.zeros((64, 48, 3), np.int16)], "frame 1: .*int16"),
        ([np.zeros((64, 48), bool)], "dtype"),
        ([np.zeros(64, np.uint8)], "frame 0: expected shape"),
        ([np.zeros((2, 64, 48, 3), np.uint8)], "frame 0: expected shape"),
        ([np.zeros((64, 48, 2), np.uint8)], "expected shape"),
        ([np.zeros((64, 48, 5), np.uint8)], "expected shape"),
        ([np.zeros((0, 48, 3), np.uint8)], "empty image"),
        ([np.full((64, 48, 3), 255.0)], r"\[0, 1\]"),
        ([np.full((64, 48, 3), -0.1, np.float32)], r"\[0, 1\]"),
        ([np.full((64, 48), np.nan, np.float32)], "finite"),
        ([[[0, 1], [2, 3]]], "numpy array"),
        (np.zeros((64, 48), np.uint8), "frame stack"),
    ],
)
def test_invalid_input_raises_value_error(frames: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        preprocess_frames(frames)  # type: ignore[arg-type]


def test_crop_and_mirror_reject_wrong_layout() -> None:
    for fn in (center_crop, mirror):
        with pytest.raises(ValueError, match="expected a"):
            fn(np.zeros((3, 64, 48), np.float32))
    with pytest.raises(ValueError, match="cannot crop"):
        random_crop(np.zeros((1, 5, 50, 48), np.float32), np.random.default_rng(0))


# --------------------------------------------------------------------------------------------
# Optical flow


@pytest.mark.parametrize(("dx", "dy"), [(0.3, 0.0), (0.0, -0.6), (1.0, 1.0), (-0.7, 0.45)])
def test_subpixel_shift_is_recovered_at_frame_size(dx: float, dy: float) -> None:
    base = textured(64, 48, seed=10)
    x = preprocess_frames([base, shifted(base, dx, dy)])
    assert_shift(*flow_px(x, 1), dx, dy, tol=0.05, pixel_tol=0.1)


def test_subpixel_shift_is_recovered_from_larger_colour_frames() -> None:
    # 128x96 RGB frames shifted by (1.6, -1.2) px become a (0.8, -0.6) px shift at 64x48.
    rgb = np.stack([textured(128, 96, seed=s, sigma=3.0) for s in (11, 12, 13)], axis=2)
    moved = shifted(rgb, 1.6, -1.2)
    x = preprocess_frames(
        [(rgb * 255).round().astype(np.uint8), (moved * 255).round().astype(np.uint8)]
    )
    assert_shift(*flow_px(x, 1), 0.8, -0.6, tol=0.05, pixel_tol=0.15)


@pytest.mark.parametrize(("dx", "dy"), [(3.0, 0.0), (0.0, -3.0), (-2.5, 2.0)])
def test_larger_shift_is_recovered_by_the_pyramid(dx: float, dy: float) -> None:
    base = textured(64, 48, seed=20, sigma=2.0)
    x = preprocess_frames([base, shifted(base, dx, dy)])
    assert_shift(*flow_px(x, 1), dx, dy, tol=0.1, pixel_tol=0.3)
    # A single level cannot: it is the pyramid that makes walking-speed motion measurable.
    fx, fy = lucas_kanade_flow(base, shifted(base, dx, dy), levels=1)
    assert np.mean(np.hypot(interior(fx) - dx, interior(fy) - dy) < 0.3) < 0.5


def test_flow_sign_follows_motion_and_time() -> None:
    base = textured(64, 48, seed=21)
    right = [base, shifted(base, 1.0, 0.0), shifted(base, 2.0, 0.0), shifted(base, 1.0, 0.0)]
    x = preprocess_frames(right)
    medians = [float(np.median(flow_px(x, t)[0])) for t in range(1, 4)]
    assert medians[0] > 0.8 and medians[1] > 0.8 and medians[2] < -0.8


def test_still_frames_give_zero_flow() -> None:
    frame = (textured(80, 60, seed=30) * 255).astype(np.uint8)
    x = preprocess_frames([frame] * 4)
    np.testing.assert_array_equal(x[:, FLOW_X:], 0.0)


def test_first_frame_has_zero_flow() -> None:
    base = textured(64, 48, seed=31)
    x = preprocess_frames([base, shifted(base, 1.0, 0.5), shifted(base, 2.0, 1.0)])
    np.testing.assert_array_equal(x[0, FLOW_X:], 0.0)
    assert np.abs(x[1:, FLOW_X:]).mean() > 0.05  # the others do move


def test_flow_is_scaled_by_the_fixed_constant() -> None:
    base = textured(64, 48, seed=32)
    x = preprocess_frames([base, shifted(base, 2.0, 0.0)])
    assert np.median(interior(x[1, FLOW_X])) == pytest.approx(2.0 / FLOW_SCALE_PX, abs=0.01)
    # Not per-sequence: the same motion gives the same value next to a faster pair.
    y = preprocess_frames([base, shifted(base, 2.0, 0.0), shifted(base, 6.0, 0.0)])
    np.testing.assert_allclose(y[1], x[1], atol=1e-6)


def test_mirror_of_preprocessed_equals_preprocessed_mirror() -> None:
    base = textured(64, 48, seed=40)
    frames = [base, shifted(base, 0.8, -0.5), shifted(base, 1.5, -0.2)]
    x = preprocess_frames(frames)
    flipped = preprocess_frames([f[:, ::-1] for f in frames])
    m = mirror(x)
    np.testing.assert_allclose(m[:, :3], flipped[:, :3], atol=1e-5)
    np.testing.assert_allclose(m[:, FLOW_X], flipped[:, FLOW_X], atol=1e-4)
    np.testing.assert_allclose(m[:, FLOW_Y], flipped[:, FLOW_Y], atol=1e-4)
    # i.e. flow_x is negated (motion to the right becomes motion to the left), flow_y is not
    assert np.median(x[1:, FLOW_X]) > 0 > np.median(m[1:, FLOW_X])
    np.testing.assert_array_equal(mirror(m), x)


def test_flow_agrees_with_farneback() -> None:
    # A small rotation + zoom + translation: the flow varies over the image.
    base = textured(64, 48, seed=50, sigma=2.0)
    m = cv2.getRotationMatrix2D((24.0, 32.0), 3.0, 1.02)
    m[0, 2] += 0.8
    moved = np.clip(cv2.warpAffine(base, m, (48, 64), borderMode=cv2.BORDER_REFLECT), 0, 1)
    fx, fy = lucas_kanade_flow(base, moved)
    farneback = cv2.calcOpticalFlowFarneback(
        (base * 255).astype(np.uint8), (moved * 255).astype(np.uint8), None, 0.5, 3, 9, 3, 5, 1.1, 0
    )
    ours = np.stack([interior(fx), interior(fy)], axis=-1).reshape(-1, 2)
    theirs = interior(farneback.transpose(2, 0, 1)).transpose(1, 2, 0).reshape(-1, 2)
    cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    assert np.median(cos) > 0.95 and np.mean(cos > 0.8) > 0.9
    ratio = np.median(np.linalg.norm(ours, axis=1)) / np.median(np.linalg.norm(theirs, axis=1))
    assert 0.8 < ratio < 1.25


def test_flow_rejects_mismatched_images() -> None:
    with pytest.raises(ValueError):
        lucas_kanade_flow(np.zeros((64, 48), np.float32), np.zeros((48, 64), np.float32))


# --------------------------------------------------------------------------------------------
# Crops and mirror


def coded(t: int = 3) -> np.ndarray:
    """(T, 5, 64, 48) where every value encodes its own (t, c, y, x) position."""
    return np.arange(t * 5 * 64 * 48, dtype=np.float32).reshape(t, 5, 64, 48)


def crop_offset(x: np.ndarray, crop: np.ndarray) -> tuple[int, int]:
    top = int((crop[0, 0, 0, 0] - x[0, 0, 0, 0]) // x.shape[3])
    left = int((crop[0, 0, 0, 0] - x[0, 0, 0, 0]) % x.shape[3])
    return top, left


def test_center_crop_is_centred() -> None:
    x = coded()
    crop = center_crop(x)
    assert crop.shape == (3, 5, *CROP_SIZE) and crop.flags.c_contiguous
    top, left = crop_offset(x, crop)
    assert (top, 64 - CROP_SIZE[0] - top) == (4, 4)
    assert (left, 48 - CROP_SIZE[1] - left) == (4, 4)
    np.testing.assert_array_equal(crop, x[:, :, 4:60, 4:44])


def test_random_crop_is_seeded_in_bounds_and_shared_by_all_frames() -> None:
    x = coded()
    a = random_crop(x, np.random.default_rng(123))
    np.testing.assert_array_equal(a, random_crop(x, np.random.default_rng(123)))
    rng = np.random.default_rng(7)
    offsets = set()
    for _ in range(300):
        crop = random_crop(x, rng)
        assert crop.shape == (3, 5, *CROP_SIZE) and crop.flags.c_contiguous
        top, left = crop_offset(x, crop)
        assert 0 <= top <= 64 - CROP_SIZE[0] and 0 <= left <= 48 - CROP_SIZE[1]
        np.testing.assert_array_equal(crop, x[:, :, top : top + 56, left : left + 40])
        offsets.add((top, left))
    # Every shift of the 9x9 range is reachable, including both extremes.
    assert {(0, 0), (8, 8)} <= offsets and len(offsets) > 60


def test_mirror_flips_width_and_negates_flow_x_only() -> None:
    x = coded(2) - 1000.0
    m = mirror(x)
    np.testing.assert_array_equal(m[:, :FLOW_X], x[:, :FLOW_X, :, ::-1])
    np.testing.assert_array_equal(m[:, FLOW_X], -x[:, FLOW_X, :, ::-1])
    np.testing.assert_array_equal(m[:, FLOW_Y], x[:, FLOW_Y, :, ::-1])
    assert m.flags.c_contiguous
    cropped = center_crop(x)
    np.testing.assert_array_equal(mirror(cropped), center_crop(m))  # crop and flip commute


# --------------------------------------------------------------------------------------------
# Config, file reading, import hygiene


def test_config_is_json_and_names_every_setting() -> None:
    cfg = preprocessing_config()
    assert json.loads(json.dumps(cfg)) == cfg
    assert isinstance(cfg["version"], str) and cfg["version"]
    assert cfg["frame_size"] == list(FRAME_SIZE) and cfg["crop_size"] == list(CROP_SIZE)
    assert cfg["channels"] == list(CHANNELS)
    assert cfg["flow"]["scale_px"] == FLOW_SCALE_PX
    for key in ("epsilon",):
        assert key in cfg["normalisation"]
    for key in ("pyramid_levels", "iterations_per_level", "window_size", "regulariser"):
        assert key in cfg["flow"]
    assert preprocessing_config() == cfg  # a fresh dict each time, same content


def test_read_frame_returns_rgb(tmp_path: Path) -> None:
    rgb = np.zeros((20, 10, 3), np.uint8)
    rgb[..., 0] = 250  # red
    rgb[:5, :, 2] = 100
    path = tmp_path / "frame_0001.png"
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_frame(path)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, rgb)
    grey_path = tmp_path / "grey.png"
    assert cv2.imwrite(str(grey_path), np.full((8, 6), 77, np.uint8))
    assert read_frame(str(grey_path)).shape == (8, 6, 3)


def test_read_frame_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        read_frame(bad)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=re.escape(str(empty))):
        read_frame(empty)
    missing = tmp_path / "missing.png"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        read_frame(missing)


def test_importing_preprocessing_does_not_import_torch() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    code = "import model.preprocessing, sys; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
