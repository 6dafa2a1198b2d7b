"""Evaluate a trained model: CMC and mAP on a dataset's test protocol, over one or more splits.

Every test sequence is embedded on its own by *self-pairing* (paper §3.3: the sequence is
paired with itself), which gives two embeddings, one per attention role (probe = row-wise,
gallery = column-wise scores of tanh(P U P^T)). Queries use ``--query-role``, the gallery
``--gallery-role``; the report also lists CMC for every role combination, so the role decision
the service relies on (the model card's ``roles``) can be measured on the same run.

The model is either a PyTorch checkpoint (``--checkpoint``) or an exported ONNX model
(``--onnx``), the latter run through ONNX Runtime exactly as the service runs it.

``--rerank 10,50,100`` also scores, for each K, the ranking the service gives with pair-wise
re-scoring: the K nearest gallery sequences by self-paired distance are re-ordered by the joint
attention distance of the (query, candidate) pair, computed from the stored per-step features in
float16 as the gallery keeps them; the rest of the gallery keeps its order behind them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from model.preprocessing import CROP_SIZE, InputSpec
from training.cli import (
    add_common_arguments,
    add_settings,
    parse_int_list,
    parse_key_values,
    settings_from,
)
from training.embedding import (
    ROLES,
    EmbedFn,
    EmbedOptions,
    PairScoreFn,
    embed_sequences,
    onnx_embed_fn,
    onnx_pair_score_fn,
    rerank_distances,
    torch_embed_fn,
    torch_pair_score_fn,
)
from training.metrics import (
    DEFAULT_RANKS,
    cmc_at,
    euclidean_distances,
    evaluate_rankings_detailed,
    mean_std_over_splits,
)
from training.sequences import load_sequences

# ----------------------------------------------------------------------------- protocol


def protocol_sets(split: Any, all_identities: bool = False) -> tuple[list[Any], list[Any]]:
    """(query, gallery) tracklets of a split; ``all_identities`` adds the training persons.

    Used for cross-dataset evaluation, where none of the dataset's persons were trained on. It
    needs query and gallery cameras to be disjoint (iLIDS-VID, PRID-2011, the synthetic
    set): each training tracklet joins the side whose cameras it comes from.
    """
    query, gallery = list(split.query), list(split.gallery)
    if not all_identities:
        return query, gallery
    q_cams = {t.camera for t in query}
    g_cams = {t.camera for t in gallery}
    if q_cams & g_cams:
        raise ValueError(
            "--all-test-identities needs disjoint query and gallery cameras; this protocol "
            f"uses cameras {sorted(q_cams)} for queries and {sorted(g_cams)} for the gallery"
        )
    for t in split.train:
        if t.camera in q_cams:
            query.append(t)
        elif t.camera in g_cams:
            gallery.append(t)
    return query, gallery


def score_embeddings(
    query_embeddings: np.ndarray,
    gallery_embeddings: np.ndarray,
    query: Sequence[Any],
    gallery: Sequence[Any],
    ranks: Sequence[int] = DEFAULT_RANKS,
    max_rank: int = 50,
) -> dict[str, Any]:
    """CMC/mAP of Euclidean rankings (the model card's distance)."""
    distmat = euclidean_distances(query_embeddings, gallery_embeddings)
    return score_distances(distmat, query, gallery, ranks, max_rank)


def score_distances(
    distmat: np.ndarray,
    query: Sequence[Any],
    gallery: Sequence[Any],
    ranks: Sequence[int] = DEFAULT_RANKS,
    max_rank: int = 50,
) -> dict[str, Any]:
    """CMC/mAP of a (query x gallery) distance matrix."""
    result = evaluate_rankings_detailed(
        distmat,
        np.array([t.identity for t in query]),
        np.array([t.identity for t in gallery]),
        np.array([t.camera for t in query]),
        np.array([t.camera for t in gallery]),
        max_rank=max_rank,
    )
    return {
        "cmc": result.cmc.tolist(),
        "ranks": {f"rank{r}": v for r, v in cmc_at(result.cmc, ranks).items()},
        "mAP": result.mAP,
        "num_query": len(query),
        "num_gallery": len(gallery),
        "num_valid_queries": result.num_valid_queries,
        "num_skipped_queries": result.num_skipped_queries,
    }


def evaluate_sequences(
    embed: EmbedFn,
    query: Sequence[Any],
    gallery: Sequence[Any],
    query_sequences: Sequence[np.ndarray],
    gallery_sequences: Sequence[np.ndarray],
    options: EmbedOptions = EmbedOptions(),
    progress: bool = False,
    rerank: Sequence[int] = (),
    pair_score: PairScoreFn | None = None,
    crop_size: tuple[int, int] = CROP_SIZE,
) -> dict[str, Any]:
    """Embed both sides and score them; ``role_table`` has rank-1/mAP for all four role pairs,
    ``rerank`` one result per K of pair-wise re-scoring (needs ``pair_score``)."""
    if rerank and pair_score is None:
        raise ValueError("rerank needs a pair_score function")
    start = time.perf_counter()
    q_emb = embed_sequences(
        embed,
        query_sequences,
        max_frames=options.max_frames,
        flip=options.flip,
        progress=progress,
        desc="embedding queries",
        crop_size=crop_size,
    )
    g_emb = embed_sequences(
        embed,
        gallery_sequences,
        max_frames=options.max_frames,
        flip=options.flip,
        progress=progress,
        desc="embedding gallery",
        crop_size=crop_size,
    )
    result = score_embeddings(
        q_emb[options.query_role], g_emb[options.gallery_role], query, gallery
    )
    table = {}
    for q_role in ROLES:
        for g_role in ROLES:
            scored = score_embeddings(q_emb[q_role], g_emb[g_role], query, gallery)
            table[f"{q_role}->{g_role}"] = {"rank1": scored["ranks"]["rank1"], "mAP": scored["mAP"]}
    result["role_table"] = table
    if rerank:
        base = euclidean_distances(q_emb[options.query_role], g_emb[options.gallery_role])
        result["rerank"] = {}
        for k in rerank:
            t0 = time.perf_counter()
            distmat = rerank_distances(base, q_emb["features"], g_emb["features"], k, pair_score)
            scored = score_distances(distmat, query, gallery)
            scored["seconds"] = time.perf_counter() - t0
            result["rerank"][str(k)] = scored
    result["query_role"] = options.query_role
    result["gallery_role"] = options.gallery_role
    result["seconds"] = time.perf_counter() - start
    return result


# ----------------------------------------------------------------------------- runs over splits


@dataclass
class EvalConfig:
    """Everything ``python -m training evaluate`` does, as a Python API."""

    dataset: str
    root: str | Path
    checkpoints: list[str] = field(default_factory=list)  # may contain {i}: the split index
    onnx: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    splits: list[int] = field(default_factory=lambda: [0])
    dataset_options: dict[str, Any] = field(default_factory=dict)
    embed: EmbedOptions = field(default_factory=EmbedOptions)
    rerank: list[int] = field(default_factory=list)  # K values of pair-wise re-scoring
    all_test_identities: bool = False
    device: str = "auto"
    threads: int | None = None
    cache_dir: str | Path | None = None
    workers: int = 1
    report: str | Path | None = None
    plot: str | Path | None = None
    progress: bool = True


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but CUDA is not available")
    return device


def _pattern(path: str, split: int) -> str:
    return path.replace("{i}", str(split)).replace("{split}", str(split))


def _default_label(path: str) -> str:
    """The run's folder: ``runs/astpn/split{i}/best.pt`` -> ``astpn``; a bare file -> its stem."""
    folders = [part for part in Path(path).parent.parts if "{" not in part and part != "."]
    return folders[-1] if folders else Path(path).stem


def _model_functions(
    kind: str, source: str, config: EvalConfig, device: str
) -> tuple[EmbedFn, PairScoreFn | None, InputSpec]:
    """Embedding and pair-scoring functions of one model file, and the input it takes."""
    if kind == "checkpoint":
        from training.checkpoint import load_checkpoint

        model, _ = load_checkpoint(source)
        embed = torch_embed_fn(model.to(device), device)
        return embed, torch_pair_score_fn(model, device), model.input_spec
    from model.card import card_path_for, load_card

    spec = InputSpec.from_config(load_card(card_path_for(source))["preprocessing"])
    pair_score = onnx_pair_score_fn(source, config.threads) if config.rerank else None
    return onnx_embed_fn(source, config.threads), pair_score, spec


def evaluate_runs(config: EvalConfig) -> dict[str, Any]:
    """Evaluate every model source on every split; returns (and optionally writes) the report."""
    from training.datasets import build_dataset

    sources = [("checkpoint", p) for p in config.checkpoints] + [("onnx", p) for p in config.onnx]
    if not sources:
        raise ValueError("give at least one --checkpoint or --onnx")
    if config.labels and len(config.labels) != len(sources):
        raise ValueError("--label must be given once per --checkpoint/--onnx (in that order)")
    labels = config.labels or [_default_label(p) for _, p in sources]
    if len(set(labels)) != len(labels):
        labels = [f"{label} ({i})" for i, label in enumerate(labels)]
    device = resolve_device(config.device) if config.checkpoints else "cpu"
    if config.threads and config.checkpoints:
        import torch

        torch.set_num_threads(config.threads)

    dataset = build_dataset(config.dataset, config.root, **config.dataset_options)
    runs: list[dict[str, Any]] = [
        {"label": label, "kind": kind, "source": path, "per_split": []}
        for label, (kind, path) in zip(labels, sources, strict=True)
    ]
    for split_index in config.splits:
        if not 0 <= split_index < dataset.num_splits:
            raise ValueError(f"split {split_index} out of range: {dataset.num_splits} splits")
        split = dataset.split(split_index)
        query, gallery = protocol_sets(split, config.all_test_identities)
        loaded: dict[InputSpec, list[np.ndarray]] = {}
        for run, (kind, path) in zip(runs, sources, strict=True):
            source = _pattern(path, split_index)
            embed, pair_score, spec = _model_functions(kind, source, config, device)
            if spec not in loaded:
                loaded[spec] = load_sequences(
                    [*query, *gallery],
                    cache_dir=config.cache_dir,
                    workers=config.workers,
                    desc=f"preprocessing split {split_index}",
                    progress=config.progress,
                    spec=spec,
                )
            sequences = loaded[spec]
            result = evaluate_sequences(
                embed,
                query,
                gallery,
                sequences[: len(query)],
                sequences[len(query) :],
                config.embed,
                progress=config.progress,
                rerank=config.rerank,
                pair_score=pair_score,
                crop_size=spec.crop_size,
            )
            result.update(split=split_index, source=source)
            run["per_split"].append(result)
            ranks = result["ranks"]
            print(
                f"[{run['label']}] split {split_index}: "
                + " ".join(f"R{k[4:]}={100 * v:.1f}" for k, v in ranks.items())
                + f" mAP={100 * result['mAP']:.1f}"
                + (
                    f" ({result['num_skipped_queries']} queries skipped)"
                    if result["num_skipped_queries"]
                    else ""
                ),
                file=sys.stderr,
            )
            for k, scored in result.get("rerank", {}).items():
                print(
                    f"[{run['label']}] split {split_index} re-scoring top {k}: "
                    + " ".join(f"R{r[4:]}={100 * v:.1f}" for r, v in scored["ranks"].items())
                    + f" mAP={100 * scored['mAP']:.1f}",
                    file=sys.stderr,
                )
    for run in runs:
        run["summary"] = mean_std_over_splits(run["per_split"])
        if config.rerank:
            run["rerank_summary"] = {
                str(k): mean_std_over_splits([r["rerank"][str(k)] for r in run["per_split"]])
                for k in config.rerank
            }
    report = {
        "dataset": config.dataset,
        "root": str(config.root),
        "splits": list(config.splits),
        "all_test_identities": config.all_test_identities,
        "embed": asdict(config.embed),
        "runs": runs,
    }
    if config.report:
        path = Path(config.report)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2))
    if config.plot:
        plot_report(report, config.plot)
    return report


