"""`python -m training <command>`: every command lives in its own module with a `register` hook."""

from __future__ import annotations

import argparse
import importlib

COMMAND_MODULES = (
    "training.synthetic",
    "training.train",
    "training.evaluate",
    "training.ablation",
    "training.export",
    "training.attention",
    "training.pretrained",
    "training.color_baseline",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and export ASTPN video re-id models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
