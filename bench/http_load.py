"""End to end over HTTP: enroll and query throughput and latency of the real service.

The service runs as a subprocess (``uvicorn service.app:app``) on 127.0.0.1 and a free port,
configured through ``REID_*`` variables, over a gallery prefilled directly through the gallery
interface (clustered embeddings, see :mod:`bench.gallery`) before it starts. Requests carry 16
real JPEG frames (128 x 64) of synthetic pedestrians, as multipart uploads. The load generator
is locust, in its own process (:mod:`bench._locust_worker`): N closed-loop clients, N requests
in flight. Every load point runs with micro-batching on and off (``REID_BATCHING``). The server
is stopped afterwards whatever happens, and nothing but loopback is ever targeted.

Hook: ``OPERATIONS`` lists what is timed. A query with pair re-scoring (``rerank`` = K) is one
more :class:`Operation` whose body adds the ``rerank`` field.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from bench.common import Context
from bench.gallery import clustered_embeddings, prefill
from bench.report import ROOT, PartResult, Table, format_value
from bench.server import ServiceProcess, open_default_gallery

DESCRIPTION = (
    "The service as deployed (`uvicorn service.app:app` in its own process on 127.0.0.1, "
    "configured by `REID_*` variables) over a gallery prefilled through the gallery interface "
    "with clustered embeddings before it starts. Each request carries 16 JPEG frames "
    "(128 x 64) of a synthetic pedestrian as a multipart upload. Load: locust in its own "
    "process, N closed-loop clients (N requests in flight), with micro-batching on and off "
    "(`REID_BATCHING`)."
)
FRAMES_PER_TRACKLET = 16
DISTINCT_TRACKLETS = 8  # request bodies cycled through (distinct people and cameras)


# ---------------------------------------------------------------------------- the requests


def multipart_body(
    fields: Mapping[str, str], files: list[tuple[str, bytes]], boundary: str
) -> bytes:
    """multipart/form-data with text ``fields`` and JPEG ``files`` (all named ``frames``)."""
    parts: list[bytes] = []
    for key, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    for filename, data in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="frames"; '
            f'filename="{filename}"\r\nContent-Type: image/jpeg\r\n\r\n'.encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def jpeg_tracklets(count: int, seed: int) -> list[list[tuple[str, bytes]]]:
    """``count`` tracklets of 16 JPEG frames (128 x 64) of distinct synthetic people."""
    from training.synthetic.tracklet import synthesize_tracklet

    tracklets = []
    for i in range(count):
        frames = synthesize_tracklet(
            identity=i, camera=1 + i % 2, num_frames=FRAMES_PER_TRACKLET, seed=seed
        )
        encoded = []
        for t, frame in enumerate(frames):
            ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG frame")
            encoded.append((f"{t:04d}.jpg", buffer.tobytes()))
        tracklets.append(encoded)
    return tracklets


@dataclass(frozen=True)
class Operation:
    """One kind of request: its route and how its multipart fields are built for tracklet i."""

    name: str
    path: str
    fields: Callable[[int], dict[str, str]]


OPERATIONS: list[Operation] = [
    Operation("query", "/query", lambda i: {"top_k": "10"}),
    Operation(
        "enroll",
        "/tracklets",
        lambda i: {"identity": f"bench-person-{i}", "camera": f"cam{1 + i % 2}"},
    ),
]


def write_bodies(
    folder: Path, tracklets: list[list[tuple[str, bytes]]]
) -> dict[str, tuple[list[str], str]]:
    """Per operation: the body files and the Content-Type (one boundary for all bodies)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    content_type = f"multipart/form-data; boundary={boundary}"
    out = {}
    for operation in OPERATIONS:
        paths = []
        for i, files in enumerate(tracklets):
            path = folder / f"{operation.name}-{i}.body"
            path.write_bytes(multipart_body(operation.fields(i), files, boundary))
            paths.append(str(path))
        out[operation.name] = (paths, content_type)
    return out


# ------------------------------------------------------------------------------- metrics


