"""Siamese + identity training of ASTPN (paper §3.3 and §4.1.1).

Loss per pair: E(v_p, v_g) + I(v_p) + I(v_g), where E is the contrastive hinge of eq. 6 with
margin m = 3 and I the cross-entropy of one shared identity classifier. Batches are lists of
pairs from :class:`training.sequences.PairSampler` (positives and negatives alternate, so every
even-sized batch is balanced), clips of 16 consecutive frames with per-sequence crop, mirror
and the extra augmentation of :class:`training.sequences.AugmentConfig`.

Optimiser: SGD, lr 1e-3, momentum 0.9 and gradients clamped to +-5 (the authors' code).
Progress is checkpointed (``last.pt`` every ``checkpoint_every`` iterations and at the end;
``best.pt`` whenever validation rank-1 improves); ``resume`` continues at the saved iteration
with the same pairs, clips and RNG state it would have had without the interruption.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training.evaluate import (
    EmbedOptions,
    add_dataset_arguments,
    add_embed_arguments,
    evaluate_sequences,
    parse_int_list,
    parse_key_values,
    resolve_device,
    torch_embed_fn,
)
from training.sequences import (
    AUGMENT_PRESETS,
    CLIP_LENGTH,
    AugmentConfig,
    PairSampler,
    batch_rng,
    build_pair_batch,
    load_sequences,
)

HINGES = ("squared", "unsquared")
GRAD_CLIPS = ("value", "norm", "none")
VALIDATIONS = ("test", "none")
EXPORT_SOURCES = ("best", "last")


@dataclass
class TrainConfig:
    """Every training setting; ``python -m training train`` builds one from its arguments."""

    dataset: str
    root: str | Path
    split: int = 0
    variant: str = "astpn"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    # schedule
    epochs: int = 100
    max_minutes: float | None = None
    max_iterations: int | None = None
    batch_pairs: int = 8
    clip_length: int = CLIP_LENGTH
    # optimisation
    lr: float = 1e-3
    lr_steps: tuple[int, ...] = ()  # iterations after which lr is multiplied by lr_gamma
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    margin: float = 3.0
    hinge: str = "squared"
    grad_clip: str = "value"
    grad_clip_value: float = 5.0
    # model
    feature_dim: int = 128
    dropout: float = 0.6
    # data
    augment: str = "full"
    fixed_probe_camera: bool = False
    cache_dir: str | Path | None = None
    workers: int = 1
    # bookkeeping
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    out: str | Path | None = None
    checkpoint_every: int = 500
    validate_every: int = 10  # epochs; 0 = only at the end
    validation: str = "test"
    embed: EmbedOptions = field(default_factory=EmbedOptions)
    resume: str | Path | None = None
    export: str | Path | None = None
    export_name: str | None = None
    export_version: str = "1"
    export_from: str = "best"
    command: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checks = {
            "hinge": (self.hinge, HINGES),
            "grad_clip": (self.grad_clip, GRAD_CLIPS),
            "validation": (self.validation, VALIDATIONS),
            "augment": (self.augment, AUGMENT_PRESETS),
            "export_from": (self.export_from, EXPORT_SOURCES),
        }
        for name, (value, allowed) in checks.items():
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if self.batch_pairs < 2 or self.batch_pairs % 2:
            raise ValueError("batch_pairs must be even (balanced positives/negatives) and >= 2")


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
    pairs_per_second: float
    train_seconds: float
    preprocess_seconds: float
    export_path: Path | None = None


def pair_loss(
    v_p: Any, v_g: Any, positive: Any, margin: float = 3.0, hinge: str = "squared"
) -> Any:
    """Eq. 6 per pair (tensor (B,)): ``squared`` as the paper writes it, ``unsquared`` as the
    authors' code (torch HingeEmbeddingCriterion on the L2 distance)."""
    import torch

    sq = (v_p - v_g).pow(2).sum(dim=1)
    # sqrt has an infinite gradient at 0 (identical embeddings): keep it finite.
    dist = sq if hinge == "squared" else torch.sqrt(sq + 1e-12)
    return torch.where(positive, dist, torch.clamp(margin - dist, min=0.0))


