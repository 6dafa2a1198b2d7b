"""The model card: the JSON file exported next to every ``.onnx`` model (same stem).

Torch-free on purpose: the service reads and checks cards with this module, and the exporter
(``training/export.py``) builds them with it, so both sides agree on one schema. A card says what
the model is (name, version, variant), what it expects (input layout and the exact preprocessing
configuration), which of its two self-pairing embeddings to use for enrolling and for querying
(``roles``), how it was trained, and the sha256 of the ``.onnx`` file it vouches for.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model.preprocessing import PAPER_INPUT, InputSpec

CARD_FORMAT = "astpn-model-card/1"
#: ONNX opset of exported graphs (recorded in each card's ``opset``).
DEFAULT_OPSET = 18
INPUT_NAME = "frames"
INPUT_LAYOUT = "BTCHW"
OUTPUT_NAMES = (
    "embedding_probe",
    "embedding_gallery",
    "attention_probe",
    "attention_gallery",
    "features",
)
#: The pair scorer (``<stem>.pair.onnx``): one query's per-step features against K candidates'.
PAIR_SCORER_INPUTS = ("query", "candidates", "candidate_lengths")
PAIR_SCORER_OUTPUTS = ("distance", "query_attention", "candidate_attention")
PAIR_SCORER_SUFFIX = ".pair.onnx"
#: Which embedding (and attention) of the self-pairing each service operation uses.
ROLE_NAMES = ("enroll", "query")
EMBEDDING_ROLES = ("probe", "gallery")
REQUIRED_KEYS = (
    "format",
    "name",
    "version",
    "variant",
    "input",
    "preprocessing",
    "embedding_size",
    "distance",
    "roles",
    "outputs",
    "training",
    "onnx_sha256",
    "created",
)
#: Default roles of the attention variants: the gallery is enrolled with the column-wise
#: (gallery-role) attention and queried with the row-wise (probe-role) one, as in training,
#: where camera-1 sequences are probes and camera-2 sequences the gallery.
DEFAULT_ATTENTION_ROLES = {"enroll": "gallery", "query": "probe"}
MEAN_ROLES = {"enroll": "probe", "query": "probe"}


class CardError(ValueError):
    """A card that is malformed or does not match its model; the message says what to do."""


class PreprocessingMismatch(CardError):
    """The card's preprocessing is not one the running code reproduces exactly."""


