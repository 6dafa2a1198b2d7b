"""Encoder throughput: the ASTPN network alone, PyTorch eager against ONNX Runtime.

For each (B, T) = tracklets per call x frames per tracklet: tracklets/s, frames/s, the FLOP/s
this reaches and its fraction of the CPU's estimated peak. The FLOPs per frame are counted
analytically from the layer shapes of docs/model.md (convolutions, the input linear layer, the
recurrent matrix, the attention products) and cross-checked against PyTorch's FLOP counter.
Weights do not change the speed, so the network is randomly initialised.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from bench.common import Context, cuda_available, ms, time_calls
from bench.report import PartResult, Table, peak_fp32_gflops

# docs/model.md, Table 1: 5x56x40 input, three 5x5 convolutions (stride 1, padding 4) with
# 2x2 max-pools between them, then SPP (8+4+2+1 bins) or a last 2x2 pool, Linear -> 128.
INPUT_SHAPE = (5, 56, 40)
CONV_CHANNELS = (16, 32, 32)
KERNEL, PADDING = 5, 4
SPP_BINS = (8, 4, 2, 1)
FEATURE_DIM = 128
SPP_VARIANTS = ("aspn", "astpn")
ATTENTION_VARIANTS = ("atpn", "astpn")


def _conv_size(size: int) -> int:
    return size + 2 * PADDING - KERNEL + 1


def flops_per_frame(variant: str = "astpn", steps: int = 16) -> dict[str, float]:
    """Multiply-add FLOPs (2 per multiply-accumulate) of the self-paired test-time pass, per
    frame of a ``steps``-frame tracklet, by layer group.

    Counted: convolutions, the input linear layer, the recurrent W s_{t-1} (every step: the
    loop starts from s_0 = 0 but still multiplies it), the attention products P U and
    (P U) P^T, and the two weighted sums that pool the embeddings. Not counted (small next to
    these, and not multiply-adds): biases, tanh, max-pooling, softmax.
    """
    channels, height, width = INPUT_SHAPE
    layers: dict[str, float] = {}
    for index, out_channels in enumerate(CONV_CHANNELS, start=1):
        height, width = _conv_size(height), _conv_size(width)
        layers[f"conv{index}"] = 2.0 * channels * KERNEL * KERNEL * out_channels * height * width
        channels = out_channels
        if index < len(CONV_CHANNELS):
            height, width = height // 2, width // 2
    if variant in SPP_VARIANTS:
        spatial = channels * sum(n * n for n in SPP_BINS)
    else:
        spatial = channels * (height // 2) * (width // 2)
    n = FEATURE_DIM
    layers["linear"] = 2.0 * spatial * n
    layers["recurrent"] = 2.0 * n * n
    if variant in ATTENTION_VARIANTS:
        # (T x N)(N x N) then (T x N)(N x T), once per sequence, spread over its T frames.
        layers["attention"] = (2.0 * steps * n * n + 2.0 * steps * steps * n) / steps
    layers["pooling"] = 2 * (2.0 * steps * n) / steps  # v_p and v_g
    return layers


def counted_flops_per_frame(variant: str = "astpn", steps: int = 16) -> float:
    """The same quantity from ``torch.utils.flop_counter`` on the eager network."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model.network import ASTPN

    network = ASTPN(variant=variant).eval()
    x = torch.zeros(1, steps, *INPUT_SHAPE)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        network.self_pair(x)
    return counter.get_total_flops() / steps


@dataclass(frozen=True)
class Runtime:
    name: str
    device: str
    threads: int  # CPU threads of the runtime; 0 = its own default

    def threads_label(self) -> str:
        if self.device != "cpu":
            return "–"
        if self.name == "PyTorch eager":
            return str(self.threads)
        return str(self.threads) if self.threads else "ORT default"


def _torch_runner(device: str, seed: int, threads: int) -> tuple[Any, Any, Any]:
    import torch

    from model.network import ASTPN

    torch.manual_seed(seed)
    network = ASTPN(variant="astpn").eval().to(device)

    def run(x: np.ndarray) -> None:
        # Set per call: the thread count is process-wide and other rows use other counts.
        if threads:
            torch.set_num_threads(threads)
        with torch.no_grad():
            network.self_pair(torch.from_numpy(x).to(device))

    sync = torch.cuda.synchronize if device == "cuda" else None
    return network, run, sync


def _ort_runner(context: Context, use_cuda: bool, threads: int) -> tuple[Any, Any]:
    from model.card import INPUT_NAME
    from service.encoder import Encoder

    # The service's own Encoder opens the session, so options and providers are the ones served.
    encoder = Encoder(context.model_path(), use_cuda=use_cuda, intra_op_threads=threads)
    session = encoder.session

    def run(x: np.ndarray) -> None:
        session.run(None, {INPUT_NAME: x})

    return encoder, run


