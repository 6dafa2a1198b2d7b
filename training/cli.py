"""Command-line plumbing shared by the ``python -m training`` commands (torch-free).

Settings are declared once, as dataclass fields whose metadata carries the help text (see
:func:`setting`); :func:`add_settings` turns them into argparse options and
:func:`settings_from` builds the dataclass back from the parsed arguments. The option name is
the field name with dashes; its type, default and choices come from the field.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from typing import Any

_META = "cli"


def setting(default: Any, help: str, **cli: Any) -> Any:
    """A dataclass field with its command-line help; ``cli`` may give ``choices``, ``metavar``,
    ``flag`` (the option name, when not the field's), ``parse`` (a str -> value function) or
    ``skip=True`` (not an option: set by the program)."""
    cli["help"] = help
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default), metadata={_META: cli}
        )
    return dataclasses.field(default=default, metadata={_META: cli})


def parse_key_values(items: Sequence[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict; values parsed as JSON when possible (numbers, booleans)."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {item!r}")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


def parse_int_list(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; a single number is a one-element list."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, e.g. 0,1,2: {text!r}"
        ) from None


def parse_size(text: str) -> tuple[int, int]:
    """``"128x64"`` -> (128, 64): height x width."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH, e.g. 128x64: {text!r}") from None
    return h, w


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(type without ``None``, whether ``None`` is allowed)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return annotation, False


def _option(field: dataclasses.Field, hint: Any) -> tuple[str, dict[str, Any]] | None:
    cli = dict(field.metadata.get(_META, {}))
    if not cli or cli.pop("skip", False):
        return None
    flag = cli.pop("flag", "--" + field.name.replace("_", "-"))
    parse = cli.pop("parse", None)
    default = field.default if field.default is not dataclasses.MISSING else field.default_factory()
    kind, _ = _base_type(hint)
    origin = typing.get_origin(kind)
    if kind is bool:
        return flag, {"action": "store_true", "default": default, **cli}
    if origin in (list, tuple) and parse is None:
        item = typing.get_args(kind)[0]
        return flag, {"action": "append", "type": item, "default": None, **cli}
    convert = parse or (kind if kind in (int, float) else str)
    return flag, {"type": convert, "default": default, **cli}


def add_settings(
    parser: argparse.ArgumentParser, cls: type, skip: Sequence[str] = ()
) -> argparse.ArgumentParser:
    """One option per field of the dataclass ``cls`` that carries :func:`setting` metadata."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip:
            continue
        made = _option(field, hints[field.name])
        if made is not None:
            flag, kwargs = made
            parser.add_argument(flag, dest=field.name, **kwargs)
    return parser


def settings_from(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """The dataclass ``cls`` from parsed arguments (fields without an option keep their
    defaults unless given in ``extra``)."""
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):
        if field.name in extra or not hasattr(args, field.name):
            continue
        value = getattr(args, field.name)
        kind, _ = _base_type(hints[field.name])
        if value is None and typing.get_origin(kind) in (list, tuple):
            continue  # an append option never given: the field's default
        if typing.get_origin(kind) is tuple and value is not None:
            value = tuple(value)
        values[field.name] = value
    values.update(extra)
    return cls(**values)


def add_common_arguments(parser: argparse.ArgumentParser, *, dataset_required: bool = True) -> None:
    """Dataset, cache, device and progress options shared by train, evaluate and ablate."""
    parser.add_argument(
        "--dataset",
        required=dataset_required,
        help="dataset name: ilidsvid, prid2011, mars, folder or synthetic",
    )
    parser.add_argument("--root", required=dataset_required, help="dataset root folder")
    parser.add_argument(
        "--dataset-option",
        action="append",
        metavar="KEY=VALUE",
        help="extra option passed to the dataset builder (repeatable), e.g. "
        "min_frames=21 for PRID-2011, test_identities=200 for the folder dataset",
    )
    parser.add_argument(
        "--cache-dir",
        default=None,
        help="keep preprocessed tracklets here as .npy (keyed by frame files and "
        "preprocessing settings) so later runs skip decoding and optical flow",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="threads for decoding/preprocessing tracklets (default 1)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="torch device; auto = cuda when available (default auto)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch/ONNX Runtime CPU threads (default: all cores)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_baseline_arguments(parser: argparse.ArgumentParser) -> None:
    """The test protocol of the no-training baselines (``color-baseline``, ``peer-baseline``)."""
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. folder")
    parser.add_argument("--root", required=True, help="dataset root folder")
    parser.add_argument(
        "--dataset-option", action="append", metavar="KEY=VALUE", help="dataset builder option"
    )
    parser.add_argument(
        "--splits", type=parse_int_list, default=[0], help="comma-separated split indices"
    )
    parser.add_argument("--max-frames", type=int, default=32, help="frames used per tracklet")
    parser.add_argument(
        "--all-test-identities",
        action="store_true",
        help="also test on the split's training persons (as evaluate does)",
    )
