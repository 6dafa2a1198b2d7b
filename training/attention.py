"""``python -m training attention``: which frames of a tracklet the model looks at, as a picture.

For one tracklet (a folder of frames), the exported model's self-paired attention: each frame's
weight in the tracklet's embedding. With a second tracklet (``--gallery``), the joint attention of
the pair as the pair scorer computes it (what ``/query`` with ``rerank`` answers per match), next
to each tracklet's own, and both distances. Frames are ordered by the numbers in their names.
Everything runs through ONNX Runtime on the exported files, exactly as the service runs them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from model.card import INPUT_NAME, card_path_for, input_spec_of, load_card, pair_scorer_path_for
from model.preprocessing import prepare_tracklet, read_frame

_ROLES = ("probe", "gallery")


def read_tracklet(folder: Path) -> list[np.ndarray]:
    """Frames of a folder in frame-number order (RGB)."""
    from training.datasets import sorted_frames

    paths = sorted_frames(p for p in Path(folder).iterdir() if p.is_file())
    if not paths:
        raise FileNotFoundError(f"no image frames in {folder}")
    return [read_frame(p) for p in paths]


def explain(
    model_path: Path, query: list[np.ndarray], gallery: list[np.ndarray] | None = None
) -> dict[str, Any]:
    """Attention weights (one per frame) and distances for a tracklet, or a pair of them."""
    import onnxruntime as ort

    card = load_card(card_path_for(model_path))
    roles = card["roles"]
    spec = input_spec_of(card)
    encoder = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])

    def encode(frames: list[np.ndarray], role: str) -> dict[str, np.ndarray]:
        which = roles[role]
        outputs = encoder.run(
            [f"embedding_{which}", f"attention_{which}", "features"],
            {INPUT_NAME: prepare_tracklet(frames, spec)[None]},
        )
        return dict(
            zip(("embedding", "attention", "features"), (o[0] for o in outputs), strict=True)
        )

    result: dict[str, Any] = {"query": encode(query, "query")}
    if gallery is None:
        return result
    result["gallery"] = encode(gallery, "enroll")
    result["index_distance"] = float(
        np.linalg.norm(result["query"]["embedding"] - result["gallery"]["embedding"])
    )
    if card.get("pair_scorer"):
        scorer = ort.InferenceSession(
            str(pair_scorer_path_for(model_path)), providers=["CPUExecutionProvider"]
        )
        candidate = result["gallery"]["features"]
        distance, q_att, g_att = scorer.run(
            ["distance", "query_attention", "candidate_attention"],
            {
                "query": result["query"]["features"],
                "candidates": candidate[None],
                "candidate_lengths": np.array([candidate.shape[0]], np.int64),
            },
        )
        result["pair_distance"] = float(distance[0])
        result["query"]["pair_attention"] = q_att[0]
        result["gallery"]["pair_attention"] = g_att[0]
    return result


def plot_attention(
    tracklets: dict[str, tuple[list[np.ndarray], dict[str, np.ndarray]]],
    out_path: Path,
    title: str,
    max_frames: int = 24,
) -> Path:
    """One panel per tracklet: its frames (evenly spaced, at most ``max_frames``) over bars of
    their attention weights (own, and in the pair when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import cv2
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        2 * len(tracklets),
        1,
        figsize=(min(2 + 0.55 * max_frames, 16), 3.2 * len(tracklets)),
        gridspec_kw={"height_ratios": [2, 1] * len(tracklets)},
        dpi=100,
    )
    for row, (label, (frames, outputs)) in enumerate(tracklets.items()):
        picks = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round())
        picks = picks.astype(int)
        thumbs = [cv2.resize(frames[i], (48, 96), interpolation=cv2.INTER_AREA) for i in picks]
        image_ax, bar_ax = axes[2 * row], axes[2 * row + 1]
        image_ax.imshow(np.hstack(thumbs))
        image_ax.set_axis_off()
        image_ax.set_title(f"{label}: {len(frames)} frames (shown: {len(picks)})", fontsize=10)
        width = 0.4 if "pair_attention" in outputs else 0.8
        own = outputs["attention"][picks]
        bar_ax.bar(picks - (width / 2 if width < 0.8 else 0), own, width, label="own attention")
        if "pair_attention" in outputs:
            pair = outputs["pair_attention"][picks]
            bar_ax.bar(picks + width / 2, pair, width, label="attention in the pair")
        bar_ax.axhline(1.0 / len(frames), color="grey", lw=0.8, ls="--", label="uniform")
        bar_ax.set_xlim(picks[0] - 0.5, picks[-1] + 0.5)
        bar_ax.set_xlabel("frame")
        bar_ax.set_ylabel("weight")
        bar_ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "attention",
        description=(
            "Run an exported model on a tracklet (a folder of frames, ordered by the numbers "
            "in their names) and draw its frames over their attention weights. With --gallery, "
            "also the joint attention of the pair (the pair scorer, as /query's rerank "
            "computes it) and both distances."
        ),
    )
    parser.add_argument("--model", type=Path, required=True, help="exported .onnx (card beside)")
    parser.add_argument("--query", type=Path, required=True, help="folder of the query's frames")
    parser.add_argument("--gallery", type=Path, help="folder of a gallery tracklet's frames")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument(
        "--max-frames", type=int, default=24, help="frames drawn per tracklet (evenly spaced)"
    )
    parser.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    query = read_tracklet(args.query)
    gallery = read_tracklet(args.gallery) if args.gallery else None
    result = explain(args.model, query, gallery)
    panels = {f"query {args.query.name}": (query, result["query"])}
    title = f"{args.model.name}"
    if gallery is not None:
        panels[f"gallery {args.gallery.name}"] = (gallery, result["gallery"])
        title += f": index distance {result['index_distance']:.3f}"
        if "pair_distance" in result:
            title += f", pair distance {result['pair_distance']:.3f}"
    out = plot_attention(panels, args.out, title, args.max_frames)
    print(f"wrote {out}")
    return 0
