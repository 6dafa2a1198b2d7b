"""Export one Siamese branch of a trained ASTPN, self-paired, to ONNX with its model card.

The graph maps ``frames`` float32 (B, T, C, H, W), B and T dynamic, C, H and W as the model's
input spec (:mod:`model.preprocessing`) and its card say, to the self-pairing outputs
(``embedding_probe``, ``embedding_gallery``, ``attention_probe``, ``attention_gallery``,
``features``). It is produced by ``torch.export`` + the dynamo ONNX exporter; the recurrent layer
turns into an ONNX ``Scan`` (see ``model/network.py``), so one file serves any tracklet length.
Every export is checked: ``onnx.checker`` and ONNX Runtime against PyTorch on a random input.

``python -m training export --checkpoint runs/x/best.pt --out model/weights/astpn-cuhk03.onnx``
(the command itself: ``training/export_command.py``)
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from model.card import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAMES,
    PAIR_SCORER_INPUTS,
    PAIR_SCORER_OUTPUTS,
    build_card,
    card_path_for,
    pair_scorer_path_for,
    pair_scorer_record,
    sha256_file,
    write_card,
)
from model.network import ASTPN, INPUT_CHANNELS

#: ONNX Runtime (CPU) must reproduce PyTorch to this max abs difference on every output.
CPU_TOLERANCE = 1e-4
#: GPUs may use other kernels (TF32, fused convolutions); checked, reported, not fatal.
GPU_TOLERANCE = 1e-2
# Example input for tracing. Neither B nor T may be 0 or 1 here: torch.export specialises those.
_EXAMPLE_STEPS = (2, 16)


class _SelfPairingGraph(nn.Module):
    """frames -> the five self-pairing outputs, as a flat tuple in ``OUTPUT_NAMES`` order."""

    def __init__(self, model: ASTPN) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.self_pair(frames))


class _PairScorerGraph(nn.Module):
    """(query, candidates, candidate_lengths) -> ``PAIR_SCORER_OUTPUTS``: joint attention of one
    query with K gallery candidates, from stored per-step features (no CNN)."""

    def __init__(self, model: ASTPN) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, query: torch.Tensor, candidates: torch.Tensor, candidate_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        return tuple(self.model.score_pairs(query, candidates, candidate_lengths))


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs a warning per missing torchvision op and emits deprecation warnings
    from its own internals; none concern this model, and they would bury the real messages."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            # The pair scorer's K appears on two inputs; the exporter notes it keeps one name.
            warnings.filterwarnings("ignore", message="# The axis name")
            yield
    finally:
        logger.setLevel(level)


def onnx_path_for(out_path: str | os.PathLike[str]) -> Path:
    """``x.onnx`` stays; other names get ``.onnx`` appended (``astpn.v2`` -> ``astpn.v2.onnx``)."""
    out = Path(out_path)
    return out if out.suffix == ".onnx" else out.with_name(out.name + ".onnx")


def _write_onnx(model: ASTPN, path: Path, opset: int) -> None:
    example = torch.randn(*_EXAMPLE_STEPS, INPUT_CHANNELS, *model.input_spec.crop_size)
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    with _quiet_exporter():
        torch.onnx.export(
            _SelfPairingGraph(model).eval(),
            (example,),
            str(path),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_shapes={"frames": {0: batch, 1: time}},
            opset_version=opset,
            external_data=False,  # one self-contained file: the card's sha256 covers it all
            verbose=False,
        )


def _write_pair_onnx(model: ASTPN, path: Path, opset: int) -> None:
    # Sizes 0/1 would be specialised by torch.export, and equal sizes would be unified.
    n = model.feature_dim
    example = (torch.randn(5, n), torch.randn(3, 7, n), torch.tensor([7, 4, 2]))
    steps_q, k, steps_g = torch.export.Dim("Tq"), torch.export.Dim("K"), torch.export.Dim("Tg")
    with _quiet_exporter():
        torch.onnx.export(
            _PairScorerGraph(model).eval(),
            example,
            str(path),
            dynamo=True,
            input_names=list(PAIR_SCORER_INPUTS),
            output_names=list(PAIR_SCORER_OUTPUTS),
            dynamic_shapes={
                "query": {0: steps_q},
                "candidates": {0: k, 1: steps_g},
                "candidate_lengths": {0: k},
            },
            opset_version=opset,
            external_data=False,
            verbose=False,
        )


def ragged_pair_example(
    feature_dim: int,
    *,
    query_steps: int = 6,
    lengths: tuple[int, ...] = (9, 1, 5, 9),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A query and zero-padded candidates of different lengths (the padding must not count)."""
    rng = np.random.default_rng(seed)
    query = rng.standard_normal((query_steps, feature_dim)).astype(np.float32)
    candidates = np.zeros((len(lengths), max(lengths), feature_dim), np.float32)
    for k, length in enumerate(lengths):
        candidates[k, :length] = rng.standard_normal((length, feature_dim))
    return query, candidates, np.asarray(lengths, dtype=np.int64)


