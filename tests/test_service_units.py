"""In-process tests of the service's parts: settings, frame parsing, encoder, micro-batcher,
API keys and the start-up refusals (a real exported model throughout, no fakes)."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from service_fixtures import encode, person_frames, requires_milvus

from model.card import pair_scorer_path_for
from model.preprocessing import prepare_tracklet
from service.api import create_app
from service.backends import open_gallery
from service.batching import MicroBatcher
from service.encoder import Encoder, spread_attention, subsample_indices
from service.frames import EncodedFrame, FrameLimits, image_size, natural_key, sniff_format
from service.gallery import ModelSignature
from service.onnx_session import ModelLoadError
from service.runtime import StartupError
from service.schemas import ApiError
from service.security import ApiKeys, Scope
from service.settings import DEFAULT_MODEL_PATH, Settings

# ------------------------------------------------------------------------------------ settings


def test_settings_read_comma_separated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REID_API_KEYS_READ", "a, b,,c")
    monkeypatch.setenv("REID_API_KEYS_WRITE", "")
    monkeypatch.setenv("REID_ALLOWED_FORMATS", "JPG")
    monkeypatch.setenv("REID_BATCHING", "false")
    monkeypatch.setenv("REID_PORT", "9001")
    settings = Settings()
    assert settings.api_keys_read == ["a", "b", "c"]
    assert settings.api_keys_write == []
    assert settings.auth_enabled
    assert settings.allowed_formats == ["jpeg"]
    assert settings.batching is False
    assert settings.port == 9001


def test_settings_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("REID_MODEL_PATH", "REID_DATA_DIR", "REID_API_KEYS_READ", "REID_API_KEYS_WRITE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.model_path == DEFAULT_MODEL_PATH
    assert DEFAULT_MODEL_PATH.parent.name == "weights"
    assert DEFAULT_MODEL_PATH.parent.parent.name == "model"
    assert settings.host == "127.0.0.1" and settings.port == 8000
    assert not settings.auth_enabled
    milvus = Settings(gallery_backend="milvus", data_dir=tmp_path)
    assert milvus.gallery_location() == str(tmp_path / "milvus.db")


def test_settings_refuse_unknown_gallery_backends() -> None:
    with pytest.raises(ValueError, match=r"'sqlite'.*faiss, milvus"):
        Settings(gallery_backend="sqlite")


def test_a_backend_without_its_extra_stops_the_start_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import service.backends as backends
    from service.cli import entry_settings

    absent = replace(backends.BACKENDS["milvus"], requires=("astpn_reid_absent_module",))
    monkeypatch.setitem(backends.BACKENDS, "milvus", absent)
    with pytest.raises(SystemExit) as exited:
        entry_settings("reid-serve", gallery_backend="milvus")
    message = str(exited.value.code)
    assert message.startswith("reid-serve: error: the milvus gallery backend needs")
    assert "pip install 'astpn-reid[milvus]'" in message and "\n" not in message
    with pytest.raises(backends.BackendUnavailable, match=r"astpn-reid\[milvus\]"):
        backends.open_gallery("milvus", "absent.db", ModelSignature("v", 8))


def test_settings_refuse_unknown_image_formats() -> None:
    with pytest.raises(ValueError, match="gif"):
        Settings(allowed_formats=["jpeg", "gif"])


# -------------------------------------------------------------------------------------- frames


def test_natural_order() -> None:
    names = ["f10.png", "f2.png", "F1.png", "a/f3.png", "f1b.png"]
    assert sorted(names, key=natural_key) == ["a/f3.png", "F1.png", "f1b.png", "f2.png", "f10.png"]


@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_header_size_is_read_without_decoding(progressive: bool) -> None:
    image = cv2.cvtColor(person_frames(1, 1, size=(77, 33))[0], cv2.COLOR_RGB2BGR)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)])
    assert ok
    assert sniff_format(data.tobytes()) == "jpeg"
    assert image_size(data.tobytes(), "jpeg") == (33, 77)


def test_png_header_size() -> None:
    data = encode(person_frames(1, 1, size=(50, 20))[0])
    assert sniff_format(data) == "png"
    assert image_size(data, "png") == (20, 50)


def test_jpeg_without_frame_header_is_refused() -> None:
    with pytest.raises(ApiError) as raised:
        image_size(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00", "jpeg")
    assert raised.value.status == 400


def test_allowed_formats_are_enforced() -> None:
    from service.frames import check_frame

    limits = FrameLimits(10, 10**6, 1000, 10**7, frozenset({"jpeg"}), 10, 10**6)
    with pytest.raises(ApiError) as raised:
        check_frame(EncodedFrame("f", encode(person_frames(1, 1)[0], "png")), limits)
    assert (
        raised.value.code == "unsupported_format" and "REID_ALLOWED_FORMATS" in raised.value.message
    )


# ------------------------------------------------------------------------------------- encoder


def test_subsampling_is_even_and_keeps_both_ends() -> None:
    assert subsample_indices(5, 8).tolist() == [0, 1, 2, 3, 4]
    chosen = subsample_indices(100, 10)
    assert len(set(chosen.tolist())) == 10
    assert chosen[0] == 0 and chosen[-1] == 99
    assert np.all(np.diff(chosen) >= 10) and np.all(np.diff(chosen) <= 12)


def test_spread_attention_gives_every_frame_a_weight_summing_to_one() -> None:
    indices = subsample_indices(10, 4)
    weights = np.array([0.1, 0.2, 0.3, 0.4], np.float32)
    spread = spread_attention(weights, indices, 10)
    assert spread.shape == (10,)
    assert spread.sum() == pytest.approx(1.0)
    assert np.all(spread > 0)
    # The embedded frames' own neighbourhoods share their weight.
    assert spread[-1] > spread[0]


def _tracklets(*lengths: int) -> list[np.ndarray]:
    return [prepare_tracklet(person_frames(40 + i, n)) for i, n in enumerate(lengths)]


@pytest.fixture(scope="module")
def encoder(exported_model: Path) -> Encoder:
    return Encoder(exported_model, max_embedded_frames=8, intra_op_threads=1)


def test_encoder_outputs_per_role(encoder: Encoder) -> None:
    (x,) = _tracklets(5)
    enrolled = encoder.embed([x], "enroll")[0]
    queried = encoder.embed([x], "query")[0]
    assert enrolled.embedding.shape == (encoder.embedding_size,)
    assert enrolled.features.shape == (5, encoder.embedding_size)
    assert enrolled.attention.shape == (5,)
    assert enrolled.attention.sum() == pytest.approx(1.0, abs=1e-5)
    # Self-pairing's probe and gallery roles are different embeddings of the same tracklet.
    assert not np.allclose(enrolled.embedding, queried.embedding)
    assert encoder.provider == "CPUExecutionProvider"


def test_encoder_batches_equal_single_runs(encoder: Encoder) -> None:
    tracklets = _tracklets(4, 4, 6, 20)  # two of one length, two others; 20 is subsampled to 8
    together = encoder.embed(tracklets, ["enroll", "query", "enroll", "query"])
    for x, role, result in zip(
        tracklets, ["enroll", "query", "enroll", "query"], together, strict=True
    ):
        alone = encoder.embed([x], role)[0]
        np.testing.assert_allclose(result.embedding, alone.embedding, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(result.attention, alone.attention, rtol=1e-4, atol=1e-6)
    assert together[3].attention.shape == (20,)
    assert together[3].features.shape == (8, encoder.embedding_size)


def _model_copy(exported_model: Path, directory: Path) -> tuple[Path, Path]:
    onnx_path = directory / exported_model.name
    shutil.copy(exported_model, onnx_path)
    card_path = onnx_path.with_suffix(".json")
    shutil.copy(exported_model.with_suffix(".json"), card_path)
    shutil.copy(pair_scorer_path_for(exported_model), pair_scorer_path_for(onnx_path))
    return onnx_path, card_path


def test_missing_model_names_the_file_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "astpn-synthetic.onnx"
    with pytest.raises(ModelLoadError) as raised:
        Encoder(missing)
    assert str(missing) in str(raised.value)
    assert "python -m training export" in str(raised.value)


def test_model_without_card_is_refused(exported_model: Path, tmp_path: Path) -> None:
    onnx_path, card_path = _model_copy(exported_model, tmp_path)
    card_path.unlink()
    with pytest.raises(ModelLoadError, match="card"):
        Encoder(onnx_path)


def test_model_with_a_different_checksum_is_refused(exported_model: Path, tmp_path: Path) -> None:
    onnx_path, _ = _model_copy(exported_model, tmp_path)
    with onnx_path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelLoadError, match="does not match its card"):
        Encoder(onnx_path)


def test_model_with_other_preprocessing_is_refused(exported_model: Path, tmp_path: Path) -> None:
    onnx_path, card_path = _model_copy(exported_model, tmp_path)
    card = json.loads(card_path.read_text())
    card["preprocessing"]["version"] = "0-older"
    card_path.write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="preprocessing") as raised:
        Encoder(onnx_path)
    assert "0-older" in str(raised.value)


# -------------------------------------------------------------------------------- micro-batcher


def _batched_runs(encoder: Encoder, enabled: bool, tracklets: list[np.ndarray]) -> list[int]:
    """Embed concurrently through a batcher; returns the batch size of every ONNX call."""
    from concurrent.futures import ThreadPoolExecutor

    calls: list[int] = []

    async def run() -> list:
        with ThreadPoolExecutor(2) as pool:
            batcher = MicroBatcher(encoder, pool, enabled=enabled, max_size=4, wait_ms=50)
            results = await asyncio.gather(*(batcher.embed(x, "query") for x in tracklets))
            await batcher.drain()
            return results

    encoder.on_run = lambda count, frames, seconds: calls.append(count)
    try:
        results = asyncio.run(run())
    finally:
        encoder.on_run = None
    for x, result in zip(tracklets, results, strict=True):
        alone = encoder.embed([x], "query")[0]
        np.testing.assert_allclose(result.embedding, alone.embedding, rtol=1e-4, atol=1e-5)
    return calls


def test_micro_batching_groups_equal_lengths(encoder: Encoder) -> None:
    tracklets = _tracklets(3, 3, 3, 3, 3, 3, 5)
    calls = _batched_runs(encoder, True, tracklets)
    # The first runs at once (nothing was running); of the other five of length 3, max_size 4
    # makes a batch of 4 and leaves 1; the length-5 one runs alone.
    assert calls[0] == 1
    assert sorted(calls) == [1, 1, 1, 4]


def test_micro_batching_never_keeps_a_lone_tracklet_waiting(encoder: Encoder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    async def one() -> float:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(encoder, pool, wait_ms=30_000)
            start = asyncio.get_running_loop().time()
            await batcher.embed(_tracklets(3)[0], "query")
            return asyncio.get_running_loop().time() - start

    assert asyncio.run(one()) < 10.0  # far under the 30 s a waiting batch would take


def test_large_batches_are_split_into_arena_sized_calls(encoder: Encoder) -> None:
    from service.onnx_session import ArenaPolicy

    policy = ArenaPolicy(8)
    assert policy.calls([0, 1, 2, 3, 4], 3) == [[0, 1], [2, 3], [4]]
    assert policy.calls([0, 1], 20) == [[0], [1]]  # one tracklet per call at least
    assert ArenaPolicy(0).calls([0, 1, 2], 3) == [[0, 1, 2]]
    assert policy.run_options(8) is None and policy.run_options(9) is not None
    split = Encoder(encoder.model_path, use_cuda=False, arena=policy)
    calls: list[int] = []
    split.on_run = lambda count, frames, seconds: calls.append(frames)
    tracklets = _tracklets(3, 3, 3, 3, 3)
    results = split.embed(tracklets, "query")
    assert calls == [6, 6, 3]
    whole = encoder.embed(tracklets, "query")
    for mine, theirs in zip(results, whole, strict=True):
        np.testing.assert_allclose(mine.embedding, theirs.embedding, rtol=1e-4, atol=1e-5)


def test_micro_batching_off_runs_each_tracklet_alone(encoder: Encoder) -> None:
    calls = _batched_runs(encoder, False, _tracklets(3, 3, 3))
    assert calls == [1, 1, 1]


# ---------------------------------------------------------------------------------- API keys


def test_write_keys_also_read_and_no_keys_means_no_auth() -> None:
    keys = ApiKeys(["r"], ["w"])
    keys.check("w", Scope.READ)
    keys.check("w", Scope.WRITE)
    keys.check("r", Scope.READ)
    with pytest.raises(ApiError) as raised:
        keys.check("r", Scope.WRITE)
    assert raised.value.status == 403
    open_keys = ApiKeys([], [])
    assert not open_keys.enabled
    open_keys.check(None, Scope.WRITE)


# ------------------------------------------------------------------------------------ start-up


def _start(settings: Settings) -> None:
    app = create_app(settings)

    async def lifespan() -> None:
        async with app.router.lifespan_context(app):
            pass

    asyncio.run(lifespan())


def test_start_refuses_a_gallery_built_by_another_model(
    exported_model: Path, tmp_path: Path
) -> None:
    onnx_path, card_path = _model_copy(exported_model, tmp_path)
    card = json.loads(card_path.read_text())
    settings = Settings(model_path=onnx_path, data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    other = ModelSignature(version=str(card["version"]) + "-other", embedding_size=128)
    open_gallery("faiss", settings.gallery_location(), other).close()
    with pytest.raises(StartupError) as raised:
        _start(settings)
    message = str(raised.value)
    assert str(card["version"]) in message and "REID_DATA_DIR" in message


def test_start_fails_clearly_without_the_model(tmp_path: Path) -> None:
    settings = Settings(model_path=tmp_path / "absent.onnx", data_dir=tmp_path / "data")
    with pytest.raises(ModelLoadError, match=r"absent\.onnx"):
        _start(settings)


def test_model_without_pair_scorer_serves_but_refuses_rerank(
    exported_model: Path, tmp_path: Path
) -> None:
    # A model exported before re-scoring existed: its card has no pair_scorer.
    import httpx
    from service_fixtures import ServiceProcess, b64, encoded_frames

    onnx_path, card_path = _model_copy(exported_model, tmp_path)
    card = json.loads(card_path.read_text())
    card["pair_scorer"] = None
    card_path.write_text(json.dumps(card))
    pair_scorer_path_for(onnx_path).unlink()
    server = ServiceProcess(onnx_path, tmp_path / "data", {"REID_RERANK": "20"}).start()
    try:
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["model"]["pair_scorer"] is False and ready["model"]["rerank_default"] == 0
        frames = b64(encoded_frames(5, 3))
        plain = httpx.post(f"{server.url}/query", json={"frames": frames})
        assert plain.status_code == 200 and plain.json()["reranked"] == 0
        refused = httpx.post(f"{server.url}/query", json={"frames": frames, "rerank": 5})
        assert refused.status_code == 422
        error = refused.json()["error"]
        assert (
            error["code"] == "rerank_unavailable"
            and "python -m training export" in error["message"]
        )
    finally:
        server.stop()
    assert "has no pair scorer" in server.log()


@requires_milvus
def test_start_fails_clearly_when_the_milvus_server_is_unreachable(
    exported_model: Path, tmp_path: Path
) -> None:
    settings = Settings(
        model_path=exported_model,
        data_dir=tmp_path / "data",
        gallery_backend="milvus",
        milvus_uri="http://127.0.0.1:1",
    )
    with pytest.raises(
        StartupError, match=r"milvus gallery at http://127\.0\.0\.1:1.*REID_MILVUS_URI"
    ):
        _start(settings)
