"""Training of ASTPN (paper §3.3 and §4.1.1), and the recipe that carries it to real cameras.

The paper's recipe (the defaults): per pair, E(v_p, v_g) + I(v_p) + I(v_g), where E is the
contrastive hinge of eq. 6 with margin m = 3 and I the cross-entropy of one shared identity
classifier; batches of pairs from :class:`training.sampling.PairSampler`; SGD, lr 1e-3,
momentum 0.9, gradients clamped to +-5 (the authors' code).

``--sampler identities`` trains on batches of persons instead (:class:`IdentitySampler`): each
tracklet is self-paired as at test time, and the loss adds the identity loss of both of its
embeddings, a batch-hard triplet term on query-vs-gallery distances (``--triplet-weight``) and
the paper's pair loss on pairs formed inside the batch (``--pair-weight``).

Training data may come from several datasets (``--train`` sources, :mod:`training.sources`);
validation is on persons held out of all of them. Progress is checkpointed (``last.pt`` every
``checkpoint_every`` iterations and at the end; ``best.pt`` whenever validation rank-1
improves); ``resume`` continues at the saved iteration with the same batches, clips and RNG
state it would have had without the interruption.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.cli import add_common_arguments, add_settings, parse_key_values, settings_from
from training.config import TrainConfig
from training.embedding import EmbedOptions
from training.losses import pair_loss  # noqa: F401  (re-exported: part of the trainer's API)


@dataclass
class TrainResult:
    """What a run produced; ``losses`` has one entry per iteration of *this* process."""

    out_dir: Path | None
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    iterations: int
    epochs_completed: int
    stopped_by: str  # "epochs", "max_iterations" or "max_minutes"
    losses: list[dict[str, float]]
    validations: list[dict[str, Any]]
    best_rank1: float | None
    pairs_per_second: float  # tracklet pairs (pairs sampler) or tracklets / 2 (identities)
    train_seconds: float
    preprocess_seconds: float
    export_path: Path | None = None


def learning_rate(config: TrainConfig, iteration: int, total: int | None = None) -> float:
    """The schedule, a function of the iteration (so a resumed run follows it): linear warm-up,
    then ``step`` (times ``lr_gamma`` at each of ``lr_steps``) or ``cosine`` (to 0 at
    ``total`` iterations)."""
    rate = config.lr
    if config.warmup_iterations and iteration < config.warmup_iterations:
        rate *= (iteration + 1) / config.warmup_iterations
    if config.lr_schedule == "cosine" and total:
        return rate * 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / total))
    return rate * config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)


def train_model(config: TrainConfig) -> TrainResult:
    """Train one model (see the module docstring); returns what it produced."""
    from training.trainer import Trainer

    return Trainer(config).run()


# ----------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        description=(
            "Train ASTPN (or an ablation variant, or a MobileNetV2-backed ASTPN) on one "
            "dataset's split (--dataset/--root/--split) or on several datasets at once "
            "(--train SOURCE ...), validating on persons held out of training. Writes "
            "OUT/last.pt (every --checkpoint-every iterations and at the end) and OUT/best.pt "
            "(best validation rank-1)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_common_arguments(parser, dataset_required=False)
    add_settings(parser, TrainConfig)
    add_settings(parser, EmbedOptions)
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    config = settings_from(
        TrainConfig,
        args,
        dataset=args.dataset,
        root=args.root,
        dataset_options=parse_key_values(args.dataset_option),
        cache_dir=args.cache_dir,
        workers=args.workers,
        device=args.device,
        threads=args.threads,
        embed=settings_from(EmbedOptions, args),
        command="python -m training " + shlex.join(sys.argv[1:]),
        progress=not args.no_progress,
    )
    result = train_model(config)
    print(
        f"{result.iterations} iterations, {result.epochs_completed} epochs "
        f"(stopped by {result.stopped_by}), {result.pairs_per_second:.1f} pairs/s, "
        f"train {result.train_seconds / 60:.1f} min, "
        f"preprocessing {result.preprocess_seconds:.0f} s"
    )
    if result.best_rank1 is not None:
        print(f"best validation rank-1: {100 * result.best_rank1:.1f}%")
    for path in (result.last_checkpoint, result.best_checkpoint, result.export_path):
        if path:
            print(f"wrote {path}")
    return 0


def losses_summary(step: dict[str, float]) -> dict[str, str]:
    """The progress bar's loss figures."""
    return {k: f"{v:.3f}" for k, v in step.items() if k != "iteration" and np.isfinite(v)}