def check_pair_scorer_against_torch(onnx_path: str | os.PathLike[str], model: ASTPN) -> float:
    """Max abs difference of the exported pair scorer and ``ASTPN.score_pairs`` on ragged
    candidates (CPU). Raises ``RuntimeError`` beyond ``CPU_TOLERANCE``."""
    import onnxruntime as ort

    query, candidates, lengths = ragged_pair_example(model.feature_dim)
    with torch.inference_mode():
        expected = model.score_pairs(
            torch.from_numpy(query), torch.from_numpy(candidates), torch.from_numpy(lengths)
        )
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = session.run(
        list(PAIR_SCORER_OUTPUTS),
        {"query": query, "candidates": candidates, "candidate_lengths": lengths},
    )
    difference = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected, strict=True))
    if difference > CPU_TOLERANCE:
        raise RuntimeError(
            f"the exported pair scorer disagrees with PyTorch (max abs difference {difference}, "
            f"tolerance {CPU_TOLERANCE}); not writing it"
        )
    return difference


def _opset_of(path: Path) -> int:
    loaded = onnx.load(str(path), load_external_data=False)
    return next(op.version for op in loaded.opset_import if op.domain in ("", "ai.onnx"))


def check_against_torch(
    onnx_path: str | os.PathLike[str],
    model: ASTPN,
    *,
    batch: int = 2,
    length: int = 9,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the exported file in every ONNX Runtime provider that can run here and compare each
    output with PyTorch. Returns ``{provider: max abs difference or error message}``.

    Raises ``RuntimeError`` if the CPU provider disagrees beyond ``CPU_TOLERANCE``: such a file
    must not be shipped. ``length`` differs from the tracing example so a frozen T would show.
    """
    import onnxruntime as ort

    shape = (batch, length, INPUT_CHANNELS, *model.input_spec.crop_size)
    frames = torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).float()
    with torch.inference_mode():
        expected = [t.numpy() for t in model.self_pair(frames)]
    results: dict[str, Any] = {}
    for provider in ("CUDAExecutionProvider", "CPUExecutionProvider"):
        if provider not in ort.get_available_providers():
            continue
        try:
            session = ort.InferenceSession(str(onnx_path), providers=[provider])
            if session.get_providers()[0] != provider:
                results[provider] = "not usable here (session fell back to another provider)"
                continue
            got = session.run(list(OUTPUT_NAMES), {INPUT_NAME: frames.numpy()})
        except Exception as exc:  # ONNX Runtime raises its own untyped errors
            if provider == "CPUExecutionProvider":
                raise
            results[provider] = f"not usable here: {exc}"
            continue
        results[provider] = max(
            float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True)
        )
    cpu = results.get("CPUExecutionProvider")
    if not isinstance(cpu, float) or cpu > CPU_TOLERANCE:
        raise RuntimeError(
            f"the exported model disagrees with PyTorch on the CPU (max abs difference {cpu}, "
            f"tolerance {CPU_TOLERANCE}); not writing a model that would serve other embeddings"
        )
    return results


def export_onnx(
    model: ASTPN,
    out_path: str | os.PathLike[str],
    *,
    name: str | None = None,
    version: str = "1",
    training_info: Mapping[str, Any] | None = None,
    roles: Mapping[str, str] | None = None,
    opset: int = DEFAULT_OPSET,
    pair_scorer: bool = True,
) -> Path:
    """Write ``<out>.onnx`` and its card ``<out>.json``; returns the ``.onnx`` path.

    ``model`` is not modified (a CPU eval-mode copy is exported). ``roles`` defaults to
    enroll=gallery, query=probe for the attention variants and probe/probe for the mean ones.
    ``training_info`` goes into the card's ``training`` (dataset, command, metrics, ...).
    ``pair_scorer=False`` leaves out ``<out>.pair.onnx`` (for models without joint attention,
    such as the ImageNet peer of ``training/peer.py``). Files are written to temporary names
    first and renamed once checked.
    """
    onnx_path = onnx_path_for(out_path)
    card_path = card_path_for(onnx_path)
    scorer_path = pair_scorer_path_for(onnx_path)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    network = copy.deepcopy(model).cpu().eval()

    # Same folder, so the final rename is atomic; the service never sees a half-written model.
    tmp = onnx_path.with_name(f".{onnx_path.stem}.{uuid.uuid4().hex}.onnx")
    tmp_scorer = onnx_path.with_name(f".{onnx_path.stem}.{uuid.uuid4().hex}.pair.onnx")
    try:
        _write_onnx(network, tmp, opset)
        onnx.checker.check_model(str(tmp), full_check=True)
        check_against_torch(tmp, network)
        scorer = None
        if pair_scorer:
            _write_pair_onnx(network, tmp_scorer, opset)
            onnx.checker.check_model(str(tmp_scorer), full_check=True)
            check_pair_scorer_against_torch(tmp_scorer, network)
            scorer = pair_scorer_record(sha256_file(tmp_scorer), network.feature_dim)
        card = build_card(
            name=name or onnx_path.stem,
            version=version,
            variant=network.variant,
            embedding_size=network.feature_dim,
            onnx_sha256=sha256_file(tmp),
            roles=roles,
            training=training_info,
            opset=_opset_of(tmp),
            torch_version=torch.__version__,
            pair_scorer=scorer,
            input_spec=network.input_spec,
            backbone=network.backbone,
        )
        if scorer:
            os.replace(tmp_scorer, scorer_path)
        os.replace(tmp, onnx_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_scorer.unlink(missing_ok=True)
        raise
    write_card(card, card_path)
    return onnx_path