def _set_threads(threads: int | None) -> None:
    """``None`` keeps torch's default (one thread per physical core): right on a dedicated
    machine. On a machine shared with other jobs one thread is often faster (docs/training.md)."""
    import torch

    if threads:
        torch.set_num_threads(threads)


def _split_labels(split: Any) -> tuple[list[int], int]:
    """Training label per training tracklet (0..K-1) and K."""
    labels = getattr(split, "train_labels", None)
    if labels is None:
        ids = sorted({t.identity for t in split.train})
        index = {pid: i for i, pid in enumerate(ids)}
        return [index[t.identity] for t in split.train], len(ids)
    labels = [int(x) for x in labels]
    k = getattr(split, "num_train_identities", None)
    return labels, int(k) if k is not None else max(labels) + 1


def _config_record(config: TrainConfig) -> dict[str, Any]:
    record = asdict(config)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in record.items()}


def learning_rate(config: TrainConfig, iteration: int) -> float:
    """The step schedule: ``lr`` times ``lr_gamma`` for every step in ``lr_steps`` passed."""
    return config.lr * config.lr_gamma ** sum(iteration >= step for step in config.lr_steps)


def train_model(config: TrainConfig) -> TrainResult:
    """Train one model on one split (see the module docstring); returns what it produced."""
    import torch

    from model.network import ASTPN
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.datasets import build_dataset

    _set_threads(config.threads)
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)

    dataset = build_dataset(config.dataset, config.root, **config.dataset_options)
    split = dataset.split(config.split)
    labels, num_ids = _split_labels(split)
    cameras = [t.camera for t in split.train]
    sampler = PairSampler(
        labels, cameras, config.seed, fixed_probe_camera=config.fixed_probe_camera
    )

    t0 = time.perf_counter()
    train_seqs = load_sequences(
        split.train,
        cache_dir=config.cache_dir,
        workers=config.workers,
        desc="preprocessing train",
        progress=config.progress,
    )
    val_query, val_gallery = list(split.query), list(split.gallery)
    val_seqs: list[np.ndarray] = []
    if config.validation == "test":
        val_seqs = load_sequences(
            [*val_query, *val_gallery],
            cache_dir=config.cache_dir,
            workers=config.workers,
            desc="preprocessing test",
            progress=config.progress,
        )
    preprocess_seconds = time.perf_counter() - t0

    # ---- model, optimiser, resume
    start_epoch, start_batch, iteration = 0, 0, 0
    best_rank1: float | None = None
    validations: list[dict[str, Any]] = []
    if config.resume:
        loaded, state = load_checkpoint(config.resume)
        if state["variant"] != config.variant or state["num_identities"] != num_ids:
            raise ValueError(
                f"checkpoint {config.resume} is a {state['variant']} with "
                f"{state['num_identities']} identities; this run: {config.variant}, {num_ids}"
            )
        # Rebuilt rather than used as loaded: the checkpoint does not record dropout.
        model = ASTPN(
            config.variant,
            num_identities=num_ids,
            feature_dim=int(state["feature_dim"]),
            dropout=config.dropout,
        )
        model.load_state_dict(loaded.state_dict())
        start_epoch = int(state["epoch"])
        start_batch = int(state["next_batch"])
        iteration = int(state["iteration"])
        best_rank1 = state.get("best_rank1")
        validations = list(state.get("validations", []))
    else:
        model = ASTPN(
            config.variant,
            num_identities=num_ids,
            feature_dim=config.feature_dim,
            dropout=config.dropout,
        )
        state = {}
    model.to(device)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    if config.resume:
        optimiser.load_state_dict(state["optimizer"])
        if "torch_rng" in state:
            torch.set_rng_state(state["torch_rng"])

    out_dir = Path(config.out) if config.out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    last_path = out_dir / "last.pt" if out_dir else None
    best_path = out_dir / "best.pt" if out_dir else None
    augment = AugmentConfig.preset(config.augment)
    batches_per_epoch = math.ceil(len(sampler) / config.batch_pairs)
    record = _config_record(config)

    def save(path: Path, epoch: int, next_batch: int) -> None:
        save_checkpoint(
            path,
            model,
            optimizer=optimiser.state_dict(),
            epoch=epoch,
            next_batch=next_batch,
            iteration=iteration,
            best_rank1=best_rank1,
            validations=validations,
            torch_rng=torch.get_rng_state(),
            config=record,
            dataset=config.dataset,
            split=config.split,
        )

    def validate(epoch: int) -> dict[str, Any]:
        nonlocal best_rank1
        embed = torch_embed_fn(model, device)
        n_q = len(val_query)
        result = evaluate_sequences(
            embed, val_query, val_gallery, val_seqs[:n_q], val_seqs[n_q:], config.embed
        )
        model.train()
        entry = {
            "epoch": epoch,
            "iteration": iteration,
            **{k: result[k] for k in ("ranks", "mAP")},
            "role_table": result["role_table"],
        }
        validations.append(entry)
        rank1 = result["ranks"]["rank1"]
        improved = best_rank1 is None or rank1 > best_rank1
        ranks = " ".join(f"R{k[4:]} {100 * v:5.1f}" for k, v in result["ranks"].items())
        tqdm.write(
            f"epoch {epoch:4d} it {iteration:6d} | {ranks} | mAP {100 * result['mAP']:5.1f}"
            + (" *" if improved else ""),
            file=sys.stderr,
        )
        if improved:
            best_rank1 = rank1
            if best_path:
                save(best_path, epoch, 0)
        return entry

    # ---- loop
    model.train()
    losses: list[dict[str, float]] = []
    stopped_by = "epochs"
    total_iterations = config.epochs * batches_per_epoch
    if config.max_iterations is not None:
        total_iterations = min(total_iterations, config.max_iterations)
    bar = tqdm(
        total=total_iterations,
        initial=min(iteration, total_iterations),
        unit="it",
        desc=f"train {config.variant}",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    train_start = time.perf_counter()
    pairs_done = 0
    epoch = start_epoch
    next_batch = start_batch
    budget_s = config.max_minutes * 60 if config.max_minutes is not None else None
    done = False
    while epoch < config.epochs and not done:
        pairs = sampler.epoch(epoch)
        for batch_index in range(next_batch, batches_per_epoch):
            if config.max_iterations is not None and iteration >= config.max_iterations:
                stopped_by, done = "max_iterations", True
                break
            if budget_s is not None and time.perf_counter() - train_start >= budget_s:
                stopped_by, done = "max_minutes", True
                break
            chunk = pairs[batch_index * config.batch_pairs : (batch_index + 1) * config.batch_pairs]
            batch = build_pair_batch(
                chunk,
                train_seqs,
                labels,
                batch_rng(config.seed, epoch, batch_index),
                augment,
                config.clip_length,
            )
            probe = torch.from_numpy(batch.probe).to(device)
            gallery = torch.from_numpy(batch.gallery).to(device)
            p_mask = torch.from_numpy(batch.probe_mask).to(device)
            g_mask = torch.from_numpy(batch.gallery_mask).to(device)
            pooled = model.pool(model.encode(probe), model.encode(gallery), p_mask, g_mask)
            positive = torch.from_numpy(batch.positive).to(device)
            e = pair_loss(pooled.v_p, pooled.v_g, positive, config.margin, config.hinge).mean()
            ce = torch.nn.functional.cross_entropy
            i_p = ce(model.classify(pooled.v_p), torch.from_numpy(batch.probe_labels).to(device))
            i_g = ce(model.classify(pooled.v_g), torch.from_numpy(batch.gallery_labels).to(device))
            loss = e + i_p + i_g
            # A function of the iteration, so a resumed run follows the same schedule.
            for group in optimiser.param_groups:
                group["lr"] = learning_rate(config, iteration)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip == "value":
                torch.nn.utils.clip_grad_value_(model.parameters(), config.grad_clip_value)
            elif config.grad_clip == "norm":
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_value)
            optimiser.step()

            iteration += 1
            pairs_done += len(chunk)
            step = {
                "iteration": iteration,
                "loss": loss.item(),
                "E": e.item(),
                "I": (i_p + i_g).item(),
            }
            if not math.isfinite(step["loss"]):
                raise FloatingPointError(f"loss became {step['loss']} at iteration {iteration}")
            losses.append(step)
            elapsed = time.perf_counter() - train_start
            bar.update(1)
            bar.set_postfix(
                epoch=epoch,
                loss=f"{step['loss']:.3f}",
                E=f"{step['E']:.3f}",
                I=f"{step['I']:.3f}",
                pairs_s=f"{pairs_done / max(elapsed, 1e-9):.1f}",
            )
            if last_path and config.checkpoint_every and iteration % config.checkpoint_every == 0:
                save(last_path, epoch, batch_index + 1)
        else:
            epoch += 1
            next_batch = 0
            if (
                config.validation == "test"
                and config.validate_every
                and epoch % config.validate_every == 0
                and epoch < config.epochs
            ):
                validate(epoch)
            continue
        next_batch = batch_index
    bar.close()
    train_seconds = time.perf_counter() - train_start

    # The final state: a finished epoch resumes at (epoch, 0), an interrupted one mid-way.
    final_epoch, final_batch = (epoch, next_batch) if done else (epoch, 0)
    if config.validation == "test" and (
        not validations or validations[-1]["iteration"] != iteration
    ):
        validate(final_epoch)
    if last_path:
        save(last_path, final_epoch, final_batch)

    result = TrainResult(
        out_dir=out_dir,
        last_checkpoint=last_path,
        best_checkpoint=best_path if best_path and best_path.exists() else None,
        iterations=iteration,
        epochs_completed=final_epoch,
        stopped_by=stopped_by,
        losses=losses,
        validations=validations,
        best_rank1=best_rank1,
        pairs_per_second=pairs_done / train_seconds if train_seconds > 0 else 0.0,
        train_seconds=train_seconds,
        preprocess_seconds=preprocess_seconds,
    )
    if config.export:
        result.export_path = _export(config, result, model)
    return result


