"""The benchmark harness's smoke mode: ``python -m bench all --quick --out <tmp>`` must run every
part and write a report holding each table, with numbers, and the machine header.

Performance claims come only from the harness's full runs (docs/benchmarks.md); this test checks
structure and sanity (positive finite numbers, recalls in [0, 1]), never speed.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from service_fixtures import requires_milvus

ROOT = Path(__file__).resolve().parents[1]

TABLES = (
    "Encoder throughput",
    "FLOPs per frame",
    "Preprocessing per frame",
    "Gallery backends through the gallery interface",
    "Search latency through the gallery interface",
    "Exact vs approximate FAISS indexes",
    "The generated embeddings",
    "HTTP end to end",
    "Training speed",
    "Video ingestion",
    "10 000 000 tracklets, EXTRAPOLATED",
    "Ours and the peer on the same 16 frames",
    "Peer ratio",
    "Where a query's time goes",
    "Encoder on CUDA and on the CPU",
    "FAISS exact search on the GPU and the CPU",
)
MACHINE_ROWS = ("CPU", "memory", "GPU", "OS", "Python", "packages", "date (UTC)", "command")

# Columns whose values are not "a positive amount".
FRACTION_COLUMNS = ("recall", "of the query's identity")
COSINE_COLUMNS = ("cosine",)
COUNT_COLUMNS = ("failed", "RSS")
OPTIONAL_COLUMNS = (
    "% of CPU peak",
    "mean tracklets per ONNX call",
    "server CPU cores busy",
    "100 queries",
    "in this process",
    "served / in process",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict]:
    out = tmp_path_factory.mktemp("bench") / "benchmarks.md"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick", "--no-progress", "--out", str(out)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    raw = json.loads(out.with_suffix(".json").read_text())
    return out.read_text(), raw


@pytest.mark.slow
def test_report_has_machine_header_and_command(report: tuple[str, dict]) -> None:
    markdown, raw = report
    for row in MACHINE_ROWS:
        assert f"| {row} |" in markdown, row
    assert "python -m bench all --quick" in markdown
    assert "Smoke run" in markdown
    machine = raw["machine"]
    assert machine["cpus"] >= 1 and machine["python"] and machine["packages"]["numpy"]
    assert raw["quick"] is True


@pytest.mark.slow
def test_report_holds_every_table_with_numbers(report: tuple[str, dict]) -> None:
    markdown, raw = report
    tables = {t["title"]: t for part in raw["parts"].values() for t in part["tables"]}
    for title in TABLES:
        matching = [t for name, t in tables.items() if name.startswith(title)]
        assert matching, f"table {title!r} missing from the JSON"
        table = matching[0]
        assert table["rows"], f"table {title!r} has no rows"
        assert f"#### {table['title']}" in markdown
        section = markdown.split(f"#### {table['title']}", 1)[1].split("####", 1)[0]
        body = [line for line in section.splitlines() if line.startswith("| ")][1:]
        assert body and any(ch.isdigit() for ch in body[0]), f"no numbers in {title!r}"


def _check_value(table: str, column: str, value: object) -> None:
    where = f"{table} / {column}: {value!r}"
    if value is None:
        assert any(c in column for c in OPTIONAL_COLUMNS), where
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    assert math.isfinite(value), where
    if any(c in column for c in FRACTION_COLUMNS):
        assert 0.0 <= value <= 1.0, where
    elif any(c in column for c in COSINE_COLUMNS):
        assert -1.0 <= value <= 1.0, where
    elif any(c in column for c in COUNT_COLUMNS):
        assert value >= 0, where
    else:
        assert value > 0, where


@pytest.mark.slow
def test_numbers_are_sane(report: tuple[str, dict]) -> None:
    _, raw = report
    for part in raw["parts"].values():
        for table in part["tables"]:
            for row in table["rows"]:
                assert len(row) == len(table["columns"])
                for column, value in zip(table["columns"], row, strict=True):
                    _check_value(table["title"], column, value)


@pytest.mark.slow
def test_http_requests_succeeded_and_server_stopped(report: tuple[str, dict]) -> None:
    _, raw = report
    points = raw["parts"]["http"]["raw"]["points"]
    assert {p["batching"] for p in points} == {True, False}
    assert {p["request"] for p in points} >= {"query", "enroll"}
    assert all(p["requests"] > 0 and p["failed"] == 0 for p in points)
    recalls = {b["backend"]: b["recall_at_10"] for b in raw["parts"]["gallery"]["raw"]["backends"]}
    # The faiss backend searches exactly: its recall against exact search is 1; its HNSW index
    # is measured beside it through the same gallery class.
    assert recalls["faiss"] == pytest.approx(1.0)
    assert 0.9 <= recalls["faiss-hnsw"] <= 1.0
    assert set(raw["parts"]["gallery"]["raw"]["extrapolated_10m"]) == {"faiss", "faiss-hnsw"}
    assert raw["parts"]["peer"]["raw"]["ratio"]["network 1 x 16, 1 threads"]["cpu"] > 0
    served = raw["parts"]["query"]["raw"]["served"]
    assert served and all(s["total_ms"] <= s["wall_ms"] for s in served)


def test_quick_refuses_to_write_into_docs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "preprocessing",
            "--quick",
            "--out",
            str(ROOT / "docs" / "benchmarks.md"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0
    assert "refusing" in result.stderr


def test_help_explains_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0
    for option in ("--quick", "--out", "--sizes", "--backends", "--concurrency", "--workdir"):
        assert option in result.stdout


@pytest.mark.slow
@requires_milvus
def test_gallery_part_runs_on_milvus(tmp_path: Path) -> None:
    """The same gallery measurements through Milvus Lite (``--backends milvus``)."""
    out = tmp_path / "gallery.md"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "gallery",
            "--quick",
            "--no-progress",
            "--backends",
            "milvus",
            "--sizes",
            "300,400",
            "--backend-max-size",
            "milvus=300",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-6000:]
    raw = json.loads(out.with_suffix(".json").read_text())
    (backend,) = raw["parts"]["gallery"]["raw"]["backends"]
    # 400 is above --backend-max-size: skipped, and the report says so.
    assert backend["backend"] == "milvus" and backend["tracklets"] == 300
    assert any("not measured at 400" in note for note in raw["parts"]["gallery"]["notes"])
    assert 0.0 <= backend["recall_at_10"] <= 1.0
    assert backend["disk_bytes_per_tracklet"] > 0 and backend["load_s"] > 0
    for table in raw["parts"]["gallery"]["tables"]:
        for row in table["rows"]:
            for column, value in zip(table["columns"], row, strict=True):
                _check_value(table["title"], column, value)
