"""Side by side: the shipped model and the frame-wise embedder users run today, in one process,
on the same frames, through the service's own ``Encoder`` (ONNX Runtime, the service's session
options and default threads).

* Ours: the model ``REID_MODEL_PATH`` defaults to (read from ``service.settings``, never spelled
  here), prepared with the input spec its card records.
* The peer: ``training/peer.py``'s ImageNet MobileNetV2 at 224 x 224 with mean pooling over
  frames, exported to ONNX with a card of the service's format. Exporting needs PyTorch, so the
  export is a cached artefact: made once under ``cache/bench-peer/`` (keyed by the hash of the
  code and weights that make it) and reused by every later run, which then needs no PyTorch.
  Without PyTorch and without the cached file the part is skipped and says why.

The frames: 16 frames of a synthetic pedestrian cut at 128 x 64, the size tracker crops are.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, Timing, ms
from bench.report import ROOT, PartResult, Table

FRAMES = 16
BATCH = 8
PEER_CACHE = ROOT / "cache" / "bench-peer"
#: What the peer's ONNX is made from: a change to any of them makes a new cached export.
PEER_SOURCES = (
    "training/peer.py",
    "training/export.py",
    "model/backbones.py",
    "model/network.py",
    "training/pretrained/mobilenetv2_imagenet.npz",
)


def peer_model_path() -> tuple[Path | None, str]:
    """The cached peer ONNX (exported now if missing and PyTorch is there), or None and why."""
    digest = hashlib.sha256()
    for name in PEER_SOURCES:
        digest.update((ROOT / name).read_bytes())
    path = PEER_CACHE / f"imagenet-mobilenetv2-peer-{digest.hexdigest()[:12]}.onnx"
    if path.is_file() and path.with_suffix(".json").is_file():
        return path, f"cached export {path.relative_to(ROOT)}"
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, (
            f"the peer's ONNX is not cached ({path.relative_to(ROOT)}) and exporting it needs "
            "PyTorch: pip install -e '.[train]' once, then this part runs without it"
        )
    from training.peer import export_peer_onnx

    print(
        f"bench peer: exporting the ImageNet MobileNetV2 peer to {path} once (PyTorch); later "
        "runs reuse it",
        file=sys.stderr,
    )
    PEER_CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=PEER_CACHE) as scratch:
        made = export_peer_onnx(Path(scratch) / path.name)
        shutil.move(made, path)
        shutil.move(made.with_suffix(".json"), path.with_suffix(".json"))  # the card last
    return path, f"exported now to {path.relative_to(ROOT)} (cached for later runs)"


def _frames(seed: int) -> list[np.ndarray]:
    from training.synthetic.tracklet import synthesize_tracklet

    return synthesize_tracklet(identity=seed % 1000, camera=1, num_frames=FRAMES, seed=seed)


def measure_model(path: Path, frames: list[np.ndarray], min_seconds: float) -> dict[str, Any]:
    """Preprocessing of one tracklet, and the network on 1 and on ``BATCH`` tracklets."""
    from model.preprocessing import prepare_tracklet
    from service.encoder import Encoder

    encoder = Encoder(path, use_cuda=False)
    x = prepare_tracklet(frames, encoder.spec)
    timings, cpu = {}, {}
    for key, fn in (
        ("preprocess", lambda: prepare_tracklet(frames, encoder.spec)),
        ("network_1", lambda: encoder.embed([x], "query")),
        ("network_batch", lambda: encoder.embed([x] * BATCH, "query")),
    ):
        timings[key], cpu[key] = _time_with_cpu(fn, min_seconds)
    spec = encoder.spec
    return {
        "name": encoder.name,
        "version": encoder.version,
        "path": str(path),
        "input": f"{spec.crop_size[0]} x {spec.crop_size[1]} {spec.colour}, flow {spec.flow}",
        "embedding_size": encoder.embedding_size,
        "provider": encoder.provider,
        "timings": timings,
        "cpu": cpu,
    }


def _time_with_cpu(fn: Any, min_seconds: float, min_runs: int = 5) -> tuple[Timing, Timing]:
    """Wall time and the process's CPU time (every thread, ONNX Runtime's included) of each
    call: on a machine shared with other jobs the CPU time is what the work itself costs."""
    fn()
    wall: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(wall) < min_runs or time.perf_counter() - started < min_seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return Timing(wall), Timing(cpu)


def _rates(timing: Timing, tracklets: int) -> tuple[float, float, float]:
    """(ms per call, tracklets/s, frames/s) from a median."""
    seconds = timing.median
    return ms(seconds), tracklets / seconds, tracklets * FRAMES / seconds


def _throughput(model: dict[str, Any], kind: str = "timings") -> dict[str, float]:
    """Tracklets per second of wall time (``timings``) or of CPU time (``cpu``)."""
    t = model[kind]
    both = t["preprocess"].median + t["network_1"].median
    return {
        "network 1 x 16": 1 / t["network_1"].median,
        f"network {BATCH} x 16": BATCH / t["network_batch"].median,
        "preprocessing + network 1 x 16": 1 / both,
    }


def run(context: Context) -> PartResult:
    from service.settings import Settings

    config = context.config
    started = time.perf_counter()
    part = PartResult(
        name="peer",
        title="7. Side by side: a frame-wise peer",
        description=(
            "The shipped model (the default `REID_MODEL_PATH`) and the frame-wise embedder users "
            "run today (`training/peer.py`: ImageNet MobileNetV2 at 224 x 224, mean over frames, "
            "exported to ONNX once and cached under `cache/bench-peer/`), in one process on the "
            f"same {FRAMES} frames of a synthetic pedestrian (128 x 64 crops), each through the "
            "service's `Encoder` (ONNX Runtime, the service's session options and default "
            "threads) after its own preprocessing (`prepare_tracklet` with the input spec its "
            "card records). Median time per call."
        ),
    )
    peer_path, how = peer_model_path()
    if peer_path is None:
        part.notes.append(f"Skipped: {how}.")
        part.seconds = time.perf_counter() - started
        return part
    ours_path = Path(Settings.model_fields["model_path"].default)
    frames = _frames(config.seed)
    min_seconds = config.min_seconds
    models = {
        "ours": measure_model(ours_path, frames, min_seconds),
        "peer": measure_model(peer_path, frames, min_seconds),
    }
    stages = Table(
        f"Ours and the peer on the same {FRAMES} frames (128 x 64 crops), ONNX Runtime",
        [
            "model",
            "input",
            "stage",
            "B x T",
            "ms / call",
            "tracklets/s",
            "frames/s",
            "CPU ms / call",
        ],
    )
    for key, model in models.items():
        label = f"{key}: {model['name']} {model['version']}"
        t, c = model["timings"], model["cpu"]
        for stage, key, batch in (
            ("preprocessing (prepare_tracklet)", "preprocess", 1),
            ("network (Encoder.embed)", "network_1", 1),
            ("network (Encoder.embed)", "network_batch", BATCH),
        ):
            stages.add(
                label,
                model["input"],
                stage,
                f"{batch} x {FRAMES}",
                *_rates(t[key], batch),
                ms(c[key].median),
            )
    ratio = Table(
        "Peer ratio (ours / peer, tracklets of 16 frames per second)",
        [
            "what",
            "ours tracklets/s",
            "peer tracklets/s",
            "ratio (ours / peer)",
            "ratio by CPU time (ours / peer)",
        ],
    )
    ours, peer = _throughput(models["ours"]), _throughput(models["peer"])
    ours_cpu, peer_cpu = _throughput(models["ours"], "cpu"), _throughput(models["peer"], "cpu")
    for what in ours:
        ratio.add(
            what, ours[what], peer[what], ours[what] / peer[what], ours_cpu[what] / peer_cpu[what]
        )
    ratio.notes.append(
        f"Same process, same frames, one model after the other; ONNX Runtime on "
        f"{models['ours']['provider']} with the service's default threads. Ours: "
        f"`{ours_path.name}` (the default `REID_MODEL_PATH`, "
        f"{models['ours']['embedding_size']}-d). "
        f"Peer: ImageNet MobileNetV2, 224 x 224, mean over frames "
        f"({models['peer']['embedding_size']}-d; {how}). Frames/s = tracklets/s x {FRAMES}. "
        "CPU time: the process's, all threads (ONNX Runtime's too), per call; the CPU-time "
        "ratio is the one to trust on a machine shared with other jobs."
    )
    part.tables = [stages, ratio]
    part.raw = {
        key: {
            **{k: v for k, v in model.items() if k not in ("timings", "cpu")},
            "timings": {k: v.as_dict() for k, v in model["timings"].items()},
            "cpu": {k: v.as_dict() for k, v in model["cpu"].items()},
        }
        for key, model in models.items()
    }
    part.raw["ratio"] = {what: ours[what] / peer[what] for what in ours}
    part.raw["ratio_cpu"] = {what: ours_cpu[what] / peer_cpu[what] for what in ours}
    part.seconds = time.perf_counter() - started
    return part