def _export(config: TrainConfig, result: TrainResult, model: Any) -> Path:
    """Export the best checkpoint (or the final model) with the training record in its card."""
    from training.checkpoint import load_checkpoint
    from training.export import export_onnx

    from_best = config.export_from == "best" and result.best_checkpoint is not None
    if from_best:
        model, _ = load_checkpoint(result.best_checkpoint)
    model = model.to("cpu").eval()
    # The final validation describes the final model; the best one was selected on test data.
    metrics = dict(result.validations[-1]) if result.validations else {}
    if from_best and result.validations:
        best = max(result.validations, key=lambda v: v["ranks"]["rank1"])
        metrics = dict(best)
    metrics.pop("role_table", None)
    info = {
        "exported_from": "best validation checkpoint" if from_best else "final model",
        "dataset": config.dataset,
        "split": config.split,
        "command": config.command or "train_model(...)",
        "metrics": metrics,
        "iterations": result.iterations,
        "epochs": result.epochs_completed,
        "train_seconds": round(result.train_seconds, 1),
        "pairs_per_second": round(result.pairs_per_second, 2),
        "config": _config_record(config),
    }
    out = Path(config.export)
    name = config.export_name or out.stem
    export_onnx(model, out, name=name, version=config.export_version, training_info=info)
    return out


