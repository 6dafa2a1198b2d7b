"""Every training setting, declared once: the dataclass is both the run's configuration and,
through :mod:`training.cli`, the ``python -m training train`` options (torch-free)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from model.choices import BACKBONES, VARIANTS
from model.preprocessing import COLOUR_MODES, CROP_SIZE, FLOW_MODES, FRAME_SIZE, InputSpec
from training.augment import AUGMENT_PRESETS, CLIP_LENGTH
from training.cli import parse_int_list, parse_size, setting
from training.embedding import EmbedOptions
from training.losses import HINGES
from training.sources import Source

GRAD_CLIPS = ("value", "norm", "none")
VALIDATIONS = ("test", "none")
EXPORT_SOURCES = ("best", "last")
SAMPLERS = ("pairs", "identities")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "cosine")


@dataclass
class TrainConfig:
    """Every training setting; ``python -m training train`` builds one from its arguments."""

    # data: one dataset (--dataset/--root/--split), or several --train sources
    dataset: str | None = setting(None, "", skip=True)
    root: str | Path | None = setting(None, "", skip=True)
    split: int = setting(0, "train/test split index of --dataset")
    dataset_options: dict[str, Any] = setting({}, "", skip=True)
    train: tuple[str, ...] = setting(
        (),
        "training source NAME:ROOT[:KEY=VALUE,...] (repeatable; replaces --dataset/--root); "
        "keys: part=train|all|test, split=N, and dataset options, e.g. "
        "folder:../shared/data/cuhk03:test_identities=200 or synthetic:data/synthetic:part=all",
        metavar="SOURCE",
    )
    val: str | None = setting(
        None,
        "validation source NAME:ROOT[:KEY=VALUE,...] (default part=test: persons held out of "
        "training; refused if it shares a person with a training source). Default: the test "
        "part of --dataset, or of the only --train source",
        metavar="SOURCE",
    )
    # model
    variant: str = setting("astpn", "network: rnncnn, aspn, atpn or astpn", choices=VARIANTS)
    backbone: str = setting(
        "paper",
        "frame CNN: paper (three layers, from scratch) or mobilenetv2 (ImageNet weights)",
        choices=BACKBONES,
    )
    pretrained: bool = setting(False, "start the backbone from its ImageNet weights (mobilenetv2)")
    freeze_blocks: int = setting(
        0, "keep the backbone's first N stages at their pretrained weights (mobilenetv2)"
    )
    frame_size: tuple[int, int] = setting(
        FRAME_SIZE, "frames are resized to HxW", parse=parse_size, metavar="HxW"
    )
    crop_size: tuple[int, int] = setting(
        CROP_SIZE, "network input crop HxW", parse=parse_size, metavar="HxW"
    )
    colour: str = setting(
        "yuv", "colour channels: yuv (paper: per-frame standardised) or rgb", choices=COLOUR_MODES
    )
    flow: str = setting("lucas-kanade", "what the flow channels carry", choices=FLOW_MODES)
    feature_dim: int = setting(128, "embedding size")
    dropout: float = setting(0.6, "dropout probability")
    # schedule
    epochs: int = setting(100, "epochs; one epoch = every training person once")
    max_minutes: float | None = setting(
        None, "stop after this much training time (checkpoint and export still happen)"
    )
    max_iterations: int | None = setting(None, "stop after this many mini-batches")
    sampler: str = setting(
        "pairs",
        "pairs: the paper's alternating positive/negative pairs; identities: batches of "
        "--batch-identities persons x --tracklets-per-identity tracklets",
        choices=SAMPLERS,
    )
    batch_pairs: int = setting(8, "pairs per mini-batch with --sampler pairs (even)")
    batch_identities: int = setting(16, "persons per mini-batch with --sampler identities")
    tracklets_per_identity: int = setting(2, "tracklets per person with --sampler identities")
    clip_length: int = setting(CLIP_LENGTH, "frames per training clip (at most)")
    # optimisation
    optimizer: str = setting("sgd", "sgd (momentum) or adam", choices=OPTIMIZERS)
    lr: float = setting(1e-3, "learning rate")
    lr_schedule: str = setting(
        "step",
        "step (--lr-steps, --lr-gamma) or cosine (to 0 at the last iteration)",
        choices=SCHEDULES,
    )
    lr_steps: tuple[int, ...] = setting(
        (),
        "comma-separated iterations after which the learning rate is multiplied by "
        "--lr-gamma (a step schedule; e.g. 10000: fine-tune at lr x 0.1 from there)",
        parse=parse_int_list,
    )
    lr_gamma: float = setting(0.1, "factor applied at each --lr-steps")
    warmup_iterations: int = setting(0, "linear learning-rate warm-up over this many iterations")
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(0.0, "weight decay (L2)")
    margin: float = setting(3.0, "hinge margin m of the pair loss (eq. 6)")
    hinge: str = setting(
        "squared",
        "distance in eq. 6: squared (paper) or unsquared (authors' code)",
        choices=HINGES,
    )
    pair_weight: float = setting(1.0, "weight of the paper's pair loss E (0: off)")
    triplet_weight: float = setting(
        0.0, "weight of the batch-hard triplet loss on self-paired embeddings (identities sampler)"
    )
    triplet_margin: float = setting(0.3, "margin of the triplet loss")
    label_smoothing: float = setting(0.0, "label smoothing of the identity loss")
    grad_clip: str = setting(
        "value",
        "clamp every gradient to +-VALUE (authors' code), clip the global norm to VALUE, or none",
        choices=GRAD_CLIPS,
    )
    grad_clip_value: float = setting(5.0, "the VALUE above")
    # data handling
    augment: str = setting(
        "full",
        "full: crop, mirror, colour changes, erasing, frame dropping; reid: full plus random "
        "frame subsets (short tracklets); paper: crop and mirror only; none",
        choices=AUGMENT_PRESETS,
    )
    fixed_probe_camera: bool = setting(
        False,
        "always put the lower-numbered camera in the probe branch of positive pairs (paper); "
        "default is a random order",
    )
    cache_dir: str | Path | None = setting(None, "", skip=True)
    workers: int = setting(1, "", skip=True)
    # bookkeeping
    seed: int = setting(0, "seed of every random draw")
    device: str = setting("auto", "", skip=True)
    threads: int | None = setting(None, "", skip=True)
    out: str | Path | None = setting(None, "folder for last.pt and best.pt")
    checkpoint_every: int = setting(500, "iterations between last.pt saves (0: only at the end)")
    validate_every: int = setting(10, "epochs between validations (0: only at the end)")
    validation: str = setting(
        "test",
        "validate on the validation source's persons (selects best.pt) or not at all",
        choices=VALIDATIONS,
    )
    embed: EmbedOptions = setting(EmbedOptions(), "", skip=True)
    init_from: str | Path | None = setting(
        None,
        "start from this checkpoint's weights (e.g. the shipped model's "
        "model/weights/<name>.pt, to fine-tune on your own cameras); its identity classifier "
        "is not used, so any training persons may follow",
        metavar="CHECKPOINT",
    )
    resume: str | Path | None = setting(
        None, "continue from this checkpoint (e.g. OUT/last.pt) at its iteration"
    )
    export: str | Path | None = setting(
        None, "at the end export the model (see --export-from) to this .onnx with its card"
    )
    export_name: str | None = setting(None, "model name in the card")
    export_version: str = setting("1", "model version in the card")
    export_from: str = setting(
        "best",
        "export best.pt (selected by validation rank-1: its card's metrics are optimistic) or "
        "the final model (its card gets the last validation: an unbiased test figure)",
        choices=EXPORT_SOURCES,
    )
    command: str | None = setting(None, "", skip=True)
    progress: bool = setting(True, "", skip=True)

    def __post_init__(self) -> None:
        if self.batch_pairs < 2 or self.batch_pairs % 2:
            raise ValueError("batch_pairs must be even (balanced positives/negatives) and >= 2")
        if self.triplet_weight and self.sampler != "identities":
            raise ValueError("the triplet loss needs --sampler identities (batches of persons)")
        if self.init_from and (self.resume or self.pretrained):
            raise ValueError("--init-from replaces --pretrained and cannot go with --resume")
        if self.pretrained and self.backbone != "mobilenetv2":
            raise ValueError(f"no pretrained weights for the {self.backbone} backbone")
        self.frame_size = tuple(self.frame_size)  # type: ignore[assignment]
        self.crop_size = tuple(self.crop_size)  # type: ignore[assignment]
        self.input_spec()  # sizes and modes are checked here, before any data is read
        self.training_sources()

    def input_spec(self) -> InputSpec:
        return InputSpec(self.frame_size, self.crop_size, self.colour, self.flow)

    def training_sources(self) -> list[Source]:
        if self.train:
            return [Source.parse(text) for text in self.train]
        if self.dataset is None or self.root is None:
            raise ValueError("give --train SOURCE (repeatable), or --dataset and --root")
        options = tuple(sorted(self.dataset_options.items()))
        return [Source(self.dataset, str(self.root), "train", self.split, options)]

    def validation_source(self) -> Source:
        if self.val:
            return Source.parse(self.val, default_part="test")
        sources = self.training_sources()
        if len(sources) != 1 or sources[0].part != "train":
            raise ValueError(
                "with several training sources (or part=all) say which persons validate: "
                "--val NAME:ROOT[:KEY=VALUE,...], or --validation none"
            )
        only = sources[0]
        return Source(only.dataset, only.root, "test", only.split, only.options)

    def record(self) -> dict[str, Any]:
        """JSON-ready copy (paths as strings), stored in checkpoints and model cards."""
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
