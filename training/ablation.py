"""The paper's ablation (Table 2 / Fig. 5 shape): train and test every variant on N splits.

``python -m training ablate --dataset synthetic --root DIR --splits 3 --out runs/ablation``
trains rnncnn, aspn, atpn and astpn on splits 0..N-1 with identical settings and seeds, tests
each final model (``last.pt``: no model selection on the test persons, so the comparison is
unbiased) and writes ``table.md`` (rank-1/5/10/20 and mAP, mean ± std over splits),
``results.json`` and ``cmc.png``. A run whose ``result.json`` already exists is not trained
again, so an interrupted ablation continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from training.cli import add_common_arguments, add_settings, parse_key_values, settings_from
from training.config import TrainConfig
from training.evaluate import (
    EmbedOptions,
    evaluate_sequences,
    format_summary_table,
    resolve_device,
    torch_embed_fn,
)
from training.metrics import mean_std_over_splits
from training.sequences import load_sequences
from training.train import train_model

#: Train settings that the ablation sets itself for every run.
_PER_RUN = (
    "variant",
    "split",
    "out",
    "train",
    "val",
    "validation",
    "resume",
    "export",
    "export_name",
    "export_version",
    "export_from",
    "checkpoint_every",
    "validate_every",
)

PAPER_NAMES = {"rnncnn": "RNN-CNN", "aspn": "ASPN", "atpn": "ATPN", "astpn": "ASTPN"}
COLOUR_BASELINE_LABEL = "colour histogram"


def _summarise_baseline(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std of the baseline's rank-k and mAP values (it reports points, not a curve)."""
    keys = [k for k in results[0] if k.startswith("rank") or k == "mAP"]
    summary: dict[str, Any] = {}
    for key in keys:
        values = np.array([float(r[key]) for r in results])
        summary[key] = {"mean": float(values.mean()), "std": float(values.std())}
    summary["num_splits"] = len(results)
    return summary


def run_ablation(
    base: TrainConfig,
    variants: list[str],
    num_splits: int,
    out: str | Path,
    *,
    include_colour_baseline: bool = True,
) -> dict[str, Any]:
    """Train + test each variant on splits 0..num_splits-1; write the table, JSON and plot."""
    from training.checkpoint import load_checkpoint
    from training.color_baseline import evaluate_color_baseline
    from training.datasets import build_dataset
    from training.plots import plot_cmc

    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = base.cache_dir if base.cache_dir is not None else out_dir / "cache"
    dataset = build_dataset(base.dataset, base.root, **base.dataset_options)
    if num_splits > dataset.num_splits:
        raise ValueError(f"{base.dataset} has {dataset.num_splits} splits, asked for {num_splits}")
    device = resolve_device(base.device)

    per_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    colour: list[dict[str, Any]] = []
    for split_index in range(num_splits):
        split = dataset.split(split_index)
        query, gallery = list(split.query), list(split.gallery)
        test_seqs: list[Any] | None = None
        for variant in variants:
            run_dir = out_dir / variant / f"split{split_index}"
            result_path = run_dir / "result.json"
            if result_path.exists():
                per_variant[variant].append(json.loads(result_path.read_text()))
                print(f"[{variant} split {split_index}] already done", file=sys.stderr)
                continue
            config = replace(
                base,
                variant=variant,
                split=split_index,
                out=run_dir,
                cache_dir=cache_dir,
                validation="none",
                resume=None,
                export=None,
            )
            trained = train_model(config)
            if test_seqs is None:
                test_seqs = load_sequences(
                    [*query, *gallery],
                    cache_dir=cache_dir,
                    workers=base.workers,
                    progress=base.progress,
                    desc=f"preprocessing test split {split_index}",
                    spec=base.input_spec(),
                )
            assert trained.last_checkpoint is not None
            model, _ = load_checkpoint(trained.last_checkpoint)
            result = evaluate_sequences(
                torch_embed_fn(model.to(device), device),
                query,
                gallery,
                test_seqs[: len(query)],
                test_seqs[len(query) :],
                base.embed,
                crop_size=base.crop_size,
            )
            result.update(
                split=split_index,
                checkpoint=str(trained.last_checkpoint),
                iterations=trained.iterations,
                epochs=trained.epochs_completed,
                train_seconds=trained.train_seconds,
                pairs_per_second=trained.pairs_per_second,
            )
            result_path.write_text(json.dumps(result, indent=2))
            per_variant[variant].append(result)
            print(
                f"[{variant} split {split_index}] rank-1 {100 * result['ranks']['rank1']:.1f}% "
                f"mAP {100 * result['mAP']:.1f}%",
                file=sys.stderr,
            )
        if include_colour_baseline:
            colour.append(dict(evaluate_color_baseline(query, gallery), split=split_index))

    rows = {PAPER_NAMES.get(v, v): mean_std_over_splits(per_variant[v]) for v in variants}
    if colour and len(colour) == num_splits:
        rows[COLOUR_BASELINE_LABEL] = _summarise_baseline(colour)
    title = (
        f"{base.dataset}, {num_splits} split(s), CMC % (mean ± std over splits); "
        f"models tested at the end of training (last.pt)"
    )
    table = f"# Ablation on {base.dataset}\n\n{title}\n\n{format_summary_table(rows)}\n"
    (out_dir / "table.md").write_text(table)

    curves = {
        label: summary["cmc_mean"] for label, summary in rows.items() if "cmc_mean" in summary
    }
    plot_cmc(curves, out_dir / "cmc.png", title=f"Ablation on {base.dataset}")
    results = {
        "dataset": base.dataset,
        "root": str(base.root),
        "num_splits": num_splits,
        "variants": variants,
        "command": base.command,
        "train_config": {
            k: str(v) if isinstance(v, Path) else v for k, v in vars(base).items() if k != "embed"
        },
        "embed": vars(base.embed),
        "per_variant": per_variant,
        "colour_baseline": colour,
        "summary": rows,
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(table)
    return results


def register(subparsers: argparse._SubParsersAction) -> None:
    from model.choices import VARIANTS

    parser = subparsers.add_parser(
        "ablate",
        description=(
            "Train every variant on splits 0..N-1 with the same settings and seeds, test the "
            "final model of each run, and write OUT/table.md (rank-1/5/10/20, mAP as mean ± std "
            "over splits, plus the colour-histogram baseline on the same test sets), "
            "OUT/results.json and OUT/cmc.png. Finished runs are skipped on re-run."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument("--splits", type=int, default=3, help="number of splits (0..N-1)")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated variants to compare"
    )
    parser.add_argument("--out", required=True, help="output folder")
    add_settings(parser, TrainConfig, skip=_PER_RUN)
    add_settings(parser, EmbedOptions)
    parser.add_argument(
        "--no-colour-baseline",
        action="store_true",
        help="leave the colour-histogram baseline row out",
    )
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from model.choices import VARIANTS

    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise SystemExit(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    base = settings_from(
        TrainConfig,
        args,
        dataset=args.dataset,
        root=args.root,
        dataset_options=parse_key_values(args.dataset_option),
        device=args.device,
        threads=args.threads,
        cache_dir=args.cache_dir,
        workers=args.workers,
        embed=settings_from(EmbedOptions, args),
        command="python -m training " + shlex.join(sys.argv[1:]),
        progress=not args.no_progress,
    )
    run_ablation(
        base, variants, args.splits, args.out, include_colour_baseline=not args.no_colour_baseline
    )
    return 0