# ----------------------------------------------------------------------------- CLI


def register(subparsers: argparse._SubParsersAction) -> None:
    from model.network import VARIANTS

    parser = subparsers.add_parser(
        "train",
        help="Siamese + identity training of one model on one split",
        description=(
            "Train ASTPN (or an ablation variant) on one train/test split with the paper's "
            "loss E + I(v_p) + I(v_g): contrastive hinge (margin 3) on pairs alternating "
            "positive and negative, plus identity cross-entropy through a shared classifier; "
            "SGD with momentum. Writes OUT/last.pt (every --checkpoint-every iterations and "
            "at the end) and OUT/best.pt (best validation rank-1)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_dataset_arguments(parser)
    parser.add_argument("--split", type=int, default=0, help="train/test split index")
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="astpn",
        help="network: rnncnn (baseline), aspn, atpn or astpn",
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=100,
        help="epochs; one epoch = one positive and one negative pair per training person",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop after this much training time (checkpoint and export still happen)",
    )
    parser.add_argument(
        "--max-iterations", type=int, default=None, help="stop after this many mini-batches"
    )
    parser.add_argument(
        "--batch-pairs",
        type=int,
        default=8,
        help="pairs per mini-batch (even: half positive, half negative)",
    )
    parser.add_argument(
        "--clip-length", type=int, default=CLIP_LENGTH, help="consecutive frames per training clip"
    )
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    parser.add_argument(
        "--lr-steps",
        type=parse_int_list,
        default=(),
        help="comma-separated iterations after which the learning rate is multiplied by "
        "--lr-gamma (a step schedule; e.g. 10000: fine-tune at lr x 0.1 from there)",
    )
    parser.add_argument(
        "--lr-gamma", type=float, default=0.1, help="factor applied at each --lr-steps"
    )
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--weight-decay", type=float, default=0.0, help="SGD weight decay")
    parser.add_argument("--margin", type=float, default=3.0, help="hinge margin m (eq. 6)")
    parser.add_argument(
        "--hinge",
        choices=HINGES,
        default="squared",
        help="distance in eq. 6: squared (paper) or unsquared (authors' code)",
    )
    parser.add_argument(
        "--grad-clip",
        choices=GRAD_CLIPS,
        default="value",
        help="clamp every gradient to +-VALUE (authors' code), clip the "
        "global norm to VALUE, or none",
    )
    parser.add_argument("--grad-clip-value", type=float, default=5.0, help="the VALUE above")
    parser.add_argument("--feature-dim", type=int, default=128, help="embedding size")
    parser.add_argument("--dropout", type=float, default=0.6, help="dropout probability")
    parser.add_argument(
        "--augment",
        choices=AUGMENT_PRESETS,
        default="full",
        help="full: crop, mirror, tone/illumination/hue jitter, erasing, "
        "frame dropping; paper: crop and mirror only; none",
    )
    parser.add_argument(
        "--fixed-probe-camera",
        action="store_true",
        help="always put the lower-numbered camera in the probe branch of "
        "positive pairs (paper); default is a random order",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    parser.add_argument("--out", default=None, help="folder for last.pt and best.pt")
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=500,
        help="iterations between last.pt saves (0: only at the end)",
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=10,
        help="epochs between validations (0: only at the end)",
    )
    parser.add_argument(
        "--validation",
        choices=VALIDATIONS,
        default="test",
        help="validate on the split's test persons (selects best.pt; "
        "optimistic for reporting, as in the authors' code) or not at all",
    )
    add_embed_arguments(parser)
    parser.add_argument(
        "--resume",
        default=None,
        help="continue from this checkpoint (e.g. OUT/last.pt) at its iteration",
    )
    parser.add_argument(
        "--export",
        default=None,
        help="at the end export the model (see --export-from) to this .onnx with its model card",
    )
    parser.add_argument(
        "--export-from",
        choices=EXPORT_SOURCES,
        default="best",
        help="export best.pt (selected by validation rank-1: with --validation test its card's "
        "metrics are optimistic) or the final model (its card gets the last validation: an "
        "unbiased test figure)",
    )
    parser.add_argument("--export-name", default=None, help="model name in the card")
    parser.add_argument("--export-version", default="1", help="model version in the card")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    config = TrainConfig(
        dataset=args.dataset,
        root=args.root,
        split=args.split,
        variant=args.variant,
        dataset_options=parse_key_values(args.dataset_option),
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        max_iterations=args.max_iterations,
        batch_pairs=args.batch_pairs,
        clip_length=args.clip_length,
        lr=args.lr,
        lr_steps=tuple(args.lr_steps),
        lr_gamma=args.lr_gamma,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        margin=args.margin,
        hinge=args.hinge,
        grad_clip=args.grad_clip,
        grad_clip_value=args.grad_clip_value,
        feature_dim=args.feature_dim,
        dropout=args.dropout,
        augment=args.augment,
        fixed_probe_camera=args.fixed_probe_camera,
        cache_dir=args.cache_dir,
        workers=args.workers,
        seed=args.seed,
        device=args.device,
        threads=args.threads,
        out=args.out,
        checkpoint_every=args.checkpoint_every,
        validate_every=args.validate_every,
        validation=args.validation,
        embed=EmbedOptions(args.max_frames, args.flip, args.query_role, args.gallery_role),
        resume=args.resume,
        export=args.export,
        export_name=args.export_name,
        export_version=args.export_version,
        export_from=args.export_from,
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