def histogram_mean(metrics_text: str, name: str) -> tuple[float, float]:
    """(sum, count) of a Prometheus histogram in a /metrics text."""
    values = {}
    for suffix in ("_sum", "_count"):
        match = re.search(rf"^{name}{suffix}(?:\{{[^}}]*\}})? ([0-9.eE+-]+)$", metrics_text, re.M)
        values[suffix] = float(match.group(1)) if match else 0.0
    return values["_sum"], values["_count"]


def server_batch_size(before: str, after: str) -> float | None:
    """Mean tracklets per ONNX Runtime call during the window (``reid_batch_size``)."""
    s0, c0 = histogram_mean(before, "reid_batch_size")
    s1, c1 = histogram_mean(after, "reid_batch_size")
    return (s1 - s0) / (c1 - c0) if c1 > c0 else None


def server_cpu_cores(before: str, after: str, window_s: float) -> float | None:
    """CPU cores the server kept busy on average during the window
    (``process_cpu_seconds_total``)."""
    found = [
        re.search(r"^process_cpu_seconds_total ([0-9.eE+-]+)$", text, re.M)
        for text in (before, after)
    ]
    if not all(found) or window_s <= 0:
        return None
    return (float(found[1].group(1)) - float(found[0].group(1))) / window_s


# ----------------------------------------------------------------------------------- run


def run_load_generator(
    spec_path: Path, folder: Path, budget_s: float, points: int, label: str, progress: bool
) -> None:
    """Run :mod:`bench._locust_worker` on a spec; a progress bar advances per load point (the
    worker prints one line per point). The worker is killed if it overruns or we are stopped."""
    log_path = folder / f"{spec_path.stem}.worker.log"
    with (
        log_path.open("w") as log,
        tqdm(total=points, desc=label, unit="point", disable=not progress) as bar,
    ):
        worker = subprocess.Popen(
            [sys.executable, "-m", "bench._locust_worker", str(spec_path)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )

        def follow() -> None:
            assert worker.stdout is not None
            for line in worker.stdout:
                if line.startswith("done "):
                    bar.update(1)

        # Read progress in a thread so a silent, hung worker still meets the deadline below.
        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        try:
            worker.wait(budget_s)
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"the load generator did not finish within {budget_s:.0f} s"
            ) from None
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(10)
            reader.join(10)
    if worker.returncode != 0:
        raise RuntimeError(
            f"the load generator failed ({worker.returncode}):\n"
            + log_path.read_text(errors="replace")[-4000:]
        )


