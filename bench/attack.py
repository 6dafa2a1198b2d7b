"""``python -m bench.attack``: issue 18's memory and CPU attacks against a server started with the
shipped defaults: for each attack, ``--concurrency`` clients (8) send it ``--rounds`` times at
once while one honest client enrolls and queries ordinary tracklets. Reported per attack: the
answers' statuses, the server's peak resident memory over its idle footprint, and how the
honest requests fared. docs/service.md ("Limits and hostile input") quotes a run of it.

Memory is the server process's resident set (``/proc/PID/status``): ``VmHWM``, its high-water
mark, reset before each attack through ``/proc/PID/clear_refs``, and polled ``VmRSS`` as a
fallback where the reset is not allowed. Only for Linux, and only against 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

from bench.hostile import Hostile, b64, heavy_corpus, person_jpeg
from bench.server import ServiceProcess
from service.settings import DEFAULT_MODEL_PATH

DEFAULT_MODEL = DEFAULT_MODEL_PATH
MiB = 1024 * 1024


@dataclass
class AttackResult:
    name: str
    requests: int
    statuses: dict[str, int]  # status (or exception name) -> count
    server_errors: int  # 5xx answers other than 503 (admission's), and dropped connections
    baseline_mib: float  # the server's resident size before the first attack
    idle_mib: float  # just before this attack (a process keeps some of what it used)
    peak_mib: float  # the highest resident size during this attack

    @property
    def over_baseline_mib(self) -> float:
        return self.peak_mib - self.baseline_mib

    honest_ok: int
    honest_total: int
    honest_max_s: float
    wall_s: float


def memory_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current resident size (Linux 4.0+, needs permission)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class _Peak:
    """Polls the server's resident size in a thread; the maximum seen."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = memory_kib(pid, "VmRSS")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, memory_kib(self.pid, "VmRSS"))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _honest(url: str, stop: threading.Event, outcomes: list[tuple[bool, float]]) -> None:
    """An ordinary client: enroll a 16-frame tracklet, query with it, again and again."""
    frames = [person_jpeg(seed) for seed in range(16)]
    files = [("frames", (f"{i}.jpg", f, "image/jpeg")) for i, f in enumerate(frames)]
    with httpx.Client(base_url=url, timeout=120) as client:
        for round_ in range(10_000):
            if stop.is_set():
                return
            start = time.perf_counter()
            enrolled = client.post("/tracklets", data={"identity": f"honest-{round_}"}, files=files)
            outcomes.append((enrolled.status_code == 201, time.perf_counter() - start))
            start = time.perf_counter()
            queried = client.post("/query", json={"frames": [b64(f) for f in frames]})
            outcomes.append((queried.status_code == 200, time.perf_counter() - start))


def _outcome(response: httpx.Response) -> str:
    """The status, with the error code for a 5xx (admission's 503s say which budget)."""
    if response.status_code < 500:
        return str(response.status_code)
    try:
        return f"{response.status_code} {response.json()['error']['code']}"
    except (ValueError, KeyError, TypeError):
        return str(response.status_code)


def _send(url: str, hostile: Hostile, rounds: int) -> list[str]:
    outcomes = []
    with httpx.Client(base_url=url, timeout=300) as client:
        for _ in range(rounds):
            try:
                outcomes.append(_outcome(hostile.send(client)))
            except httpx.HTTPError as exc:
                outcomes.append(type(exc).__name__)
    return outcomes


def _server_error(outcome: str) -> bool:
    """A dropped connection, or a 5xx other than admission control's 503 + Retry-After."""
    status = outcome.split()[0]
    if not status.isdigit():
        return True
    admission = outcome in ("503 overloaded", "503 deadline_exceeded")
    return status.startswith("5") and not admission


def _send_all(url: str, hostile: Hostile, concurrency: int, rounds: int) -> list[str]:
    with ThreadPoolExecutor(concurrency) as pool:
        batches = pool.map(lambda _: _send(url, hostile, rounds), range(concurrency))
        return [outcome for batch in batches for outcome in batch]


def attack(
    server: ServiceProcess,
    hostile: Hostile,
    baseline_kib: int,
    concurrency: int = 8,
    rounds: int = 1,
) -> AttackResult:
    """``concurrency`` clients send ``hostile`` ``rounds`` times each; an honest client too."""
    assert server.process is not None
    pid = server.process.pid
    time.sleep(1.0)  # let the previous attack's memory settle
    idle = memory_kib(pid, "VmRSS")
    exact = reset_peak(pid)
    poller = _Peak(pid)
    stop = threading.Event()
    honest: list[tuple[bool, float]] = []
    honest_thread = threading.Thread(target=_honest, args=(server.url, stop, honest))
    start = time.perf_counter()
    honest_thread.start()
    sent = _send_all(server.url, hostile, concurrency, rounds)
    wall = time.perf_counter() - start
    stop.set()
    honest_thread.join()
    peak = max(poller.stop(), memory_kib(pid, "VmHWM") if exact else 0)
    statuses = Counter(sent)
    return AttackResult(
        name=hostile.name,
        requests=len(sent),
        statuses=dict(sorted(statuses.items())),
        server_errors=sum(n for s, n in statuses.items() if _server_error(s)),
        baseline_mib=round(baseline_kib / 1024, 1),
        idle_mib=round(idle / 1024, 1),
        peak_mib=round(peak / 1024, 1),
        honest_ok=sum(ok for ok, _ in honest),
        honest_total=len(honest),
        honest_max_s=round(max((s for _, s in honest), default=0.0), 2),
        wall_s=round(wall, 1),
    )


def markdown(results: list[AttackResult]) -> str:
    baseline = results[0].baseline_mib if results else 0.0
    lines = [
        "| attack (8 clients at once) | answers | peak resident memory: over the fresh "
        f"server's {baseline:.0f} MiB (total; idle just before) | honest requests ok "
        "| slowest honest |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        answers = ", ".join(f"{n} x {s}" for s, n in r.statuses.items())
        lines.append(
            f"| {r.name} | {answers} | {r.over_baseline_mib:.0f} MiB ({r.peak_mib:.0f}; "
            f"{r.idle_mib:.0f}) "
            f"| {r.honest_ok}/{r.honest_total} | {r.honest_max_s:.1f} s |"
        )
    return "\n".join(lines)


def run(
    model: Path,
    scale: float,
    concurrency: int,
    rounds: int,
    env: Mapping[str, str],
    only: str = "",
) -> list[AttackResult]:
    """Every heavy attack (or those whose name contains ``only``) against one server."""
    attacks = [h for h in heavy_corpus(scale) if only in h.name]
    with tempfile.TemporaryDirectory(prefix="reid-attack-") as tmp:
        server = ServiceProcess(model, Path(tmp) / "data", env)
        with server:
            assert server.process is not None
            baseline = memory_kib(server.process.pid, "VmRSS")
            return [attack(server, h, baseline, concurrency, rounds) for h in attacks]


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.startswith("REID_"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected REID_NAME=value")
    return name, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.attack", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported model (.onnx)")
    parser.add_argument("--scale", type=float, default=1.0, help="attack size; 1 is issue 18's")
    parser.add_argument("--concurrency", type=int, default=8, help="clients sending each attack")
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends")
    parser.add_argument("--only", default="", help="only the attacks whose name contains this")
    parser.add_argument(
        "--set", type=_setting, action="append", default=[], help="a server setting, REID_X=v"
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    env = dict(args.set)
    results = run(args.model, args.scale, args.concurrency, args.rounds, env, args.only)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


if __name__ == "__main__":
    main()
