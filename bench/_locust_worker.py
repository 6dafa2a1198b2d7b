"""The HTTP load generator, run as its own process by :mod:`bench.http_load`:
``python -m bench._locust_worker SPEC.json``.

Locust (as a library) drives closed-loop clients: each simulated user sends its next request as
soon as the previous answer arrived, one keep-alive connection per user, so "N clients" means N
requests in flight. It runs in a separate process because locust patches the standard library
for gevent when imported, which must not happen to the benchmark's own threads and
subprocesses, and so that the generator's CPU is not counted as the harness's.

The spec names the server (loopback only: this tool never targets another machine) and a list
of load points; the worker writes, per point, every request's completion time, latency and
outcome inside the measured window, and the server's /metrics text at the window's edges.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402  (after the gevent patch, as locust requires)
import logging  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import gevent  # noqa: E402
from locust import constant, task  # noqa: E402
from locust.contrib.fasthttp import FastHttpUser  # noqa: E402
from locust.env import Environment  # noqa: E402

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK and not host.startswith("127."):
        raise SystemExit(f"refusing to send load to {url}: only loopback addresses are allowed")


def fetch_metrics(host: str) -> str:
    with urllib.request.urlopen(f"{host}/metrics", timeout=30) as response:
        return response.read().decode()


def run_point(host: str, point: dict[str, Any]) -> dict[str, Any]:
    bodies = [Path(path).read_bytes() for path in point["bodies"]]
    headers = {"Content-Type": point["content_type"]}
    path, name = point["path"], point["name"]
    chooser = random.Random(point.get("seed", 0))

    class Client(FastHttpUser):
        wait_time = constant(0)
        # Latency under load includes queueing at the server: never let the client give up first.
        network_timeout = 600.0
        connection_timeout = 60.0

        @task
        def send(self) -> None:
            self.client.post(path, data=bodies[chooser.randrange(len(bodies))], headers=headers)

    Client.host = host
    env = Environment(user_classes=[Client], catch_exceptions=True)
    records: list[tuple[float, float, bool, int]] = []

    def on_request(
        response_time: float,
        exception: BaseException | None,
        start_time: float | None = None,
        response: Any = None,
        **_: Any,
    ) -> None:
        status = int(getattr(response, "status_code", 0) or 0)
        began = start_time if start_time is not None else time.time() - response_time / 1e3
        records.append((began + response_time / 1e3, response_time, exception is None, status))

    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    users = int(point["users"])
    runner.start(users, spawn_rate=users * 1000.0)
    gevent.sleep(float(point["warmup"]))
    metrics_before = fetch_metrics(host)
    window_start = time.time()
    gevent.sleep(float(point["seconds"]))
    window_end = time.time()
    metrics_after = fetch_metrics(host)
    runner.quit()
    in_window = [r for r in records if window_start <= r[0] <= window_end]
    return {
        "name": name,
        "users": users,
        "window_s": window_end - window_start,
        "latencies_ms": [r[1] for r in in_window if r[2]],
        "failures": sum(1 for r in in_window if not r[2]),
        "statuses": sorted({r[3] for r in in_window}),
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench._locust_worker SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text())
    host = spec["host"].rstrip("/")
    check_loopback(host)
    logging.getLogger("locust").setLevel(logging.ERROR)
    results = []
    for point in spec["points"]:
        results.append(run_point(host, point))
        print(f"done {point['name']} {point['users']}", flush=True)  # progress for the parent
    Path(spec["out"]).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
