"""Machine description and markdown tables: what every benchmark part hands back and how the
report (``docs/benchmarks.md`` + the JSON of raw results beside it) is written.

A number is only meaningful with the machine it was taken on, so the header records the CPU,
memory, GPU, OS, Python and the versions of the packages that do the work, the date and the
exact command; the load average at the start is recorded too because the project's machines are
shared with other jobs.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions change the numbers (the ones doing the measured work).
KEY_PACKAGES = (
    "torch",
    "onnxruntime",
    "onnxruntime-gpu",
    "faiss-cpu",
    "faiss-gpu",
    "faiss-gpu-cu12",
    "numpy",
    "opencv-python-headless",
    "fastapi",
    "uvicorn",
    "locust",
    "pymilvus",
    "milvus-lite",
)

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ tables


@dataclass
class Table:
    """One result table. ``rows`` hold raw values (numbers are formatted when rendered), so the
    JSON dump keeps full precision."""

    title: str
    columns: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *values: Any) -> None:
        if len(values) != len(self.columns):
            raise ValueError(
                f"table {self.title!r}: row has {len(values)} values for {len(self.columns)} "
                f"columns {self.columns}"
            )
        self.rows.append(list(values))

    def to_markdown(self) -> str:
        lines = [f"#### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        for row in self.rows:
            lines.append("| " + " | ".join(format_value(v) for v in row) + " |")
        for note in self.notes:
            lines.extend(["", note])
        return "\n".join(lines) + "\n"


@dataclass
class PartResult:
    """What one benchmark part returns: tables for people, ``raw`` for the JSON dump."""

    name: str
    title: str
    description: str
    tables: list[Table] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_markdown(self) -> str:
        parts = [f"### {self.title}", "", self.description.strip(), ""]
        parts.extend(f"{note}\n" for note in self.notes)
        parts.extend(table.to_markdown() for table in self.tables)
        parts.append(f"*Part took {self.seconds:.1f} s.*\n")
        return "\n".join(parts)


def doc_description(doc: str | None) -> str:
    """A part module's docstring after its first paragraph: the report's description of it."""
    return (doc or "").split("\n\n", 1)[-1].strip()


def format_value(value: Any) -> str:
    """Three significant digits for floats (enough to compare rows, no false precision)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        magnitude = abs(value)
        if magnitude >= 1000:
            return f"{value:,.0f}".replace(",", " ")
        if magnitude >= 0.01:
            return f"{value:.3g}"
        return f"{value:.2e}"
    return str(value).replace("|", "\\|")


# ----------------------------------------------------------------------------------- machine


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _cpuinfo_field(name: str) -> str | None:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.split(":", 1)[0].strip() == name:
            return line.split(":", 1)[1].strip()
    return None


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def memory_bytes() -> int | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_clock_ghz() -> tuple[float | None, str]:
    """The clock used for the peak estimate and where it came from. The maximum frequency from
    sysfs when the kernel exposes it; otherwise the current ``cpu MHz`` of /proc/cpuinfo (a VM
    often shows only that, and it may be below the turbo clock)."""
    max_khz = _read("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq").strip()
    if max_khz.isdigit():
        return int(max_khz) / 1e6, "cpufreq cpuinfo_max_freq"
    mhz = _cpuinfo_field("cpu MHz")
    if mhz:
        return float(mhz) / 1000, "/proc/cpuinfo 'cpu MHz' (current clock; no cpufreq in sysfs)"
    return None, "unknown"


@dataclass(frozen=True)
class PeakEstimate:
    gflops: float | None
    explanation: str


def peak_fp32_gflops() -> PeakEstimate:
    """Peak fp32 FLOP/s = usable CPUs x clock x FLOPs per cycle, with FLOPs per cycle =
    vector lanes (16 for AVX-512, 8 for AVX2/AVX, 4 for SSE) x 2 (FMA) x 2 FMA pipes.

    Two FMA pipes is what current server cores have; AMD Zen 4 (family 0x19) runs AVX-512 on
    256-bit pipes, so it counts as 8 lanes. Logical CPUs are counted as cores: with SMT two
    logical CPUs share one core's pipes, so the estimate is then twice too high; and the clock
    is only as good as what the kernel shows (a VM often shows the nominal clock, not turbo).
    Good for "what fraction of the hardware does this use", not for more digits.
    """
    flags = cpu_flags()
    clock, clock_source = cpu_clock_ghz()
    family = _cpuinfo_field("cpu family")
    vendor = _cpuinfo_field("vendor_id") or ""
    if "avx512f" in flags:
        lanes, isa = 16, "AVX-512"
        if vendor == "AuthenticAMD" and family == "25":
            lanes, isa = 8, "AVX-512 on 256-bit pipes (AMD Zen 4)"
    elif "avx2" in flags or "avx" in flags:
        lanes, isa = 8, "AVX2" if "avx2" in flags else "AVX"
    elif flags:
        lanes, isa = 4, "SSE"
    else:
        return PeakEstimate(None, "no /proc/cpuinfo flags: peak not estimated")
    fma = 2 if "fma" in flags or "avx512f" in flags else 1
    per_cycle = lanes * fma * 2
    cpus = usable_cpus()
    if clock is None:
        return PeakEstimate(None, f"{isa}: clock unknown, peak not estimated")
    peak = cpus * clock * per_cycle
    caveat = (
        "SMT siblings would count as cores; the maximum clock is not sustained under load"
        if clock_source.startswith("cpufreq")
        else "the clock is what the kernel reports now, and turbo clocks above it would make "
        "the real peak higher and the percentages lower"
    )
    text = (
        f"peak fp32 ≈ {cpus} CPUs x {clock:.2f} GHz ({clock_source}) x {per_cycle} FLOP/cycle "
        f"({isa}: {lanes} lanes x {'2 (FMA)' if fma == 2 else '1 (no FMA)'} x 2 pipes) "
        f"= {peak:.0f} GFLOP/s; an estimate ({caveat})"
    )
    return PeakEstimate(peak, text)


