"""PyTorch checkpoints of ASTPN models: the weights, what is needed to rebuild the network, and any
training state the caller adds (optimiser, epoch, iteration, RNG state, metrics, dataset...).

A checkpoint is one ``torch.save`` dict. It is written to a temporary file in the same folder and
renamed over the target, so an interrupted save (time limit, Ctrl-C, full disk) never leaves a
truncated ``last.pt`` behind: the previous checkpoint survives intact.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.network import ASTPN
from model.preprocessing import PAPER_INPUT, InputSpec

#: Keys that describe the network itself; training state may use any other name.
MODEL_KEYS = (
    "variant",
    "num_identities",
    "feature_dim",
    "dropout",
    "backbone",
    "input_spec",
    "state_dict",
)
#: Keys that checkpoints written before backbones and input specs existed lack.
_OPTIONAL_MODEL_KEYS = ("dropout", "backbone", "input_spec")


def _plain(value: Any) -> Any:
    """NumPy scalars -> Python numbers, recursively, so the file loads with weights_only=True."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def save_checkpoint(
    path: str | os.PathLike[str], model: ASTPN, *, weights_only: bool = False, **extra: Any
) -> Path:
    """Save ``model`` and ``extra`` training state to ``path`` atomically; returns the path.

    ``weights_only`` writes what fine-tuning needs and nothing else: the network without its
    identity classifier, in float16 (half the size; ``--init-from`` loads it into float32).
    """
    clashes = sorted(set(extra) & set(MODEL_KEYS))
    if clashes:
        raise ValueError(f"{', '.join(clashes)} are reserved checkpoint keys (the model's own)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # On the CPU so a GPU-trained checkpoint opens anywhere without map_location tricks.
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if weights_only:
        state = {
            k: v.half() if v.is_floating_point() else v
            for k, v in state.items()
            if not k.startswith("classifier.")
        }
    payload = {
        "variant": model.variant,
        "num_identities": 0 if weights_only else model.num_identities,
        "feature_dim": model.feature_dim,
        "dropout": model.dropout_p,
        "backbone": model.backbone,
        "input_spec": model.input_spec.config(),
        "state_dict": state,
        **_plain(extra),
    }
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")  # same folder: rename is atomic
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> tuple[ASTPN, dict[str, Any]]:
    """Rebuild the saved network (eval mode) and return it with the whole checkpoint dict.

    Loaded with ``weights_only=True``: a checkpoint holds tensors and plain Python data only, so
    opening one cannot run code.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True)
    missing = [key for key in MODEL_KEYS if key not in state and key not in _OPTIONAL_MODEL_KEYS]
    if missing:
        raise ValueError(
            f"{path} is not an ASTPN checkpoint (it lacks {', '.join(missing)}); checkpoints "
            "are written by `python -m training train`"
        )
    model = build_model_from(state)
    model.load_state_dict(state["state_dict"])
    model.to(map_location).eval()
    return model, state


def build_model_from(state: dict[str, Any], **overrides: Any) -> ASTPN:
    """An untrained network shaped like the checkpoint ``state`` describes (``overrides``
    replace any of its constructor arguments, e.g. a new dropout when resuming)."""
    spec = state.get("input_spec")
    arguments: dict[str, Any] = {
        "variant": str(state["variant"]),
        "num_identities": int(state["num_identities"]),
        "feature_dim": int(state["feature_dim"]),
        "dropout": float(state.get("dropout", 0.6)),
        "backbone": str(state.get("backbone", "paper")),
        "input_spec": InputSpec.from_config(spec) if spec else PAPER_INPUT,
    }
    arguments.update(overrides)
    return ASTPN(**arguments)
