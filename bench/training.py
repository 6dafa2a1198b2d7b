"""Training speed: pairs per second of the real trainer (``training.train.train_model``) for each
network variant, on a tiny synthetic set generated for the run.

``train_model`` is the code ``python -m training train`` runs: pair sampling, clip building with
augmentation (``build_pair_batch``), ``pool(encode(probe), encode(gallery))``, the contrastive
and identity losses, backward, gradient clamping and the SGD step, with the paper's 8 pairs per
mini-batch. Its own ``pairs_per_second`` is reported (the training loop's wall time: batch
building included, preprocessing and validation excluded). Clip building alone is timed
separately to show its share.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bench.common import Context, cuda_available, ms, time_calls
from bench.report import PartResult, Table

DESCRIPTION = (
    "Pairs per second of the real trainer (`training.train.train_model`, what `python -m "
    "training train` runs): pair sampling, clip building with augmentation "
    "(`build_pair_batch`), `pool(encode(probe), encode(gallery))`, contrastive and identity "
    "losses, backward, gradient clamping and the SGD step, 8 pairs per mini-batch, for each "
    "network variant on a tiny synthetic set generated for the run. Preprocessing and "
    "validation are not part of the figure."
)


def _dataset(root: Path, identities: int, seed: int) -> Path:
    from training.synthetic.dataset import generate_dataset

    if not (root / "done").exists():
        generate_dataset(
            root,
            num_identities=identities,
            seed=seed,
            min_frames=24,
            max_frames=40,
            workers=1,
            num_splits=1,
            overwrite=True,
            progress=False,
        )
        (root / "done").touch()
    return root


def _clip_building_ms(root: Path, seed: int, batch_pairs: int, min_seconds: float) -> float:
    """Median ms to build one mini-batch of clips (the trainer's ``build_pair_batch``)."""
    from training.augment import AugmentConfig
    from training.datasets import build_dataset
    from training.sampling import PairSampler, batch_rng, build_pair_batch
    from training.sequences import load_sequences

    split = build_dataset("synthetic", root).split(0)
    identities = sorted({t.identity for t in split.train})
    labels = [identities.index(t.identity) for t in split.train]
    sequences = load_sequences(split.train, progress=False)
    sampler = PairSampler(labels, [t.camera for t in split.train], seed)
    pairs = (sampler.epoch(0) * batch_pairs)[:batch_pairs]
    augment = AugmentConfig.preset("full")
    counter = iter(range(1_000_000))
    timing = time_calls(
        lambda: build_pair_batch(
            pairs, sequences, labels, batch_rng(seed, 0, next(counter)), augment
        ),
        min_seconds=min_seconds,
        min_runs=3,
    )
    return ms(timing.median)


def run(context: Context) -> PartResult:
    import torch

    config = context.config
    started = time.perf_counter()
    root = _dataset(config.workdir / "training-data", config.train_identities, config.seed)
    batch_pairs = 8
    devices = ["cpu"] + (["cuda"] if cuda_available() else [])
    notes = [] if "cuda" in devices else ["No CUDA device visible to PyTorch: CUDA rows skipped."]
    table = Table(
        "Training speed (train_model, 8 pairs per mini-batch, 16-frame clips)",
        [
            "variant",
            "device",
            "threads",
            "iterations",
            "pairs/s",
            "s / iteration",
            "clip building ms / batch",
        ],
    )
    clip_ms = _clip_building_ms(root, config.seed, batch_pairs, config.min_seconds / 3)
    raw_rows: list[dict[str, Any]] = []
    default_threads = torch.get_num_threads()
    # On a shared machine one thread can beat several (docs/training.md): measure both.
    cpu_threads = [default_threads] + ([1] if default_threads > 1 else [])
    jobs = [(variant, "cpu", threads) for threads in cpu_threads for variant in config.variants]
    if "cuda" in devices:
        jobs.extend((variant, "cuda", default_threads) for variant in config.variants)
    try:
        _train_all(config, root, jobs, batch_pairs, clip_ms, table, raw_rows)
    finally:
        torch.set_num_threads(default_threads)
    table.notes.append(
        f"A synthetic set of {config.train_identities} identities x 2 cameras (24-40 frames "
        "each) generated for the run; the training half forms the pairs. pairs/s is the "
        "trainer's own figure over its loop (it includes the first, slower iteration). Clip "
        "building (`build_pair_batch` with the default augmentation) is timed alone on the "
        "CPU and is part of every iteration's time. Threads: `--threads` of `train` (PyTorch "
        "CPU threads)."
    )
    part = PartResult(
        name="training",
        title="5. Training",
        description=DESCRIPTION,
        tables=[table],
        notes=notes,
        raw={"rows": raw_rows, "identities": config.train_identities},
    )
    part.seconds = time.perf_counter() - started
    return part


def _train_all(
    config: Any,
    root: Path,
    jobs: list[tuple[str, str, int]],
    batch_pairs: int,
    clip_ms: float,
    table: Table,
    raw_rows: list[dict[str, Any]],
) -> None:
    from training.train import TrainConfig, train_model

    for variant, device, threads in tqdm(
        jobs, desc="training", unit="run", disable=not config.progress
    ):
        result = train_model(
            TrainConfig(
                dataset="synthetic",
                root=root,
                split=0,
                variant=variant,
                max_iterations=config.train_iterations,
                batch_pairs=batch_pairs,
                seed=config.seed,
                device=device,
                threads=threads if device == "cpu" else None,
                validation="none",
                checkpoint_every=0,
                progress=False,
            )
        )
        seconds_per_iteration = result.train_seconds / max(result.iterations, 1)
        table.add(
            variant,
            device,
            str(threads) if device == "cpu" else "–",
            result.iterations,
            result.pairs_per_second,
            seconds_per_iteration,
            clip_ms,
        )
        raw_rows.append(
            {
                "variant": variant,
                "device": device,
                "threads": threads if device == "cpu" else None,
                "iterations": result.iterations,
                "pairs_per_second": result.pairs_per_second,
                "train_seconds": result.train_seconds,
                "clip_building_ms_per_batch": clip_ms,
            }
        )
