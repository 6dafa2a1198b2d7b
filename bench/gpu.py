"""The GPU path: the served model's encoder on CUDA, FAISS's exact search on the GPU, and the
service end to end over HTTP with both, each beside the CPU doing the same work.

Run it on a machine with a GPU, in an environment holding the GPU builds (`pip install
".[gpu]"` after removing onnxruntime and faiss-cpu, or the image of docker/Dockerfile.gpu):
``timeout 900 python -m bench gpu --out docs/benchmarks-gpu.md`` (about 5 minutes). Where
ONNX Runtime offers no CUDAExecutionProvider or FAISS sees no GPU, the CPU rows are measured and
the report says which GPU rows were not, and why; the HTTP table needs a CUDA session.

Encoder: ``service.encoder.Encoder`` (the service's own session options) on the served model
(``--model``, the shipped one by default), random frames of its input size, B tracklets x T
frames per call. FAISS: ``IndexFlatL2`` over clustered 128-d embeddings (:mod:`bench.gallery`),
queries one at a time (as the service searches, on one CPU thread: its default) and 256 per
call (throughput, on every CPU thread), on the CPU and on the GPU. HTTP: the http part's measurement
(:mod:`bench.http_load`) on a service whose settings leave ``REID_USE_CUDA`` on.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench.common import Context, time_calls
from bench.report import PartResult, Table, doc_description

ENCODER_SHAPES = ((1, 16), (32, 16), (8, 128))
QUICK_ENCODER_SHAPES = ((1, 4),)
BATCH_QUERIES = 256


def _encoder_table(context: Context) -> tuple[Table, bool, list[dict[str, Any]]]:
    """Encoder rows on the CPU and, when ONNX Runtime offers it, CUDA; and whether CUDA ran."""
    from service.encoder import Encoder
    from service.onnx_session import CUDA

    config = context.config
    path = context.served_model_path()
    table = Table(
        f"Encoder on CUDA and on the CPU ({path.name})",
        ["provider", "B x T", "ms / call", "tracklets/s", "frames/s"],
    )
    shapes = QUICK_ENCODER_SHAPES if config.quick else ENCODER_SHAPES
    encoders = {"CPU": Encoder(path, use_cuda=False)}
    cuda = Encoder(path, use_cuda=True)
    if cuda.provider == CUDA:
        encoders["CUDA"] = cuda
    else:
        table.notes.append(
            f"CUDA rows not measured: this ONNX Runtime offers {cuda.available_providers} and "
            f"the session ran on {cuda.provider}."
        )
    raw = []
    rng = np.random.default_rng(config.seed)
    for name, encoder in encoders.items():
        channels, (height, width) = len(encoder.spec.channels), encoder.spec.crop_size
        for batch, frames in shapes:
            x = rng.random((frames, channels, height, width), dtype=np.float32)
            tracklets = [x] * batch
            timing = time_calls(
                lambda e=encoder, t=tracklets: e.embed(t, "query"),
                min_seconds=config.min_seconds,
            )
            seconds = timing.median
            table.add(
                name,
                f"{batch} x {frames}",
                seconds * 1e3,
                batch / seconds,
                batch * frames / seconds,
            )
            raw.append({"provider": name, "batch": batch, "frames": frames, **timing.as_dict()})
    return table, "CUDA" in encoders, raw


def _faiss_table(context: Context) -> tuple[Table, list[dict[str, Any]]]:
    import faiss

    from bench.gallery import clustered_embeddings
    from service.faiss_index import gpu_resources

    config = context.config
    size = 2_000 if config.quick else 1_000_000
    data = clustered_embeddings(size, BATCH_QUERIES, config.seed)
    vectors, queries = data.embeddings, data.queries
    table = Table(
        f"FAISS exact search on the GPU and the CPU, {size:,} vectors of 128-d",
        ["device", "queries per call", "ms / call", "queries/s"],
    )
    cpu = faiss.IndexFlatL2(vectors.shape[1])
    cpu.add(vectors)
    threads = faiss.omp_get_max_threads()
    # One query per call on one thread (the service's REID_FAISS_THREADS); a batch on every core.
    rows: list[tuple[str, Any, int, int]] = [("CPU, 1 thread", cpu, 1, 1)]
    rows.append((f"CPU, {threads} threads", cpu, BATCH_QUERIES, threads))
    resources = gpu_resources()
    if resources is not None:
        gpu = faiss.index_cpu_to_gpu(resources, 0, cpu)
        rows += [("GPU", gpu, 1, threads), ("GPU", gpu, BATCH_QUERIES, threads)]
    else:
        table.notes.append(
            "GPU rows not measured: this FAISS build has no GPU support, sees no GPU, or cannot "
            "use it (a warning above says so)."
        )
    raw = []
    try:
        for name, index, count, omp_threads in rows:
            faiss.omp_set_num_threads(omp_threads)
            batch = queries[:count]
            timing = time_calls(
                lambda i=index, q=batch: i.search(q, 10), min_seconds=config.min_seconds
            )
            table.add(name, count, timing.median * 1e3, count / timing.median)
            raw.append({"device": name, "queries": count, **timing.as_dict()})
    finally:
        faiss.omp_set_num_threads(threads)
    return table, raw


def run(context: Context) -> PartResult:
    started = time.perf_counter()
    encoder_table, cuda, encoder_raw = _encoder_table(context)
    faiss_table, faiss_raw = _faiss_table(context)
    tables = [encoder_table, faiss_table]
    raw: dict[str, Any] = {"encoder": encoder_raw, "faiss": faiss_raw}
    if cuda:
        from bench.http_load import run as http_run

        http = http_run(context)
        tables.extend(http.tables)
        raw["http"] = http.raw
    else:
        faiss_table.notes.append(
            "HTTP end to end on the GPU not measured: no CUDA session (see the encoder table); "
            "the http part measures the service on the CPU."
        )
    part = PartResult(
        name="gpu",
        title="9. The GPU path",
        description=doc_description(__doc__),
        tables=tables,
        raw=raw,
    )
    part.seconds = time.perf_counter() - started
    return part
