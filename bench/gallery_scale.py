"""The gallery part's 10M row: the faiss backend's memory, latency, start-up and disk at a size
this machine is not asked to build, EXTRAPOLATED from the sizes measured in the same run (never
presented as measured).

Rules, stated in the table's notes:

* search p50: the exact index scans every vector, so its time is fitted linear in N; HNSW's
  search visits a number of nodes that grows with log N, so its time is fitted linear in log N;
* resident memory, start-up (reopen) time and disk: linear in N (HNSW's build is N log N, so
  its start-up figure is a lower estimate);
* every fit goes through the two largest measured sizes, and never below the largest measured
  value (noise at small sizes must not extrapolate to a shrinking cost).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.common import HNSW_CASE
from bench.report import Table

TARGET = 10_000_000
#: The search mode extrapolated: what /query runs.
QUERY_MODE_PREFIX = "top-10 grouped by identity"
#: The cases extrapolated, and the x-axis of their search-time fit.
SEARCH_SCALE = {"faiss": "linear", HNSW_CASE: "log"}


def _through(points: Sequence[tuple[float, float]], x: float) -> float:
    """The line through the last two points, at ``x``, not below the last point's value."""
    (x1, y1), (x2, y2) = points[-2], points[-1]
    slope = (y2 - y1) / (x2 - x1)
    return max(y2, y2 + slope * (x - x2))


def _linear(measured: list[dict[str, Any]], key: str, target: int) -> float:
    return _through([(float(b["tracklets"]), float(b[key])) for b in measured], target)


def _query_p50_s(summary: dict[str, Any], key: str = "single") -> float | None:
    for mode in summary.get("modes", []):
        if mode["mode"].startswith(QUERY_MODE_PREFIX) and key in mode:
            return float(mode[key]["median_s"])
    return None


def extrapolate(backends: list[dict[str, Any]], target: int = TARGET) -> dict[str, dict]:
    """Per backend case with at least two measured sizes: its figures at ``target``."""
    out: dict[str, dict] = {}
    for case, scale in SEARCH_SCALE.items():
        measured = sorted(
            (b for b in backends if b["backend"] == case), key=lambda b: b["tracklets"]
        )
        sizes = [float(b["tracklets"]) for b in measured]
        if len(set(sizes)) < 2:
            continue
        latency = [_query_p50_s(b) for b in measured]
        cpu = [_query_p50_s(b, "single_thread_cpu") for b in measured]
        axis = [math.log10(n) for n in sizes] if scale == "log" else sizes
        at = math.log10(target) if scale == "log" else float(target)

        figures = {
            "fitted_from": [int(n) for n in sizes[-2:]],
            "search_scale": scale,
            "rss_bytes": _linear(measured, "rss_delta_bytes", target),
            "reopen_s": _linear(measured, "load_s", target),
            "disk_bytes": target * measured[-1]["disk_bytes_per_tracklet"],
        }
        if all(value is not None for value in latency):
            points = [(x, float(y)) for x, y in zip(axis, latency, strict=True) if y is not None]
            figures["query_p50_s"] = _through(points, at)
        if all(value is not None for value in cpu):
            points = [(x, float(y)) for x, y in zip(axis, cpu, strict=True) if y is not None]
            figures["query_p50_cpu_s"] = _through(points, at)
        out[case] = figures
    return out


def scale_table(backends: list[dict[str, Any]], target: int = TARGET) -> tuple[Table, dict]:
    figures = extrapolate(backends, target)
    table = Table(
        f"{target:,}".replace(",", " ")
        + " tracklets, EXTRAPOLATED from the measured sizes (not measured)",
        [
            "backend",
            "fitted from (tracklets)",
            "search fit",
            "1 query p50 ms (grouped, as /query)",
            "1 query p50 CPU ms",
            "resident memory GiB (reopen RSS)",
            "start-up s (reopen)",
            "disk GB",
        ],
    )
    for case, f in figures.items():
        table.add(
            case,
            " and ".join(f"{n:,}".replace(",", " ") for n in f["fitted_from"]),
            "linear in log N" if f["search_scale"] == "log" else "linear in N",
            f["query_p50_s"] * 1e3 if "query_p50_s" in f else None,
            f["query_p50_cpu_s"] * 1e3 if "query_p50_cpu_s" in f else None,
            f["rss_bytes"] / 2**30,
            f["reopen_s"],
            f["disk_bytes"] / 1e9,
        )
    table.notes.append(
        "Extrapolated, not measured: each figure is the line through the two largest sizes "
        "measured above in this run, never below the largest measured value. Search time is "
        "fitted linear in N for the exact index (it scans every vector) and linear in log N for "
        "HNSW (the nodes a search visits grow with log N); memory, start-up and disk linear in "
        "N (HNSW's build grows as N log N, so its start-up figure is a lower estimate). Disk "
        "includes the stored features and the default thumbnails."
    )
    return table, figures
