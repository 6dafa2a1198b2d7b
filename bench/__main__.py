"""``python -m bench``: the benchmark harness.

``python -m bench all`` runs every part and writes docs/benchmarks.md (plus the raw results as
docs/benchmarks.json); ``python -m bench <part>`` runs one part and prints its tables.
``--quick`` is the seconds-long smoke mode CI runs: it keeps the harness working, its numbers
are not results.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import BACKENDS, VARIANTS, BenchConfig, Context
from bench.report import (
    ROOT,
    PartResult,
    command_line,
    json_path_for,
    machine_info,
    print_part,
    write_report,
)

DEFAULT_OUT = ROOT / "docs" / "benchmarks.md"


def _part_runner(name: str) -> Callable[[Context], PartResult]:
    # Imported on demand: one part should not pay for (or need) the others' imports.
    if name == "encoder":
        from bench.encoder import run
    elif name == "preprocessing":
        from bench.preprocessing import run
    elif name == "gallery":
        from bench.gallery import run
    elif name == "http":
        from bench.http_load import run
    elif name == "training":
        from bench.training import run
    elif name == "video":
        from bench.video import run
    elif name == "peer":
        from bench.peer import run
    elif name == "query":
        from bench.query_time import run
    elif name == "gpu":
        from bench.gpu import run
    else:
        raise ValueError(f"unknown part {name!r}")
    return run


PARTS = (
    "encoder",
    "preprocessing",
    "gallery",
    "http",
    "training",
    "video",
    "peer",
    "query",
    "gpu",
)

#: Modules the parts import that the base install lacks, and the extra that brings each.
_EXTRA_OF = {
    "torch": "bench",
    "onnx": "bench",
    "onnxscript": "bench",
    "scipy": "bench",
    "matplotlib": "bench",
    "locust": "bench",
    "pymilvus": "bench",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line naming the extra to install, when ``exc`` is a module one of them brings."""
    extra = _EXTRA_OF.get((exc.name or "").split(".")[0])
    if extra is None:
        return None
    return f"no module named {exc.name!r}: install the {extra} extra: pip install -e '.[{extra}]'"