def run(context: Context) -> PartResult:
    from service.backends import DEFAULT_BACKEND

    config = context.config
    started = time.perf_counter()
    folder = config.workdir / "http"
    folder.mkdir(parents=True, exist_ok=True)
    model_path = context.served_model_path()

    # Prefill through the gallery interface, where the service will look for it.
    data_dir = folder / "data"
    data = clustered_embeddings(config.http_gallery_size, 0, config.seed)
    with open_default_gallery(model_path, data_dir) as gallery:
        prefill_s = prefill(
            gallery, data, config.seed, progress=config.progress, desc="http prefill"
        )
    del data

    distinct = DISTINCT_TRACKLETS if not config.quick else 2
    bodies = write_bodies(folder, jpeg_tracklets(distinct, config.seed))
    table = Table(
        f"HTTP end to end, {format_value(config.http_gallery_size)} tracklets in the gallery",
        [
            "batching",
            "request",
            "clients",
            "requests",
            "failed",
            "requests/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "mean tracklets per ONNX call",
            "server CPU cores busy",
        ],
    )
    raw_points: list[dict[str, Any]] = []
    notes: list[str] = []
    points = [(operation, users) for users in config.concurrency for operation in OPERATIONS]
    for batching in (True, False):
        env = {
            "REID_GALLERY_BACKEND": DEFAULT_BACKEND,
            "REID_BATCHING": "true" if batching else "false",
            # Plain queries: re-scoring has its own rows (see the module's hook).
            "REID_RERANK": "0",
        }
        with ServiceProcess(model_path, data_dir, env) as server:
            ready = server.ready()
            spec_path = folder / f"spec-{server.port}.json"
            out_path = folder / f"result-{server.port}.json"
            spec = {
                "host": server.url,
                "out": str(out_path),
                "points": [
                    {
                        "name": operation.name,
                        "path": operation.path,
                        "bodies": bodies[operation.name][0],
                        "content_type": bodies[operation.name][1],
                        "users": users,
                        "seconds": config.http_seconds,
                        "warmup": config.http_warmup_seconds,
                        "seed": config.seed,
                    }
                    for operation, users in points
                ],
            }
            spec_path.write_text(json.dumps(spec))
            budget = len(points) * (config.http_seconds + config.http_warmup_seconds + 60) + 120
            label = f"http batching={'on' if batching else 'off'}"
            run_load_generator(spec_path, folder, budget, len(points), label, config.progress)
            results = json.loads(out_path.read_text())
            log_tail = server.log_tail()
        for result in results:
            latencies = np.asarray(result["latencies_ms"], dtype=float)
            if latencies.size == 0:
                raise RuntimeError(
                    f"no {result['name']} request with {result['users']} clients succeeded in "
                    f"the window (HTTP statuses {result['statuses']}); server log:\n{log_tail}"
                )
            if result["failures"]:
                notes.append(
                    f"{result['failures']} failed {result['name']} requests with "
                    f"{result['users']} clients, batching {'on' if batching else 'off'} "
                    f"(statuses seen: {result['statuses']})."
                )
            batch = server_batch_size(result["metrics_before"], result["metrics_after"])
            cores = server_cpu_cores(
                result["metrics_before"], result["metrics_after"], result["window_s"]
            )
            row = {
                "batching": batching,
                "request": result["name"],
                "clients": result["users"],
                "requests": int(latencies.size),
                "failed": int(result["failures"]),
                "requests_per_s": latencies.size / result["window_s"],
                "p50_ms": float(np.percentile(latencies, 50)),
                "p95_ms": float(np.percentile(latencies, 95)),
                "p99_ms": float(np.percentile(latencies, 99)),
                "mean_batch": batch,
                "server_cpu_cores": cores,
                "window_s": result["window_s"],
                "gallery_count_at_start": ready["gallery"]["count"],
                "provider": ready["provider"],
            }
            raw_points.append(row)
            table.add(
                "on" if batching else "off",
                row["request"],
                row["clients"],
                row["requests"],
                row["failed"],
                row["requests_per_s"],
                row["p50_ms"],
                row["p95_ms"],
                row["p99_ms"],
                batch,
                cores,
            )
    table.notes.append(
        f"{FRAMES_PER_TRACKLET} JPEG frames of 128 x 64 per request (multipart), {distinct} "
        "distinct tracklets cycled. Closed loop: each client sends its next request when the "
        f"previous one is answered. {config.http_warmup_seconds:g} s warm-up, then "
        f"{config.http_seconds:g} s measured per row; requests/s counts answers completed in "
        "that window. The load generator (locust, one process) shares the machine's CPUs with "
        "the server. Server settings are the service's defaults (decode and inference thread "
        "pools, ONNX Runtime threads), provider "
        f"{raw_points[0]['provider'] if raw_points else 'unknown'}; the last column is "
        "`reid_batch_size` from /metrics over the window, and the server's CPU time over it "
        "(`process_cpu_seconds_total`) divided by its length."
    )
    part = PartResult(
        name="http",
        title="4. HTTP end to end",
        description=DESCRIPTION,
        tables=[table],
        notes=notes,
        raw={
            "points": raw_points,
            "gallery_size": config.http_gallery_size,
            "prefill_s": prefill_s,
            "concurrency": list(config.concurrency),
            "seconds": config.http_seconds,
            "warmup_seconds": config.http_warmup_seconds,
        },
    )
    part.seconds = time.perf_counter() - started
    return part
