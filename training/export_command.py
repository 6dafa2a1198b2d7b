"""``python -m training export``: a checkpoint (or a random network) to ONNX + its model card.

The command line lives apart from ``training/export.py`` so that its help prints without
importing PyTorch and ONNX; ``run`` imports them.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.card import DEFAULT_OPSET, EMBEDDING_ROLES, OUTPUT_NAMES, card_path_for, default_roles
from model.choices import VARIANTS


def _checkpoint_validation(validations: Any, iteration: Any) -> dict[str, Any]:
    """The validation of the checkpoint's own weights (taken at its iteration), else the entry
    with the best rank-1 (what ``best.pt`` was saved for)."""
    entries = [v for v in validations or [] if isinstance(v, dict) and "ranks" in v]
    if not entries:
        return {}
    own = [v for v in entries if v.get("iteration") == iteration]
    chosen = dict(
        own[-1] if own else max(entries, key=lambda v: v["ranks"].get("rank1", float("-inf")))
    )
    chosen.pop("role_table", None)  # per-role CMC tables: large, and in the training report
    return chosen


def _training_info_from_checkpoint(path: Path, state: Mapping[str, Any]) -> dict[str, Any]:
    config = state.get("config") if isinstance(state.get("config"), dict) else {}
    return {
        "dataset": state.get("dataset", config.get("dataset")),
        "split": state.get("split", config.get("split")),
        "command": config.get("command"),
        "metrics": _checkpoint_validation(state.get("validations"), state.get("iteration")),
        "iterations": state.get("iteration"),
        "epochs": state.get("epoch"),
        "checkpoint": str(path),
        "training_data": state.get("training_data"),
        "validation_data": state.get("validation_data"),
        "terms": _terms_from_checkpoint(state, config),
        "config": config,
    }


def _terms_from_checkpoint(state: Mapping[str, Any], config: Mapping[str, Any]) -> list[dict]:
    from training.sources import Source
    from training.terms import training_terms

    recorded = state.get("training_data") or [{"source": state.get("dataset") or "unknown:?"}]
    sources = []
    for entry in recorded:
        try:
            sources.append(Source.parse(str(entry["source"])))
        except (ValueError, KeyError, TypeError):
            continue  # a checkpoint from before sources were recorded: nothing to name
    return training_terms(sources, bool(config.get("pretrained")), config.get("init_from"))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        description=(
            "Export one Siamese branch of an ASTPN checkpoint, paired with itself, to ONNX: "
            "input 'frames' float32 (B, T, 5, 56, 40) with dynamic B and T; outputs "
            + ", ".join(OUTPUT_NAMES)
            + ". Writes OUT.onnx and the model card OUT.json (name, version, variant, "
            "preprocessing, roles, training record, sha256 of the .onnx). The export is "
            "checked with onnx.checker and against PyTorch in every available ONNX Runtime "
            "provider before it is written."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--checkpoint",
        type=Path,
        help="checkpoint written by `python -m training train` (e.g. runs/x/best.pt); its "
        "dataset, command, best validation metrics and config go into the card",
    )
    source.add_argument(
        "--random-init",
        action="store_true",
        help="export an untrained, randomly initialised network instead (for tests and "
        "service smoke runs; its embeddings are meaningless)",
    )
    parser.add_argument(
        "--out",
        "--output",
        dest="out",
        type=Path,
        required=True,
        help="output path; '.onnx' is added if missing and the card is written next to it "
        "with the same stem and '.json'",
    )
    parser.add_argument(
        "--name", help="model name recorded in the card (default: the output file's stem)"
    )
    parser.add_argument(
        "--version",
        default="1",
        help="model version recorded in the card and reported by the service "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--enroll-role",
        choices=EMBEDDING_ROLES,
        help="which self-pairing embedding the service stores when enrolling a tracklet: "
        "'gallery' (column-wise attention) or 'probe' (row-wise attention). Default: gallery "
        "for atpn/astpn, probe for the mean-pooling variants (whose two embeddings are equal)",
    )
    parser.add_argument(
        "--query-role",
        choices=EMBEDDING_ROLES,
        help="which embedding the service computes for a query. Default: probe",
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        help="network variant, only with --random-init (default: astpn; a checkpoint "
        "records its own)",
    )
    parser.add_argument(
        "--seed", type=int, help="weight seed, only with --random-init (default: 0)"
    )
    parser.add_argument(
        "--opset",
        type=int,
        default=DEFAULT_OPSET,
        help="ONNX opset version of the graph (default: %(default)s)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from model.network import ASTPN
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.export import check_against_torch, export_onnx

    command = shlex.join(["python", "-m", "training", *sys.argv[1:]])
    if args.checkpoint and (args.variant or args.seed is not None):
        raise SystemExit("error: --variant and --seed apply to --random-init only")
    if args.random_init:
        args.seed = 0 if args.seed is None else args.seed
        torch.manual_seed(args.seed)
        model = ASTPN(args.variant or "astpn")
        info: dict[str, Any] = {
            "dataset": "none (random initialisation)",
            "command": command,
            "metrics": {},
            "seed": args.seed,
        }
    else:
        try:
            model, state = load_checkpoint(args.checkpoint)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: {exc}") from exc
        info = _training_info_from_checkpoint(args.checkpoint, state)
        info["export_command"] = command
    roles = default_roles(model.variant)
    if args.enroll_role:
        roles["enroll"] = args.enroll_role
    if args.query_role:
        roles["query"] = args.query_role

    print(f"exporting {model.variant} to ONNX (opset {args.opset}) ...", file=sys.stderr)
    onnx_path = export_onnx(
        model,
        args.out,
        name=args.name,
        version=args.version,
        training_info=info,
        roles=roles,
        opset=args.opset,
    )
    checks = check_against_torch(onnx_path, model.cpu().eval())
    print(f"wrote {onnx_path} and its card {card_path_for(onnx_path)}")
    if not args.random_init:  # the same weights for --init-from, as a training run's export
        weights = save_checkpoint(
            onnx_path.with_suffix(".pt"), model, weights_only=True, card=onnx_path.stem
        )
        print(f"wrote {weights} (weights for fine-tuning with --init-from)")
    print(f"roles: enroll={roles['enroll']} query={roles['query']}")
    for provider, result in checks.items():
        verdict = f"max |onnx - torch| = {result:.2e}" if isinstance(result, float) else result
        print(f"  {provider}: {verdict}")
    return 0