def gpu_description() -> str | None:
    """The GPU(s) torch or nvidia-smi can see; None without one."""
    try:
        import torch

        if torch.cuda.is_available():
            names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            return ", ".join(names) + f" (CUDA {torch.version.cuda})"
    except ImportError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return out.replace("\n", "; ") or None
    except (OSError, subprocess.SubprocessError):
        return None


def os_description() -> str:
    pretty = ""
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            pretty = line.split("=", 1)[1].strip().strip('"')
    return f"{pretty or platform.system()} (kernel {platform.release()})"


def package_versions() -> dict[str, str]:
    versions = {}
    for name in KEY_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def git_revision() -> str | None:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return head + (" (with uncommitted changes)" if dirty else "")


def machine_info(command: str) -> dict[str, Any]:
    memory = memory_bytes()
    peak = peak_fp32_gflops()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": cpu_model(),
        "cpus": usable_cpus(),
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "gpu": gpu_description(),
        "os": os_description(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "git": git_revision(),
        "load_average": [round(x, 2) for x in load] if load else None,
        "peak_fp32_gflops": peak.gflops,
        "peak_explanation": peak.explanation,
    }


def command_line(argv: list[str]) -> str:
    return shlex.join(["python", "-m", "bench", *argv])


def machine_markdown(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items())
    rows = [
        ("CPU", f"{info['cpu']}, {info['cpus']} usable CPUs"),
        ("memory", f"{info['memory_gib']} GiB" if info["memory_gib"] else "unknown"),
        ("GPU", info["gpu"] or "none"),
        ("OS", info["os"]),
        ("Python", info["python"]),
        ("packages", packages),
        ("date (UTC)", info["date"]),
        ("command", f"`{info['command']}`"),
        ("git revision", info["git"] or "unknown"),
        (
            "load average at start",
            " / ".join(str(x) for x in info["load_average"]) + " (1/5/15 min)"
            if info["load_average"]
            else "unknown",
        ),
        ("CPU peak estimate", info["peak_explanation"]),
    ]
    lines = ["| | |", "|---|---|"]
    lines.extend(f"| {key} | {str(value).replace('|', '/')} |" for key, value in rows)
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ report

HEADER = """\
# Benchmarks

Generated by the benchmark harness (`bench/`, see [benchmarking.md](benchmarking.md) for what each
part measures and how to rerun it). Every table below comes from the one run described in the
machine table and is written by the harness, never by hand; a closing "Reading the numbers"
section, where there is one, was written from these tables after the run (a rerun writes the file
anew without it). Rerun `python -m bench all` on your own hardware
before sizing a deployment: the numbers scale with cores, memory bandwidth and the GPU, and a
shared machine makes them noisy.
"""

SMOKE_WARNING = """\
> **Smoke run (`--quick`)**: tiny sizes that only check the harness works. These numbers are
> not benchmark results; do not quote them.
"""


def render_markdown(info: dict[str, Any], parts: list[PartResult], quick: bool) -> str:
    chunks = [HEADER]
    if quick:
        chunks.append(SMOKE_WARNING)
    chunks.extend(["## Machine\n", machine_markdown(info), "## Results\n"])
    chunks.extend(part.to_markdown() for part in parts)
    return "\n".join(chunks)


def json_path_for(markdown_path: Path) -> Path:
    return markdown_path.with_suffix(".json")


def _jsonable(value: Any) -> Any:
    """NumPy scalars and arrays, paths and tuples into plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_report(
    path: Path, info: dict[str, Any], parts: list[PartResult], quick: bool
) -> tuple[Path, Path]:
    """Write the markdown to ``path`` and the raw results to ``path`` with ``.json``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_markdown(info, parts, quick))
    raw = {
        "quick": quick,
        "machine": info,
        "parts": {
            part.name: {
                "title": part.title,
                "seconds": part.seconds,
                "notes": part.notes,
                "tables": [asdict(table) for table in part.tables],
                "raw": part.raw,
            }
            for part in parts
        },
    }
    json_path = json_path_for(path)
    json_path.write_text(json.dumps(_jsonable(raw), indent=1, allow_nan=False) + "\n")
    return path, json_path


def print_part(part: PartResult, stream: Any = None) -> None:
    """The part's tables on the terminal (markdown reads fine there)."""
    stream = stream or sys.stdout
    print(part.to_markdown(), file=stream, flush=True)