def plot_report(report: dict[str, Any], out_path: str | Path) -> Path:
    """CMC plot of every run in a report (mean over splits, std band when several splits)."""
    from training.plots import plot_cmc

    curves, spreads = {}, {}
    for run in report["runs"]:
        results = {run["label"]: run["per_split"]}
        for k in run.get("rerank_summary", {}):
            results[f"{run['label']} + re-scoring top {k}"] = [
                r["rerank"][k] for r in run["per_split"]
            ]
        for label, per_split in results.items():
            stacked = np.array([r["cmc"] for r in per_split])
            curves[label] = stacked.mean(0)
            if len(stacked) > 1:
                spreads[label] = stacked.std(0)
    title = f"CMC on {report['dataset']} ({len(report['splits'])} split(s))"
    return plot_cmc(curves, out_path, title=title, spreads=spreads)


def format_summary_table(
    rows: dict[str, dict[str, Any]], ranks: Sequence[int] = DEFAULT_RANKS
) -> str:
    """Markdown table, one row per label: rank-k and mAP as mean ± std (%) over splits."""
    header = "| model | " + " | ".join(f"rank-{r}" for r in ranks) + " | mAP |"
    lines = [header, "|" + "---|" * (len(ranks) + 2)]
    for label, summary in rows.items():
        cells = []
        for key in [*(f"rank{r}" for r in ranks), "mAP"]:
            stat = summary[key]
            cells.append(f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        description=(
            "Embed every test sequence by self-pairing (central crop, first --max-frames "
            "frames), rank the gallery by Euclidean distance and report CMC (ranks 1/5/10/20 "
            "and the full curve) and mAP, as mean ± std over the given splits. Gallery entries "
            "of the query's own identity in the query's own camera are excluded, as in "
            "torchreid. Cross-dataset: pass a checkpoint trained elsewhere with this "
            "dataset's --dataset/--root."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser)
    parser.add_argument(
        "--splits",
        type=parse_int_list,
        default=[0],
        help="comma-separated split indices, e.g. 0,1,2",
    )
    parser.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="PyTorch checkpoint; '{i}' is replaced by the split index, e.g. "
        "runs/x/split{i}/best.pt (repeatable: one run each, overlaid in "
        "the plot)",
    )
    parser.add_argument(
        "--onnx",
        action="append",
        default=[],
        help="exported ONNX model evaluated through ONNX Runtime, as the service "
        "runs it; '{i}' as for --checkpoint (repeatable)",
    )
    parser.add_argument(
        "--label",
        action="append",
        default=[],
        help="name of each run in the table and plot, in --checkpoint then "
        "--onnx order (default: the checkpoint's folder name)",
    )
    add_settings(parser, EmbedOptions)
    parser.add_argument(
        "--all-test-identities",
        action="store_true",
        help="also test on the split's training persons (cross-dataset "
        "evaluation of a model trained on another dataset)",
    )
    parser.add_argument(
        "--rerank",
        type=parse_int_list,
        default=[],
        help="comma-separated K values, e.g. 10,50,100: also report CMC/mAP when each query's K "
        "nearest gallery sequences are re-scored pair by pair with the joint attention, as "
        "the service's `rerank` does (ONNX models need their .pair.onnx beside them)",
    )
    parser.add_argument("--report", default=None, help="write the full report (JSON) here")
    parser.add_argument("--plot", default=None, help="write a CMC plot (PNG) here")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    config = EvalConfig(
        dataset=args.dataset,
        root=args.root,
        checkpoints=args.checkpoint,
        onnx=args.onnx,
        labels=args.label,
        splits=args.splits,
        dataset_options=parse_key_values(args.dataset_option),
        embed=settings_from(EmbedOptions, args),
        rerank=args.rerank,
        all_test_identities=args.all_test_identities,
        device=args.device,
        threads=args.threads,
        cache_dir=args.cache_dir,
        workers=args.workers,
        report=args.report,
        plot=args.plot,
        progress=not args.no_progress,
    )
    report = evaluate_runs(config)
    rows = {}
    for run in report["runs"]:
        rows[run["label"]] = run["summary"]
        for k, summary in run.get("rerank_summary", {}).items():
            rows[f"{run['label']} + re-scoring top {k}"] = summary
    print(format_summary_table(rows))
    return 0
