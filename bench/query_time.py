"""Where one query's time goes: the per-request `timings` the service returns, next to the
client's wall time and to the same work done in this process.

One client, one request at a time, on the service as deployed (`bench.server.ServiceProcess`,
the shipped model unless `--model` says otherwise, default settings) with a small gallery (the
search is measured at scale by the gallery part). Each request is `POST /query` with 16 JPEG
frames of 128 x 64 as a multipart upload. The in-process column runs the same stages on the
same JPEG bytes here: `service.frames.decode_frames`, `prepare_tracklet` with the model's input
spec and `Encoder.embed`, one call at a time.
"""

from __future__ import annotations

import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Context, time_calls
from bench.http_load import jpeg_tracklets, multipart_body
from bench.report import PartResult, Table, doc_description

ENROLLED = 20
BOUNDARY = "reidbenchboundary"
STAGES = ("decode_ms", "preprocess_ms", "embed_ms", "search_ms")


def _post(url: str, body: bytes) -> tuple[float, dict[str, Any]]:
    import json

    request = urllib.request.Request(
        url,
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        method="POST",
    )
    t0 = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = json.loads(response.read())
    return (time.perf_counter() - t0) * 1e3, answer


def _served(model_path: Path, data_dir: Path, tracklets: list, queries: int) -> list[dict]:
    """Per query: the client's wall ms and the answer's timings."""
    from bench.server import ServiceProcess

    samples = []
    with ServiceProcess(model_path, data_dir) as server:
        for i, files in enumerate(tracklets[1:]):
            body = multipart_body({"identity": f"p{i}", "camera": "cam2"}, files, BOUNDARY)
            _post(f"{server.url}/tracklets", body)
        body = multipart_body({"top_k": "10"}, tracklets[0], BOUNDARY)
        for _ in range(5):  # warm-up: thread pools, ONNX Runtime's first calls
            _post(f"{server.url}/query", body)
        for _ in range(queries):
            wall, answer = _post(f"{server.url}/query", body)
            samples.append({"wall_ms": wall, **answer["timings"]})
    return samples


def _prefill(model_path: Path, data_dir: Path, size: int, seed: int, progress: bool) -> None:
    from bench.gallery import clustered_embeddings, prefill
    from bench.server import open_default_gallery

    with open_default_gallery(model_path, data_dir) as gallery:
        prefill(
            gallery,
            clustered_embeddings(size, 0, seed),
            seed,
            progress=progress,
            desc="query prefill",
        )


def _in_process(
    model_path: Path, data_dir: Path, files: list, min_seconds: float
) -> dict[str, float]:
    from bench.server import open_default_gallery
    from model.preprocessing import prepare_tracklet
    from service.encoder import Encoder
    from service.frames import EncodedFrame, FrameLimits, decode_frames
    from service.settings import Settings

    limits = FrameLimits.from_settings(Settings())
    encoded = [EncodedFrame(name, data) for name, data in files]
    encoder = Encoder(model_path, use_cuda=False)
    frames = decode_frames(encoded, limits)
    x = prepare_tracklet(frames, encoder.spec)
    query = encoder.embed([x], "query")[0].embedding

    def median_ms(call: Callable[[], object]) -> float:
        return time_calls(call, min_seconds=min_seconds).median * 1e3

    with open_default_gallery(model_path, data_dir) as gallery:
        search_ms = median_ms(lambda: gallery.search(query, 10))
    return {
        "decode_ms": median_ms(lambda: decode_frames(encoded, limits)),
        "preprocess_ms": median_ms(lambda: prepare_tracklet(frames, encoder.spec)),
        "embed_ms": median_ms(lambda: encoder.embed([x], "query")),
        "search_ms": search_ms,
    }


def run(context: Context) -> PartResult:
    config = context.config
    started = time.perf_counter()
    model_path = context.served_model_path()
    queries = 20 if config.quick else 200
    tracklets = jpeg_tracklets(ENROLLED + 1, config.seed)
    data_dir = config.workdir / "query-time" / "data"
    size = config.http_gallery_size
    _prefill(model_path, data_dir, size, config.seed, config.progress)
    samples = _served(model_path, data_dir, tracklets, queries)
    local = _in_process(model_path, data_dir, tracklets[0], config.min_seconds)

    def p50(key: str) -> float:
        return statistics.median(s[key] for s in samples)

    named = {key: p50(key) for key in STAGES}
    outside = statistics.median(s["wall_ms"] - s["total_ms"] for s in samples)
    between = statistics.median(s["total_ms"] - sum(s[k] for k in STAGES) for s in samples)
    table = Table(
        f"Where a query's time goes ({model_path.name}, one client, 16 JPEG frames 128 x 64, "
        f"{size + ENROLLED:,} tracklets in the gallery)",
        ["stage", "served p50 ms", "in this process p50 ms", "served / in process"],
    )
    labels = {
        "decode_ms": "unpack + decode (timings.decode_ms)",
        "preprocess_ms": "preprocessing (timings.preprocess_ms)",
        "embed_ms": "network, batching wait included (timings.embed_ms)",
        "search_ms": "search, top 10 identities (timings.search_ms)",
    }
    for key, label in labels.items():
        mine = local.get(key)
        table.add(label, named[key], mine, named[key] / mine if mine else None)
    table.add(
        "handler, outside the stages (body parsing, admission, handoffs)", between, None, None
    )
    table.add("outside the handler (HTTP, middleware, JSON, client)", outside, None, None)
    compute = sum(local.values())
    table.add("client wall time", p50("wall_ms"), compute, p50("wall_ms") / compute)
    table.notes.append(
        f"{len(samples)} queries after 5 warm-up ones; medians of each column separately (so "
        "the rows need not add up to the wall time exactly). The in-process column is the same "
        "work on the same bytes in the benchmark's own process, one call at a time; its wall "
        "time row is the sum of its four stages, and the last cell of that row is the served wall "
        "time over it."
    )
    part = PartResult(
        name="query",
        title="8. Where a query's time goes",
        description=doc_description(__doc__),
        tables=[table],
        raw={"served": samples, "in_process": local, "model": str(model_path)},
    )
    part.seconds = time.perf_counter() - started
    return part