def _int_list(text: str) -> list[int]:
    try:
        values = [int(item) for item in text.split(",") if item.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected positive integers")
    return values


def _backend_max_sizes(text: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, size = item.partition("=")
        if name not in BACKENDS or not size:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected BACKEND=SIZE with BACKEND one of {', '.join(BACKENDS)}"
            )
        limits[name] = _sizes(size)[0]
    return limits


def _sizes(text: str) -> list[int]:
    from bench.gallery import iter_sizes

    try:
        values = list(iter_sizes(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not values:
        raise argparse.ArgumentTypeError("no gallery size given")
    return values


def _names(allowed: tuple[str, ...]) -> Callable[[str], list[str]]:
    def parse(text: str) -> list[str]:
        names = [item.strip() for item in text.split(",") if item.strip()]
        unknown = sorted(set(names) - set(allowed))
        if unknown or not names:
            raise argparse.ArgumentTypeError(
                f"{text!r}: choose among {', '.join(allowed)} (comma-separated)"
            )
        return names

    return parse


def _shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for item in text.split(","):
        try:
            b, t = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected BxT, e.g. 1x16,32x16,8x128"
            ) from None
        if b < 1 or t < 1:
            raise argparse.ArgumentTypeError(f"{item!r}: B and T must be positive")
        shapes.append((b, t))
    return shapes


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: tiny sizes, seconds per part; checks the harness works (what CI "
        "runs). Its numbers are not results, and it writes a report only with --out",
    )
    common.add_argument(
        "--out",
        type=Path,
        help="markdown report to write; the raw results go beside it with .json. Default for "
        "a full `all` run: docs/benchmarks.md; single parts and --quick print only unless given",
    )
    common.add_argument(
        "--model",
        default=None,
        help="model the served parts (http, query, video) run: 'shipped' (the service's "
        "default model, the default), 'paper' (the paper-sized network, random weights) or an "
        "exported .onnx file. The encoder, preprocessing and gallery parts always measure the "
        "paper-sized network",
    )
    common.add_argument(
        "--workdir",
        type=Path,
        help="scratch folder for the exported model, galleries and request bodies (a 1M "
        "gallery needs ~5 GB); default: a new temporary folder, deleted afterwards",
    )
    common.add_argument(
        "--keep-workdir", action="store_true", help="do not delete the scratch folder"
    )
    common.add_argument("--seed", type=int, default=0, help="seed of every generator (default 0)")
    common.add_argument("--no-progress", action="store_true", help="no progress bars")
    common.add_argument(
        "--min-seconds",
        type=float,
        help="least time spent timing each encoder/preprocessing configuration "
        "(default 3, --quick 0)",
    )
    common.add_argument(
        "--shapes",
        type=_shapes,
        help="encoder: tracklets x frames per call, e.g. 1x16,32x16,8x128 (the default)",
    )
    common.add_argument(
        "--sizes",
        type=_sizes,
        help="gallery: numbers of tracklets, e.g. 10k,100k,1M (the default; 1M takes minutes "
        "and ~5 GB of disk per backend)",
    )
    common.add_argument(
        "--backends",
        type=_names(BACKENDS),
        help="gallery: backends measured through the gallery interface, e.g. faiss,milvus; "
        "faiss-hnsw is the faiss backend with REID_FAISS_INDEX=hnsw (default faiss,faiss-hnsw; "
        "milvus runs Milvus Lite in the scratch folder and is skipped with a "
        "note when the milvus extra is not installed)",
    )
    common.add_argument(
        "--backend-max-size",
        type=_backend_max_sizes,
        help="gallery: largest size measured on a backend, e.g. milvus=100k (Milvus Lite keeps "
        "the collection in memory: ~18 GB at 1M); larger sizes are skipped with a note",
    )
    common.add_argument(
        "--queries",
        type=int,
        help="gallery: query embeddings per size for latency and recall (default 200)",
    )
    common.add_argument(
        "--gallery-budget",
        type=float,
        help="gallery: seconds each backend search measurement may take before it stops "
        "early (at least 10 queries; slow backends at 1M would take hours). Default 60",
    )
    common.add_argument(
        "--no-index-comparison",
        action="store_true",
        help="gallery: leave out the raw FAISS exact vs HNSW vs IVF table (minutes at 1M)",
    )
    common.add_argument(
        "--no-rerank-rows",
        action="store_true",
        help="gallery: time plain searches only, not re-scoring (which needs a model export)",
    )
    common.add_argument(
        "--http-gallery-size",
        type=int,
        help="http: tracklets prefilled into the served gallery (default 100000)",
    )
    common.add_argument(
        "--concurrency",
        type=_int_list,
        help="http: numbers of concurrent clients, e.g. 1,8,32 (the default)",
    )
    common.add_argument(
        "--http-seconds",
        type=float,
        help="http: measured seconds per load point, after a warm-up (default 20)",
    )
    common.add_argument(
        "--variants",
        type=_names(VARIANTS),
        help="training: network variants, e.g. astpn,atpn,aspn,rnncnn (the default)",
    )
    common.add_argument(
        "--train-iterations",
        type=int,
        help="training: mini-batches per variant (default 12)",
    )

    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks of the re-id model and service. `all` runs every part and "
        "writes docs/benchmarks.md and docs/benchmarks.json; a part's name runs that part and "
        "prints its tables.",
    )
    sub = parser.add_subparsers(dest="part", required=True, metavar="PART")
    helps = {
        "all": "every part below, one report",
        "encoder": "the network alone: PyTorch eager vs ONNX Runtime, FLOPs, share of peak",
        "preprocessing": "decode, resize, colour, optical flow (ours vs Farneback and DIS)",
        "gallery": "add/search/memory/disk/reopen per backend; exact vs HNSW vs IVF recall",
        "http": "enroll and query over HTTP with 1/8/32 clients, micro-batching on and off",
        "training": "pairs/s of the trainer for each variant",
        "video": "video ingestion (decode + crop + preprocess + embed), 1280x720, 10 tracks",
        "peer": "the shipped model vs a frame-wise ImageNet MobileNetV2 peer, same frames",
        "query": "where one query's time goes: the served timings vs the same work in-process",
        "gpu": "the encoder on CUDA, FAISS on the GPU and HTTP with both, beside the CPU (run "
        "it on a GPU machine: `timeout 900 python -m bench gpu --out docs/benchmarks-gpu.md`)",
    }
    for name, text in helps.items():
        sub.add_parser(name, parents=[common], help=text, description=text)
    return parser


def make_config(args: argparse.Namespace, workdir: Path) -> BenchConfig:
    config = BenchConfig.defaults(args.quick, workdir)
    config.progress = not args.no_progress
    config.seed = args.seed
    if args.model is not None:
        config.model = args.model
    overrides = {
        "min_seconds": args.min_seconds,
        "encoder_shapes": args.shapes,
        "gallery_sizes": args.sizes,
        "backends": args.backends,
        "backend_max_sizes": args.backend_max_size,
        "gallery_queries": args.queries,
        "gallery_budget_s": args.gallery_budget,
        "http_gallery_size": args.http_gallery_size,
        "concurrency": args.concurrency,
        "http_seconds": args.http_seconds,
        "variants": args.variants,
        "train_iterations": args.train_iterations,
    }
    config.index_comparison = not args.no_index_comparison
    config.rerank_rows = not args.no_rerank_rows
    for key, value in overrides.items():
        if value is not None:
            setattr(config, key, value)
    for key in ("gallery_queries", "http_gallery_size", "train_iterations"):
        if getattr(config, key) < 1:
            raise SystemExit(f"--{key.replace('_', '-')} must be at least 1")
    return config


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    out: Path | None = args.out
    if out is None and args.part == "all" and not args.quick:
        out = DEFAULT_OUT
    if out is not None and args.quick and out.resolve() == DEFAULT_OUT.resolve():
        raise SystemExit(
            f"refusing to write smoke-mode numbers into {DEFAULT_OUT}: use --out elsewhere"
        )
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="reid-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = make_config(args, workdir)
    info = machine_info(command_line(argv))
    context = Context(config)
    parts: list[PartResult] = []
    failed: list[str] = []
    names = PARTS if args.part == "all" else (args.part,)
    try:
        for name in names:
            t0 = time.perf_counter()
            try:
                result = _part_runner(name)(context)
            except ModuleNotFoundError as exc:
                if (hint := missing_extra(exc)) is None:
                    raise
                print(f"python -m bench {name}: error: {hint}", file=sys.stderr)
                return 1
            except Exception as exc:
                # One broken part must not throw away the others' minutes of measurements:
                # report it (in the report too) and fail at the end.
                traceback.print_exc()
                failed.append(name)
                result = PartResult(
                    name=name,
                    title=f"{name}: FAILED",
                    description=f"This part failed: {type(exc).__name__}: {exc}",
                )
            result.seconds = time.perf_counter() - t0
            parts.append(result)
            print_part(result)
    finally:
        if not args.keep_workdir and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    if out is not None:
        markdown, raw = write_report(out, info, parts, args.quick)
        print(f"wrote {markdown} and {raw}", file=sys.stderr)
    elif args.part == "all":
        print(
            f"no report written (smoke mode); pass --out PATH to write one "
            f"(raw results go to {json_path_for(Path('PATH'))})",
            file=sys.stderr,
        )
    if failed:
        print(f"failed parts: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
