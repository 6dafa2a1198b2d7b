"""ONNX export, the model card and checkpoints: what the service loads must compute what PyTorch
computes, for any batch and tracklet length, and must refuse a file that its card does not vouch
for."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from model.card import (
    CARD_FORMAT,
    OUTPUT_NAMES,
    PAIR_SCORER_INPUTS,
    PAIR_SCORER_OUTPUTS,
    REQUIRED_KEYS,
    CardError,
    PreprocessingMismatch,
    load_card,
    pair_scorer_path_for,
    sha256_file,
    verify_card,
)
from model.network import ASTPN
from model.preprocessing import CHANNELS, CROP_SIZE, preprocessing_config
from training import export_command as export_module
from training.checkpoint import load_checkpoint, save_checkpoint
from training.export import export_onnx, ragged_pair_example

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
# Every test here runs PyTorch, most of them on a model exported for the module (~10 s).
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[ASTPN, Path]:
    torch.manual_seed(0)
    model = ASTPN("astpn", num_identities=5)
    path = export_onnx(
        model,
        tmp_path_factory.mktemp("export") / "astpn-test",
        name="astpn-test",
        version="7",
        training_info={"dataset": "synthetic", "command": "pytest", "metrics": {"rank1": 0.5}},
    )
    assert model.training, "export works on a copy: the caller's model keeps its mode"
    return model.eval(), path


@pytest.fixture(scope="module")
def session(exported: tuple[ASTPN, Path]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(exported[1]), options, providers=["CPUExecutionProvider"])


def test_export_writes_a_valid_onnx_file_and_its_card(exported: tuple[ASTPN, Path]) -> None:
    _, path = exported
    assert path.name == "astpn-test.onnx"
    assert path.with_suffix(".json").is_file()
    onnx.checker.check_model(str(path), full_check=True)
    assert not list(path.parent.glob(".*")), "no temporary files are left behind"


def test_graph_signature(session: ort.InferenceSession) -> None:
    (frames,) = session.get_inputs()
    assert frames.name == "frames" and frames.type == "tensor(float)"
    assert isinstance(frames.shape[0], str) and isinstance(frames.shape[1], str)
    assert frames.shape[2:] == [5, 56, 40]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)


@pytest.mark.parametrize("batch", [1, 7])
@pytest.mark.parametrize("length", [1, 2, 16, 40, 128])
def test_onnx_runtime_matches_pytorch(
    exported: tuple[ASTPN, Path], session: ort.InferenceSession, batch: int, length: int
) -> None:
    model, _ = exported
    x = np.random.default_rng(batch * 1000 + length).standard_normal(
        (batch, length, 5, 56, 40), dtype=np.float32
    )
    got = session.run(list(OUTPUT_NAMES), {"frames": x})
    with torch.inference_mode():
        expected = model.self_pair(torch.from_numpy(x))
    for name, g, e in zip(OUTPUT_NAMES, got, expected, strict=True):
        assert g.shape == tuple(e.shape), name
        assert np.abs(g - e.numpy()).max() < 1e-4, name


def test_card_contents(exported: tuple[ASTPN, Path]) -> None:
    _, path = exported
    card = load_card(path.with_suffix(".json"))
    assert set(REQUIRED_KEYS) <= set(card)
    assert card["format"] == CARD_FORMAT
    assert (card["name"], card["version"], card["variant"]) == ("astpn-test", "7", "astpn")
    assert card["onnx_sha256"] == sha256_file(path)
    assert card["input"]["name"] == "frames" and card["input"]["layout"] == "BTCHW"
    assert card["input"]["channels"] == list(CHANNELS)
    assert card["input"]["crop_size"] == list(CROP_SIZE)
    assert card["preprocessing"] == json.loads(json.dumps(preprocessing_config()))
    assert card["embedding_size"] == 128 and card["distance"] == "euclidean"
    assert card["roles"] == {"enroll": "gallery", "query": "probe"}
    assert card["outputs"] == list(OUTPUT_NAMES)
    assert card["training"]["dataset"] == "synthetic"
    assert card["training"]["metrics"] == {"rank1": 0.5}
    assert card["opset"] == onnx.load(str(path)).opset_import[0].version
    assert card["torch_version"] == torch.__version__
    created = dt.datetime.fromisoformat(card["created"])
    assert created.utcoffset() == dt.timedelta(0)
    verify_card(card, path)


def _copy(exported: tuple[ASTPN, Path], directory: Path) -> tuple[Path, dict]:
    _, path = exported
    target = directory / path.name
    target.write_bytes(path.read_bytes())
    pair_scorer_path_for(target).write_bytes(pair_scorer_path_for(path).read_bytes())
    return target, json.loads(path.with_suffix(".json").read_text())


# ----------------------------------------------------------------------------- pair scorer


@pytest.fixture(scope="module")
def pair_session(exported: tuple[ASTPN, Path]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    path = pair_scorer_path_for(exported[1])
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _score(session: ort.InferenceSession, query, candidates, lengths) -> list[np.ndarray]:
    feeds = dict(zip(PAIR_SCORER_INPUTS, (query, candidates, lengths), strict=True))
    return session.run(list(PAIR_SCORER_OUTPUTS), feeds)


@pytest.mark.parametrize(
    ("query_steps", "lengths"),
    [
        (1, (1,)),
        (6, (9, 1, 5, 9)),
        (16, (1, 40, 7)),
        (128, (128, 128, 3)),
        (3, tuple(range(1, 51))),
    ],
)
def test_pair_scorer_matches_pytorch_on_ragged_candidates(
    exported: tuple[ASTPN, Path],
    pair_session: ort.InferenceSession,
    query_steps: int,
    lengths: tuple[int, ...],
) -> None:
    model, _ = exported
    query, candidates, lens = ragged_pair_example(128, query_steps=query_steps, lengths=lengths)
    got = _score(pair_session, query, candidates, lens)
    with torch.inference_mode():
        expected = model.score_pairs(*(torch.from_numpy(a) for a in (query, candidates, lens)))
    for name, g, e in zip(PAIR_SCORER_OUTPUTS, got, expected, strict=True):
        assert g.shape == tuple(e.shape), name
        assert np.abs(g - e.numpy()).max() < 1e-4, name
    distance, query_attention, candidate_attention = got
    assert np.all(distance >= 0)
    np.testing.assert_allclose(query_attention.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(candidate_attention.sum(axis=1), 1.0, atol=1e-5)
    for k, length in enumerate(lengths):
        assert np.all(candidate_attention[k, length:] == 0), "padding gets no attention"


def test_padding_does_not_change_a_pair_score(pair_session: ort.InferenceSession) -> None:
    query, candidates, lengths = ragged_pair_example(128, lengths=(9, 2, 5))
    batched = _score(pair_session, query, candidates, lengths)
    for k, length in enumerate(lengths):
        alone = _score(pair_session, query, candidates[k : k + 1, :length], lengths[k : k + 1])
        np.testing.assert_allclose(alone[0], batched[0][k : k + 1], atol=1e-5)
        np.testing.assert_allclose(alone[2][0], batched[2][k, :length], atol=1e-6)


def test_a_sequence_scored_against_itself_is_its_self_pairing(
    exported: tuple[ASTPN, Path], session: ort.InferenceSession, pair_session
) -> None:
    # Self-pairing is the pair with P = G: the scorer must agree with the encoder's two roles.
    x = np.random.default_rng(3).standard_normal((1, 12, 5, 56, 40), dtype=np.float32)
    outputs = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {"frames": x}), strict=True))
    features = outputs["features"][0]
    distance, q_att, c_att = _score(pair_session, features, features[None], np.array([12]))
    gap = np.linalg.norm(outputs["embedding_probe"][0] - outputs["embedding_gallery"][0])
    assert distance[0] == pytest.approx(gap, abs=1e-4)
    np.testing.assert_allclose(q_att[0], outputs["attention_probe"][0], atol=1e-5)
    np.testing.assert_allclose(c_att[0], outputs["attention_gallery"][0], atol=1e-5)


def test_float16_stored_features_score_like_float32(
    exported: tuple[ASTPN, Path], session: ort.InferenceSession, pair_session
) -> None:
    # The gallery keeps features as float16; re-scoring must not notice.
    x = np.random.default_rng(4).standard_normal((4, 20, 5, 56, 40), dtype=np.float32)
    features = session.run(["features"], {"frames": x})[0]
    lengths = np.full(3, 20, dtype=np.int64)
    full = _score(pair_session, features[0], features[1:], lengths)[0]
    half = _score(
        pair_session, features[0], features[1:].astype(np.float16).astype(np.float32), lengths
    )[0]
    assert np.abs(full - half).max() < 1e-3 * max(1.0, float(np.abs(full).max()))


def test_verify_card_refuses_a_missing_or_foreign_pair_scorer(
    exported: tuple[ASTPN, Path], tmp_path: Path
) -> None:
    onnx_path, card = _copy(exported, tmp_path)
    scorer = pair_scorer_path_for(onnx_path)
    scorer.write_bytes(scorer.read_bytes() + b"\0")
    with pytest.raises(CardError, match=r"pair_scorer\.sha256"):
        verify_card(card, onnx_path)
    scorer.unlink()
    with pytest.raises(CardError, match=r"pair scorer .*astpn-test\.pair\.onnx, which is missing"):
        verify_card(card, onnx_path)


def test_verify_card_refuses_a_tampered_model(exported: tuple[ASTPN, Path], tmp_path: Path) -> None:
    onnx_path, card = _copy(exported, tmp_path)
    with onnx_path.open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(CardError, match=r"sha256.*Re-export both files"):
        verify_card(card, onnx_path)


def test_verify_card_refuses_other_preprocessing(
    exported: tuple[ASTPN, Path], tmp_path: Path
) -> None:
    onnx_path, card = _copy(exported, tmp_path)
    card["preprocessing"]["flow"]["scale_px"] = 123.0
    card["preprocessing"]["version"] = "0-older"
    with pytest.raises(PreprocessingMismatch, match=r"'0-older'.*flow") as raised:
        verify_card(card, onnx_path)
    assert "re-train or re-export" in str(raised.value)
    verify_card(card, onnx_path, check_preprocessing=False)


def test_load_card_refuses_incomplete_or_foreign_cards(
    exported: tuple[ASTPN, Path], tmp_path: Path
) -> None:
    _, card = _copy(exported, tmp_path)
    del card["roles"]
    (tmp_path / "a.json").write_text(json.dumps(card))
    with pytest.raises(CardError, match="lacks roles"):
        load_card(tmp_path / "a.json")
    card["roles"] = {"enroll": "gallery", "query": "both"}
    (tmp_path / "b.json").write_text(json.dumps(card))
    with pytest.raises(CardError, match=r"roles\.query"):
        load_card(tmp_path / "b.json")
    (tmp_path / "c.json").write_text("[1, 2]")
    with pytest.raises(CardError, match="not a model card"):
        load_card(tmp_path / "c.json")


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = ASTPN("atpn", num_identities=3, dropout=0.3)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(1, 2, 5, 56, 40), torch.randn(1, 2, 5, 56, 40)).v_p.sum().backward()
    optimiser.step()
    path = save_checkpoint(
        tmp_path / "run" / "last.pt",
        model,
        optimizer=optimiser.state_dict(),
        epoch=3,
        iteration=42,
        torch_rng=torch.get_rng_state(),
        metrics={"rank1": np.float64(0.25)},
        dataset="synthetic",
    )
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]
    loaded, state = load_checkpoint(path)
    assert (loaded.variant, loaded.num_identities, loaded.feature_dim) == ("atpn", 3, 128)
    assert loaded.dropout_p == 0.3 and not loaded.training
    assert state["epoch"] == 3 and state["iteration"] == 42 and state["dataset"] == "synthetic"
    assert state["metrics"]["rank1"] == 0.25
    assert "momentum_buffer" in state["optimizer"]["state"][0]
    x = torch.randn(1, 3, 5, 56, 40)
    with torch.no_grad():
        torch.testing.assert_close(loaded.self_pair(x), model.eval().self_pair(x))


def test_checkpoint_refuses_reserved_keys(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="variant"):
        save_checkpoint(tmp_path / "x.pt", ASTPN("aspn"), variant="astpn")


# ----------------------------------------------------------------------------- CLI


def test_cli_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "training", "export", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for option in (
        "--checkpoint",
        "--out",
        "--name",
        "--version",
        "--enroll-role",
        "--query-role",
        "--random-init",
        "--variant",
    ):
        assert option in result.stdout, option


def test_cli_exports_a_checkpoint_with_its_training_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    torch.manual_seed(2)
    checkpoint = save_checkpoint(
        tmp_path / "best.pt",
        ASTPN("aspn", num_identities=4),
        dataset="synthetic",
        training_data=[{"source": "synthetic:data/synthetic:part=train", "identities": 4}],
        iteration=10,
        validations=[
            {"iteration": 5, "ranks": {"rank1": 0.4}, "mAP": 0.3, "role_table": {}},
            {"iteration": 10, "ranks": {"rank1": 0.6}, "mAP": 0.5, "role_table": {}},
        ],
        config={"command": "python -m training train --dataset synthetic", "dataset": "x"},
    )
    parser = argparse.ArgumentParser()
    export_module.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "export",
            "--checkpoint",
            str(checkpoint),
            "--output",
            str(tmp_path / "out" / "model"),
            "--version",
            "2",
            "--query-role",
            "gallery",
        ]
    )
    assert args.handler(args) == 0
    onnx_path = tmp_path / "out" / "model.onnx"
    printed = capsys.readouterr().out
    assert str(onnx_path) in printed and "CPUExecutionProvider" in printed
    card = load_card(onnx_path.with_suffix(".json"))
    verify_card(card, onnx_path)
    assert card["variant"] == "aspn" and card["version"] == "2" and card["name"] == "model"
    assert card["roles"] == {"enroll": "probe", "query": "gallery"}
    assert card["training"]["dataset"] == "synthetic"
    assert card["training"]["command"] == "python -m training train --dataset synthetic"
    assert card["training"]["metrics"] == {"iteration": 10, "ranks": {"rank1": 0.6}, "mAP": 0.5}
    assert [entry["data"] for entry in card["training"]["terms"]] == ["synthetic:data/synthetic"]
    weights = torch.load(onnx_path.with_suffix(".pt"), weights_only=False)  # for --init-from
    assert weights["card"] == "model" and weights["variant"] == "aspn"