def run(context: Context) -> PartResult:
    import torch

    config = context.config
    peak = peak_fp32_gflops()
    started = time.perf_counter()
    part = PartResult(
        name="encoder",
        title="1. Encoder (the network alone)",
        description=(
            "Tracklets of B x T random frames of the network input (5 x 56 x 40) through the "
            "self-paired test-time pass: PyTorch eager (`ASTPN.self_pair`, eval, no grad) and "
            "ONNX Runtime on the exported graph, opened by the service's `Encoder` (same "
            "providers and session options as served). Median time per call over repeated "
            "calls after a warm-up call. Preprocessing is not included (see part 2)."
        ),
    )
    layers = flops_per_frame("astpn", 16)
    analytic = sum(layers.values())
    counted = counted_flops_per_frame("astpn", 16)
    flops_table = Table(
        "FLOPs per frame (astpn, T = 16)",
        ["layer group", "MFLOP per frame"],
    )
    for name, value in layers.items():
        flops_table.add(name, value / 1e6)
    flops_table.add("total (analytic)", analytic / 1e6)
    flops_table.add("total (torch.utils.flop_counter)", counted / 1e6)
    flops_table.notes.append(
        "Multiply-adds count 2 FLOPs. The attention term grows with T (2 T N per frame); "
        "the rest is per frame. " + peak.explanation + "."
    )

    torch_threads = torch.get_num_threads()
    runtimes: list[Runtime] = [Runtime("PyTorch eager", "cpu", torch_threads)]
    if torch_threads > 1:
        runtimes.append(Runtime("PyTorch eager", "cpu", 1))
    runtimes.extend([Runtime("ONNX Runtime", "cpu", 0), Runtime("ONNX Runtime", "cpu", 1)])
    notes: list[str] = []
    if cuda_available():
        runtimes.append(Runtime("PyTorch eager", "cuda", 0))
    else:
        notes.append("No CUDA device visible to PyTorch: CUDA rows skipped.")
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        runtimes.append(Runtime("ONNX Runtime", "cuda", 0))
    else:
        notes.append(
            "This ONNX Runtime build has no CUDAExecutionProvider (CPU wheel): ONNX Runtime "
            "CUDA rows skipped."
        )

    table = Table(
        "Encoder throughput",
        [
            "runtime",
            "device",
            "threads",
            "B x T",
            "ms / call",
            "tracklets/s",
            "frames/s",
            "GFLOP/s",
            "% of CPU peak",
        ],
    )
    raw_rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(config.seed)
    jobs = [(rt, shape) for rt in runtimes for shape in config.encoder_shapes]
    runners: dict[Runtime, Any] = {}
    try:
        _time_all(context, jobs, runners, notes, table, raw_rows, peak, rng)
    finally:
        torch.set_num_threads(torch_threads)
    table.notes.append(
        "GFLOP/s uses the analytic count above at each row's T. Threads: the CPU threads the "
        "runtime may use; PyTorch's default is one per CPU, ONNX Runtime's default (the "
        "service's `REID_ORT_INTRA_OP_THREADS=0`) one per physical core. On a machine shared "
        "with other jobs, several threads per call can be slower than one (threads wait for "
        "each other at every layer)."
    )
    part.tables = [table, flops_table]
    part.notes = notes
    part.raw = {
        "rows": raw_rows,
        "flops_per_frame_t16": layers,
        "flops_counted_t16": counted,
        "peak_fp32_gflops": peak.gflops,
        "peak_explanation": peak.explanation,
    }
    part.seconds = time.perf_counter() - started
    return part


def _time_all(
    context: Context,
    jobs: list[tuple[Runtime, tuple[int, int]]],
    runners: dict[Runtime, Any],
    notes: list[str],
    table: Table,
    raw_rows: list[dict[str, Any]],
    peak: Any,
    rng: np.random.Generator,
) -> None:
    config = context.config
    for runtime, (batch, steps) in tqdm(
        jobs, desc="encoder", unit="config", disable=not config.progress
    ):
        key = runtime
        if key not in runners:
            if runtime.name == "PyTorch eager":
                _, fn, sync = _torch_runner(runtime.device, config.seed, runtime.threads)
                runners[key] = (fn, sync)
            else:
                encoder, fn = _ort_runner(context, runtime.device == "cuda", runtime.threads)
                wanted = "CUDAExecutionProvider" if runtime.device == "cuda" else None
                if wanted and encoder.provider != wanted:
                    notes.append(
                        f"ONNX Runtime offered CUDA but the session got {encoder.provider}: "
                        "CUDA rows skipped."
                    )
                    runners[key] = None
                else:
                    runners[key] = (fn, None)
        runner = runners[key]
        if runner is None:
            continue
        fn, sync = runner
        x = rng.standard_normal((batch, steps, *INPUT_SHAPE), dtype=np.float32)
        timing = time_calls(
            lambda fn=fn, x=x: fn(x),
            min_seconds=config.min_seconds,
            min_runs=5 if not config.quick else 2,
            sync=sync,
        )
        seconds = timing.median
        flops = sum(flops_per_frame("astpn", steps).values()) * batch * steps
        gflops = flops / seconds / 1e9
        share = (
            100.0 * gflops / peak.gflops
            if runtime.device == "cpu" and peak.gflops is not None
            else None
        )
        table.add(
            runtime.name,
            runtime.device,
            runtime.threads_label(),
            f"{batch} x {steps}",
            ms(seconds),
            batch / seconds,
            batch * steps / seconds,
            gflops,
            share,
        )
        raw_rows.append(
            {
                "runtime": runtime.name,
                "device": runtime.device,
                "threads": runtime.threads,
                "batch": batch,
                "steps": steps,
                **timing.as_dict(),
                "tracklets_per_s": batch / seconds,
                "frames_per_s": batch * steps / seconds,
                "gflops_per_s": gflops,
                "percent_of_peak": share,
            }
        )