def card_path_for(onnx_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.json``: the card always sits next to its model."""
    return Path(onnx_path).with_suffix(".json")


def pair_scorer_path_for(onnx_path: str | os.PathLike[str]) -> Path:
    """``model.onnx`` -> ``model.pair.onnx``: the pair scorer sits next to its encoder."""
    path = Path(onnx_path)
    return path.with_name(path.stem + PAIR_SCORER_SUFFIX)


def pair_scorer_record(sha256: str, embedding_size: int) -> dict[str, Any]:
    """The card's ``pair_scorer`` entry: which file, its hash, and its interface."""
    return {
        "file_suffix": PAIR_SCORER_SUFFIX,
        "sha256": sha256,
        "inputs": {
            "query": ["Tq", embedding_size],
            "candidates": ["K", "Tg", embedding_size],
            "candidate_lengths": ["K"],
        },
        "input_dtypes": {"query": "float32", "candidates": "float32", "candidate_lengths": "int64"},
        "outputs": {
            "distance": ["K"],
            "query_attention": ["K", "Tq"],
            "candidate_attention": ["K", "Tg"],
        },
        "roles": {"query": "probe", "candidate": "gallery"},
        "distance": "euclidean",
    }


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_roles(variant: str) -> dict[str, str]:
    """Roles used when the exporter is not told otherwise (mean variants: both are equal)."""
    return dict(DEFAULT_ATTENTION_ROLES if variant in ("atpn", "astpn") else MEAN_ROLES)


def _json_normalised(value: Any) -> Any:
    """Tuples vs lists must not count as a difference, and paths become strings."""
    return json.loads(json.dumps(value, default=str))


def build_card(
    *,
    name: str,
    version: str,
    variant: str,
    embedding_size: int,
    onnx_sha256: str,
    roles: Mapping[str, str] | None = None,
    training: Mapping[str, Any] | None = None,
    opset: int | None = None,
    torch_version: str | None = None,
    created: dt.datetime | None = None,
    pair_scorer: Mapping[str, Any] | None = None,
    input_spec: InputSpec = PAPER_INPUT,
    backbone: str = "paper",
) -> dict[str, Any]:
    """The card of a freshly exported model, with its input spec as this code runs it."""
    roles = dict(roles) if roles is not None else default_roles(variant)
    _check_roles(roles)
    training_record = {"dataset": None, "command": None, "metrics": {}}
    training_record.update(training or {})
    created = created or dt.datetime.now(dt.UTC)
    return _json_normalised(
        {
            "format": CARD_FORMAT,
            "name": name,
            "version": version,
            "variant": variant,
            "backbone": backbone,
            "input": {
                "name": INPUT_NAME,
                "layout": INPUT_LAYOUT,
                "shape": ["B", "T", len(input_spec.channels), *input_spec.crop_size],
                "dtype": "float32",
                "channels": list(input_spec.channels),
                "frame_size": list(input_spec.frame_size),
                "crop_size": list(input_spec.crop_size),
            },
            "preprocessing": input_spec.config(),
            "embedding_size": int(embedding_size),
            "distance": "euclidean",
            "roles": roles,
            "outputs": list(OUTPUT_NAMES),
            "output_shapes": {
                "embedding_probe": ["B", embedding_size],
                "embedding_gallery": ["B", embedding_size],
                "attention_probe": ["B", "T"],
                "attention_gallery": ["B", "T"],
                "features": ["B", "T", embedding_size],
            },
            "training": training_record,
            "onnx_sha256": onnx_sha256,
            "pair_scorer": dict(pair_scorer) if pair_scorer is not None else None,
            "created": created.astimezone(dt.UTC).isoformat(timespec="seconds"),
            "opset": opset,
            "torch_version": torch_version,
        }
    )


def write_card(card: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write atomically (temporary file + rename): a reader never sees half a card."""
    path = Path(path)
    text = json.dumps(card, indent=2, sort_keys=False, default=str) + "\n"
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # same folder: rename is atomic
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_card(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a card and check its schema (not yet that it matches a model: see ``verify_card``)."""
    path = Path(path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CardError(f"{path} is not valid JSON ({exc}); re-export the model") from exc
    if not isinstance(card, dict):
        raise CardError(f"{path} holds a JSON {type(card).__name__}, not a model card object")
    check_schema(card, source=str(path))
    return card


def check_schema(card: Mapping[str, Any], source: str = "model card") -> None:
    """Required keys, the format tag, valid roles and outputs."""
    missing = [key for key in REQUIRED_KEYS if key not in card]
    if missing:
        raise CardError(
            f"{source} lacks {', '.join(missing)}; it was not written by "
            "`python -m training export` (or by an older version): re-export the model"
        )
    if card["format"] != CARD_FORMAT:
        raise CardError(
            f"{source} has format {card['format']!r}; this code reads {CARD_FORMAT!r}. "
            "Re-export the model with this version of the code"
        )
    if not isinstance(card["roles"], Mapping):
        raise CardError(f"{source}: roles must be an object like {DEFAULT_ATTENTION_ROLES}")
    _check_roles(card["roles"], source)
    if not isinstance(card["input"], Mapping) or not isinstance(card["outputs"], list):
        raise CardError(f"{source}: input must be an object and outputs a list; re-export")
    absent = [name for name in OUTPUT_NAMES if name not in card["outputs"]]
    if absent:
        raise CardError(f"{source}: outputs lack {', '.join(absent)}; re-export the model")
    if card["input"].get("name") != INPUT_NAME or card["input"].get("layout") != INPUT_LAYOUT:
        raise CardError(
            f"{source}: input must be {INPUT_NAME!r} in {INPUT_LAYOUT} layout, got "
            f"{card['input'].get('name')!r} {card['input'].get('layout')!r}"
        )


def _check_roles(roles: Mapping[str, str], source: str = "roles") -> None:
    for role in ROLE_NAMES:
        if roles.get(role) not in EMBEDDING_ROLES:
            raise CardError(
                f"{source}: roles.{role} is {roles.get(role)!r}; it must be one of "
                f"{', '.join(EMBEDDING_ROLES)}"
            )


def verify_card(
    card: Mapping[str, Any],
    onnx_path: str | os.PathLike[str],
    *,
    check_preprocessing: bool = True,
) -> None:
    """Refuse a card that does not vouch for ``onnx_path`` or for this code's preprocessing.

    Checks, in order: the schema, the sha256 of the ``.onnx`` file, and (unless
    ``check_preprocessing`` is false) that the running code reproduces the recorded
    preprocessing (``input_spec_of``). Raises ``CardError`` (``PreprocessingMismatch`` for the last)
    or ``OSError`` if the model file cannot be read.
    """
    check_schema(card)
    actual = sha256_file(onnx_path)
    if actual != card["onnx_sha256"]:
        raise CardError(
            f"sha256 of {onnx_path} is {actual}, the card records {card['onnx_sha256']}: the "
            ".onnx file is not the one exported with this card (replaced or damaged). Re-export "
            "both files together with `python -m training export`"
        )
    scorer = card.get("pair_scorer")
    if scorer:
        scorer_path = pair_scorer_path_for(onnx_path)
        if not scorer_path.is_file():
            raise CardError(
                f"the card vouches for a pair scorer {scorer_path}, which is missing; copy it "
                "next to the model (it is written by the same export) or re-export"
            )
        if sha256_file(scorer_path) != scorer.get("sha256"):
            raise CardError(
                f"sha256 of {scorer_path} differs from the card's pair_scorer.sha256: it is not "
                "the pair scorer exported with this model. Re-export both with "
                "`python -m training export`"
            )
    if check_preprocessing:
        input_spec_of(card)


def input_spec_of(card: Mapping[str, Any]) -> InputSpec:
    """The input spec a card records; ``PreprocessingMismatch`` when this code would not
    produce exactly the recorded preprocessing (another code version made the model)."""
    recorded = _json_normalised(card["preprocessing"])
    try:
        return InputSpec.from_config(recorded)
    except ValueError as exc:
        raise PreprocessingMismatch(
            f"the model was made with preprocessing version {_version(recorded)} that this code "
            f"(model/preprocessing.py) does not reproduce: {exc}. Feeding it these inputs "
            "would give meaningless embeddings: re-train or re-export the model with this "
            "code, or run the code version the model was made with"
        ) from exc


def _version(config: Any) -> str:
    if isinstance(config, dict) and "version" in config:
        return repr(config["version"])
    return "unknown"
