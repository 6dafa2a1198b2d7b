"""The training loop behind ``python -m training train``: set-up, resume, loop, validation,
finish (see :mod:`training.train` for the recipes and :mod:`training.config` for settings)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.network import ASTPN
from training.augment import AugmentConfig
from training.checkpoint import build_model_from, load_checkpoint, save_checkpoint
from training.config import TrainConfig
from training.embedding import torch_embed_fn
from training.evaluate import evaluate_sequences, resolve_device
from training.losses import batch_hard_triplet, identity_loss, pair_loss
from training.sampling import (
    IdentitySampler,
    PairSampler,
    batch_pairs,
    batch_rng,
    build_clip_batch,
    build_pair_batch,
)
from training.sequences import load_sequences
from training.sources import check_held_out, training_set, validation_protocol
from training.terms import training_terms
from training.train import TrainResult, learning_rate, losses_summary


class Trainer:
    """One training run. ``Trainer(config).run()`` trains, validates, checkpoints, exports."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        if config.threads:
            # One thread is often faster on a machine shared with other jobs (docs/training.md).
            torch.set_num_threads(config.threads)
        self.device = resolve_device(config.device)
        torch.manual_seed(config.seed)
        self.spec = config.input_spec()
        started = time.perf_counter()
        self._load_data()
        self.preprocess_seconds = time.perf_counter() - started
        self.augment = AugmentConfig.preset(config.augment)
        self._build_model()
        self.out_dir = Path(config.out) if config.out else None
        if self.out_dir:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.losses: list[dict[str, float]] = []

    # ------------------------------------------------------------------ set-up

    def _load_data(self) -> None:
        config = self.config
        sources = config.training_sources()
        self.data = training_set(sources)
        self.sequences = self._load(self.data.tracklets, "preprocessing train")
        if config.sampler == "identities":
            self.sampler: Any = IdentitySampler(
                self.data.labels,
                self.data.cameras,
                config.seed,
                identities=config.batch_identities,
                per_identity=config.tracklets_per_identity,
            )
            self.batches_per_epoch = len(self.sampler)
        else:
            self.sampler = PairSampler(
                self.data.labels,
                self.data.cameras,
                config.seed,
                fixed_probe_camera=config.fixed_probe_camera,
            )
            self.batches_per_epoch = math.ceil(len(self.sampler) / config.batch_pairs)
        self.val_query: list[Any] = []
        self.val_gallery: list[Any] = []
        self.val_sequences: list[np.ndarray] = []
        if config.validation == "test":
            source = config.validation_source()
            self.val_query, self.val_gallery = validation_protocol(source)
            check_held_out(sources, source, self.val_query, self.val_gallery)
            self.val_source = str(source)
            self.val_sequences = self._load(
                [*self.val_query, *self.val_gallery], "preprocessing validation"
            )

    def _load(self, tracklets: list[Any], desc: str) -> list[np.ndarray]:
        return load_sequences(
            tracklets,
            cache_dir=self.config.cache_dir,
            workers=self.config.workers,
            desc=desc,
            progress=self.config.progress,
            spec=self.spec,
        )

    def _build_model(self) -> None:
        config = self.config
        self.epoch, self.next_batch, self.iteration = 0, 0, 0
        self.best_rank1: float | None = None
        self.validations: list[dict[str, Any]] = []
        state: dict[str, Any] = {}
        if config.resume:
            _, state = load_checkpoint(config.resume)
            self._check_resumable(state)
            # Rebuilt rather than used as loaded: the checkpoint does not record dropout.
            self.model = build_model_from(state, dropout=config.dropout)
            self.model.load_state_dict(state["state_dict"])
            self.epoch, self.next_batch = int(state["epoch"]), int(state["next_batch"])
            self.iteration = int(state["iteration"])
            self.best_rank1 = state.get("best_rank1")
            self.validations = list(state.get("validations", []))
        else:
            self.model = ASTPN(
                config.variant,
                num_identities=self.data.num_identities,
                feature_dim=config.feature_dim,
                dropout=config.dropout,
                backbone=config.backbone,
                input_spec=self.spec,
            )
            if config.pretrained:
                from training.pretrained import load_imagenet_weights

                load_imagenet_weights(self.model.conv)
            if config.init_from:
                self._initialise_from(config.init_from)
        self.model.conv.freeze(config.freeze_blocks)
        self.model.to(self.device)
        if self.model.conv.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.optimiser = self._optimiser()
        if state:
            self.optimiser.load_state_dict(state["optimizer"])
            if "torch_rng" in state:
                torch.set_rng_state(state["torch_rng"])

    def _initialise_from(self, path: str | Path) -> None:
        """Weights of another run (fine-tuning): same network and input, any persons."""
        source, state = load_checkpoint(path)
        ours = (self.config.variant, self.config.backbone, self.config.feature_dim, self.spec)
        theirs = (source.variant, source.backbone, source.feature_dim, source.input_spec)
        if ours != theirs:
            raise ValueError(
                f"--init-from {path} is a {theirs[1]} {theirs[0]} ({theirs[2]}-d, input "
                f"{theirs[3]}); give this run the same --variant, --backbone, --feature-dim and "
                "input options"
            )
        weights = {k: v for k, v in state["state_dict"].items() if not k.startswith("classifier.")}
        self.model.load_state_dict(weights, strict=False)

    def _check_resumable(self, state: dict[str, Any]) -> None:
        config = self.config
        ours = (config.variant, self.data.num_identities, config.backbone, self.spec.config())
        theirs = (
            state["variant"],
            state["num_identities"],
            state.get("backbone", "paper"),
            state.get("input_spec", ours[3]),
        )
        if ours != theirs:
            raise ValueError(
                f"checkpoint {config.resume} is a {theirs[2]} {theirs[0]} with {theirs[1]} "
                f"identities (or another input); this run: {ours[2]} {ours[0]}, {ours[1]}"
            )

    def _optimiser(self) -> torch.optim.Optimizer:
        config = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if config.optimizer == "adam":
            return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )

    @property
    def total_iterations(self) -> int:
        total = self.config.epochs * self.batches_per_epoch
        if self.config.max_iterations is not None:
            total = min(total, self.config.max_iterations)
        return total

    # ------------------------------------------------------------------ one iteration

    def _epoch_batches(self, epoch: int) -> list[Any]:
        drawn = self.sampler.epoch(epoch)
        if self.config.sampler == "identities":
            return drawn
        size = self.config.batch_pairs
        return [drawn[i : i + size] for i in range(0, len(drawn), size)]

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device)

    def _pairs_loss(self, chunk: list[Any], rng: np.random.Generator) -> tuple[Any, dict, int]:
        config, model = self.config, self.model
        batch = build_pair_batch(
            chunk,
            self.sequences,
            self.data.labels,
            rng,
            self.augment,
            config.clip_length,
            self.spec,
        )
        p_mask, g_mask = self._tensor(batch.probe_mask), self._tensor(batch.gallery_mask)
        pooled = model.pool(
            model.encode(self._tensor(batch.probe)),
            model.encode(self._tensor(batch.gallery)),
            p_mask,
            g_mask,
        )
        e = pair_loss(
            pooled.v_p, pooled.v_g, self._tensor(batch.positive), config.margin, config.hinge
        ).mean()
        i = identity_loss(
            model.classify(pooled.v_p), self._tensor(batch.probe_labels), config.label_smoothing
        )
        i = i + identity_loss(
            model.classify(pooled.v_g), self._tensor(batch.gallery_labels), config.label_smoothing
        )
        loss = config.pair_weight * e + i
        return loss, {"E": e.item(), "I": i.item()}, len(chunk)

    def _identities_loss(
        self, indices: list[int], rng: np.random.Generator
    ) -> tuple[Any, dict, int]:
        config, model = self.config, self.model
        batch = build_clip_batch(
            indices,
            self.sequences,
            self.data.labels,
            rng,
            self.augment,
            config.clip_length,
            self.spec,
        )
        mask, labels = self._tensor(batch.mask), self._tensor(batch.labels)
        features = model.encode(self._tensor(batch.clips), mask)
        own = model.pool(features, features, mask, mask)  # self-paired, as at test time
        i = identity_loss(model.classify(own.v_p), labels, config.label_smoothing)
        i = i + identity_loss(model.classify(own.v_g), labels, config.label_smoothing)
        loss, parts = i, {"I": i.item()}
        if config.triplet_weight:
            t = batch_hard_triplet(own.v_p, own.v_g, labels, config.triplet_margin)
            loss, parts["T"] = loss + config.triplet_weight * t, t.item()
        if config.pair_weight:
            probe, gallery, positive = batch_pairs(batch.labels, config.tracklets_per_identity)
            pooled = model.pool(features[probe], features[gallery], mask[probe], mask[gallery])
            e = pair_loss(
                pooled.v_p, pooled.v_g, self._tensor(positive), config.margin, config.hinge
            ).mean()
            loss, parts["E"] = loss + config.pair_weight * e, e.item()
        return loss, parts, len(indices) // 2

    def _step(self, batch: Any, rng: np.random.Generator) -> int:
        config = self.config
        compute = self._identities_loss if config.sampler == "identities" else self._pairs_loss
        loss, parts, pairs = compute(batch, rng)
        for group in self.optimiser.param_groups:
            group["lr"] = learning_rate(config, self.iteration, self.total_iterations)
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip == "value":
            torch.nn.utils.clip_grad_value_(self.model.parameters(), config.grad_clip_value)
        elif config.grad_clip == "norm":
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.grad_clip_value)
        self.optimiser.step()
        self.iteration += 1
        step = {"iteration": self.iteration, "loss": loss.item(), **parts}
        if not math.isfinite(step["loss"]):
            raise FloatingPointError(f"loss became {step['loss']} at iteration {self.iteration}")
        self.losses.append(step)
        return pairs

    # ------------------------------------------------------------------ loop

    def _stop_reason(self, started: float) -> str | None:
        config = self.config
        if config.max_iterations is not None and self.iteration >= config.max_iterations:
            return "max_iterations"
        if (
            config.max_minutes is not None
            and time.perf_counter() - started >= 60 * config.max_minutes
        ):
            return "max_minutes"
        return None

    def run(self) -> TrainResult:
        config = self.config
        self.model.train()
        total = self.total_iterations
        bar = tqdm(
            total=total,
            initial=min(self.iteration, total),
            unit="it",
            desc=f"train {config.backbone} {config.variant}",
            disable=not config.progress,
            dynamic_ncols=True,
        )
        started, pairs_done, stopped_by = time.perf_counter(), 0, "epochs"
        while self.epoch < config.epochs and stopped_by == "epochs":
            batches = self._epoch_batches(self.epoch)
            for index in range(self.next_batch, len(batches)):
                reason = self._stop_reason(started)
                if reason:
                    stopped_by, self.next_batch = reason, index
                    break
                pairs_done += self._step(batches[index], batch_rng(config.seed, self.epoch, index))
                bar.update(1)
                elapsed = time.perf_counter() - started
                bar.set_postfix(
                    epoch=self.epoch,
                    pairs_s=f"{pairs_done / max(elapsed, 1e-9):.1f}",
                    **losses_summary(self.losses[-1]),
                )
                if (
                    self.out_dir
                    and config.checkpoint_every
                    and (self.iteration % config.checkpoint_every == 0)
                ):
                    self.save("last.pt", self.epoch, index + 1)
            else:
                self.epoch, self.next_batch = self.epoch + 1, 0
                if self._due_for_validation():
                    self.validate()
        bar.close()
        return self._finish(stopped_by, pairs_done, time.perf_counter() - started)

    def _due_for_validation(self) -> bool:
        config = self.config
        return (
            config.validation == "test"
            and config.validate_every > 0
            and self.epoch % config.validate_every == 0
            and self.epoch < config.epochs
        )

    def _finish(self, stopped_by: str, pairs_done: int, seconds: float) -> TrainResult:
        config = self.config
        if config.validation == "test" and (
            not self.validations or self.validations[-1]["iteration"] != self.iteration
        ):
            self.validate()
        if self.out_dir:
            self.save("last.pt", self.epoch, self.next_batch)
        best = self.out_dir / "best.pt" if self.out_dir else None
        result = TrainResult(
            out_dir=self.out_dir,
            last_checkpoint=self.out_dir / "last.pt" if self.out_dir else None,
            best_checkpoint=best if best and best.exists() else None,
            iterations=self.iteration,
            epochs_completed=self.epoch,
            stopped_by=stopped_by,
            losses=self.losses,
            validations=self.validations,
            best_rank1=self.best_rank1,
            pairs_per_second=pairs_done / seconds if seconds > 0 else 0.0,
            train_seconds=seconds,
            preprocess_seconds=self.preprocess_seconds,
        )
        if config.export:
            result.export_path = self._export(result)
        return result

    # ------------------------------------------------------------------ validation, saving

    def validate(self) -> dict[str, Any]:
        embed = torch_embed_fn(self.model, self.device)
        n_q = len(self.val_query)
        result = evaluate_sequences(
            embed,
            self.val_query,
            self.val_gallery,
            self.val_sequences[:n_q],
            self.val_sequences[n_q:],
            self.config.embed,
            crop_size=self.spec.crop_size,
        )
        self.model.train()
        entry = {
            "epoch": self.epoch,
            "iteration": self.iteration,
            **{k: result[k] for k in ("ranks", "mAP")},
            "role_table": result["role_table"],
        }
        self.validations.append(entry)
        rank1 = result["ranks"]["rank1"]
        improved = self.best_rank1 is None or rank1 > self.best_rank1
        ranks = " ".join(f"R{k[4:]} {100 * v:5.1f}" for k, v in result["ranks"].items())
        tqdm.write(
            f"epoch {self.epoch:4d} it {self.iteration:6d} | {ranks} | mAP "
            f"{100 * result['mAP']:5.1f}" + (" *" if improved else ""),
            file=sys.stderr,
        )
        if improved:
            self.best_rank1 = rank1
            if self.out_dir:
                self.save("best.pt", self.epoch, 0)
        return entry

    def save(self, name: str, epoch: int, next_batch: int) -> None:
        assert self.out_dir is not None
        save_checkpoint(
            self.out_dir / name,
            self.model,
            optimizer=self.optimiser.state_dict(),
            epoch=epoch,
            next_batch=next_batch,
            iteration=self.iteration,
            best_rank1=self.best_rank1,
            validations=self.validations,
            torch_rng=torch.get_rng_state(),
            config=self.config.record(),
            dataset=self._dataset_description(),
            split=self.config.split,
            training_data=self.data.summary,
            validation_data=getattr(self, "val_source", None),
        )

    def _dataset_description(self) -> str:
        sources = self.config.training_sources()
        if len(sources) == 1 and not self.config.train:
            return sources[0].dataset
        return " + ".join(str(s) for s in sources)

    def _export(self, result: TrainResult) -> Path:
        """Export the best checkpoint (or the final model) with the training record in its card."""
        from training.export import export_onnx

        config = self.config
        model = self.model
        from_best = config.export_from == "best" and result.best_checkpoint is not None
        if from_best:
            model, _ = load_checkpoint(result.best_checkpoint)
        # The final validation describes the final model; the best one was selected on test data.
        metrics = dict(result.validations[-1]) if result.validations else {}
        if from_best and result.validations:
            metrics = dict(max(result.validations, key=lambda v: v["ranks"]["rank1"]))
        metrics.pop("role_table", None)
        info = {
            "exported_from": "best validation checkpoint" if from_best else "final model",
            "dataset": self._dataset_description(),
            "split": config.split,
            "training_data": self.data.summary,
            "validation_data": getattr(self, "val_source", None),
            "terms": training_terms(config.training_sources(), config.pretrained, config.init_from),
            "command": config.command or "train_model(...)",
            "metrics": metrics,
            "iterations": result.iterations,
            "epochs": result.epochs_completed,
            "train_seconds": round(result.train_seconds, 1),
            "pairs_per_second": round(result.pairs_per_second, 2),
            "config": config.record(),
        }
        out = Path(config.export)
        name = config.export_name or out.stem
        model = model.to("cpu", memory_format=torch.contiguous_format).eval()
        export_onnx(model, out, name=name, version=config.export_version, training_info=info)
        # The same weights for --init-from (fine-tuning on other cameras), beside the model.
        save_checkpoint(out.with_suffix(".pt"), model, weights_only=True, card=out.stem)
        return out
