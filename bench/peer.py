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


def measure_model(
    path: Path, frames: list[np.ndarray], min_seconds: float, threads: int = 0
) -> dict[str, Any]:
    """Preprocessing of one tracklet, and the network on 1 and on ``BATCH`` tracklets, with
    ONNX Runtime's intra-op ``threads`` (0: its default, as the service)."""
    from model.preprocessing import prepare_tracklet
    from service.encoder import Encoder

    encoder = Encoder(path, use_cuda=False, intra_op_threads=threads)
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
        "threads": threads or "ORT default",
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


def _stage_table(models: dict[str, dict[str, Any]]) -> Table:
    stages = Table(
        f"Ours and the peer on the same {FRAMES} frames (128 x 64 crops), ONNX Runtime",
        [
            "model",
            "input",
            "ONNX Runtime threads",
            "stage",
            "B x T",
            "ms / call",
            "tracklets/s",
            "frames/s",
            "CPU ms / call",
        ],
    )
    for key, model in models.items():
        label = f"{key.split(',')[0]}: {model['name']} {model['version']}"
        t, c = model["timings"], model["cpu"]
        for stage, stage_key, batch in (
            ("preprocessing (prepare_tracklet)", "preprocess", 1),
            ("network (Encoder.embed)", "network_1", 1),
            ("network (Encoder.embed)", "network_batch", BATCH),
        ):
            stages.add(
                label,
                model["input"],
                model["threads"],
                stage,
                f"{batch} x {FRAMES}",
                *_rates(t[stage_key], batch),
                ms(c[stage_key].median),
            )
    return stages


def _ratio_table(models: dict[str, dict[str, Any]]) -> tuple[Table, dict[str, Any]]:
    ratio = Table(
        "Peer ratio (ours / peer, tracklets of 16 frames per second)",
        [
            "what",
            "ONNX Runtime threads",
            "ours tracklets/s",
            "peer tracklets/s",
            "ratio (ours / peer)",
            "ratio by CPU time (ours / peer)",
        ],
    )
    raw: dict[str, Any] = {}
    for threads in ("default", "1"):
        ours, peer = models[f"ours, {threads} threads"], models[f"peer, {threads} threads"]
        wall = (_throughput(ours), _throughput(peer))
        cpu = (_throughput(ours, "cpu"), _throughput(peer, "cpu"))
        for what in wall[0]:
            by_wall = wall[0][what] / wall[1][what]
            by_cpu = cpu[0][what] / cpu[1][what]
            ratio.add(what, threads, wall[0][what], wall[1][what], by_wall, by_cpu)
            raw[f"{what}, {threads} threads"] = {"wall": by_wall, "cpu": by_cpu}
    return ratio, raw


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
            "service's `Encoder` (ONNX Runtime, the service's session options; its default "
            "threads, then one) after its own preprocessing (`prepare_tracklet` with the input "
            "spec its card records). Median wall and CPU time per call."
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
        f"{who}, {threads or 'default'} threads": measure_model(path, frames, min_seconds, threads)
        for threads in (0, 1)
        for who, path in (("ours", ours_path), ("peer", peer_path))
    }
    ratio, part.raw["ratio"] = _ratio_table(models)
    ratio.notes.append(
        f"Same process, same frames, one model after the other; ONNX Runtime on "
        f"{models['ours, default threads']['provider']}, with its default threads (as the "
        "service) and with one. Ours: "
        f"`{ours_path.name}` (the default `REID_MODEL_PATH`, "
        f"{models['ours, default threads']['embedding_size']}-d). Peer: ImageNet MobileNetV2, "
        f"224 x 224, mean over frames ({models['peer, default threads']['embedding_size']}-d; "
        f"{how}). CPU time: the process's, all threads (ONNX Runtime's too), per call; on a "
        "machine shared with other jobs the wall-time ratio is noise and the CPU-time ratio is "
        "the one to read (with one thread it has no spin-waiting in it)."
    )
    part.tables = [_stage_table(models), ratio]
    part.raw["models"] = {
        key: {
            **{k: v for k, v in model.items() if k not in ("timings", "cpu")},
            "timings": {k: v.as_dict() for k, v in model["timings"].items()},
            "cpu": {k: v.as_dict() for k, v in model["cpu"].items()},
        }
        for key, model in models.items()
    }
    part.seconds = time.perf_counter() - started
    return part
