"""``reid-client``: the service from the command line, on :class:`service.client.ReidClient`.

```
reid-client enroll-folder ROOT              # ROOT/<camera>/<identity>/<frames> -> the gallery
reid-client video cam1.mp4 --tracks cam1.txt --camera cam1 --enroll
reid-client video cam2.mp4 --tracks cam2.txt --camera cam2 --query --exclude-cameras cam2
reid-client query f1.jpg f2.jpg f3.jpg
reid-client grid QUERIES --out ranked.png   # QUERIES/<camera>/<identity>/<frames> -> a PNG
```

The service's address and key come from ``--url``/``--api-key`` or ``REID_URL``/``REID_API_KEY``.
``enroll-folder`` gives every tracklet an Idempotency-Key made from its camera, identity, folder
and frame contents, so running it again after an interruption enrolls only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from service.client import ReidClient, ReidError
from service.grid_png import Cell, GridRow, draw_grid
from service.schemas import MatchOut
from service.video_schemas import VideoJob

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_DIGITS = re.compile(r"\d+")


# ------------------------------------------------------------------------------------ folders


def _frame_key(path: Path) -> tuple[int, str]:
    runs = _DIGITS.findall(path.stem)
    return (int(runs[-1]) if runs else -1, path.name)


def _frames_in(folder: Path) -> list[Path]:
    """Image files in frame-number order (the last number in the name), as training reads."""
    images = [
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    ]
    return sorted(images, key=_frame_key)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_tracklets(root: Path) -> list[tuple[str, str, Path]]:
    """(camera, identity, folder) of every tracklet under ``ROOT/<camera>/<identity>/``: the
    identity folder holds the frames of one tracklet, or one sub-folder per tracklet (the
    layout ``python -m training --dataset folder`` reads)."""
    if not root.is_dir():
        raise SystemExit(
            f"reid-client: {root} is not a folder (expected ROOT/<camera>/<identity>/)"
        )
    found = []
    for camera in _subdirs(root):
        for person in _subdirs(camera):
            folders = [person] if _frames_in(person) else _subdirs(person)
            found += [
                (camera.name, person.name, folder) for folder in folders if _frames_in(folder)
            ]
    if not found:
        raise SystemExit(f"reid-client: no frames under {root}/<camera>/<identity>/")
    return found


def folder_key(root: Path, camera: str, identity: str, frames: Sequence[Path]) -> str:
    """Same folder, same frames -> same key: a rerun replays instead of enrolling again."""
    digest = hashlib.sha256(f"{camera}\x1f{identity}".encode())
    for frame in frames:
        digest.update(f"\x1f{frame.relative_to(root)}\x1f".encode())
        digest.update(hashlib.sha256(frame.read_bytes()).digest())
    return "folder-" + digest.hexdigest()[:48]


def enroll_folder(client: ReidClient, root: Path, progress: bool) -> dict[str, Any]:
    tracklets = folder_tracklets(root)
    enrolled, identities = [], set()
    bar = tqdm(tracklets, desc="enrolling", unit="tracklet", disable=not progress)
    for camera, identity, folder in bar:
        frames = _frames_in(folder)
        answer = client.enroll(
            frames,
            identity=identity,
            camera=camera,
            idempotency_key=folder_key(root, camera, identity, frames),
        )
        enrolled.append({"folder": str(folder), **answer.model_dump(exclude={"attention"})})
        identities.add(identity)
        bar.set_postfix(identities=len(identities))
    cameras = {camera for camera, _, _ in tracklets}
    return {"tracklets": enrolled, "identities": len(identities), "cameras": len(cameras)}


# ------------------------------------------------------------------------------------- grid


def _decode(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _match_cell(client: ReidClient, match: MatchOut, truth: str | None) -> Cell:
    """The match shown by its most attended thumbnail (in this pair, when re-scored)."""
    thumbnails = client.tracklet(match.tracklet_id).thumbnails
    image = None
    if thumbnails:
        pair = match.attention
        best = max(thumbnails, key=lambda t: pair[t.frame_index] if pair else t.attention)
        image = _decode(client.thumbnail(best))
    verdict = "unknown" if truth is None else "correct" if match.identity == truth else "wrong"
    return Cell(image, [f"#{match.rank} {match.identity}", f"d={match.distance:.3f}"], verdict)


def grid_row(
    client: ReidClient, frames: Sequence[Path], truth: str | None, args: argparse.Namespace
) -> GridRow:
    """One query tracklet and its ranked matches, as the picture shows them."""
    answer = client.query(
        frames,
        top_k=args.top_k,
        max_distance=args.max_distance,
        cameras=_csv(args.cameras),
        exclude_cameras=_csv(args.exclude_cameras),
        rerank=args.rerank,
    )
    attention = np.asarray(answer.attention)
    image = _decode(frames[int(np.argmax(attention))].read_bytes())
    query = Cell(image, [truth or frames[0].parent.name, "query"], "query")
    return GridRow(query, attention, [_match_cell(client, m, truth) for m in answer.matches])


def ranked_grid(client: ReidClient, args: argparse.Namespace) -> str:
    """Query with every tracklet under ``args.queries`` and write the PNG; what to print."""
    rows, first = [], []
    tracklets = folder_tracklets(args.queries)
    for _, identity, folder in tqdm(tracklets, desc="querying", disable=args.no_progress):
        truth = None if args.unlabelled else identity
        row = grid_row(client, _frames_in(folder), truth, args)
        rows.append(row)
        first += [row.matches[0].verdict] if row.matches else []
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), draw_grid(rows)):
        raise OSError(f"cannot write {args.out}")
    known = [verdict for verdict in first if verdict != "unknown"]
    score = f"; the right person first for {known.count('correct')} of {len(rows)}"
    return f"wrote {args.out}: {len(rows)} queries" + (score if known else "")


# ------------------------------------------------------------------------------------ videos


def _identities(text: str | None) -> dict[str, str] | None:
    if text is None:
        return None
    path = Path(text)
    raw = path.read_text() if path.is_file() else text
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SystemExit(
            f'reid-client: --identities is not JSON ({exc.msg}): give {{"3": "alice"}} or a '
            "file holding it"
        ) from exc
    return {str(k): str(v) for k, v in mapping.items()}


def _csv(text: str | None) -> list[str] | None:
    return [item.strip() for item in text.split(",") if item.strip()] if text else None


def run_video(client: ReidClient, args: argparse.Namespace) -> VideoJob:
    quiet = args.no_progress
    sending = tqdm(desc="uploading", unit="B", unit_scale=True, disable=quiet)
    decoding = tqdm(desc="decoding", unit="frame", disable=quiet)

    def uploaded(done: int, total: int) -> None:
        sending.total = total
        sending.n = done  # a retried upload starts again from 0
        sending.refresh()

    def show(job: VideoJob) -> None:
        decoding.total = job.progress.frames_total or None
        decoding.n = job.progress.frames_decoded
        tracks = f"{job.progress.tracks_embedded}/{job.progress.tracks_total}"
        decoding.set_postfix(status=job.status, tracks=tracks)

    common = {
        "start_time": args.start_time,
        "fps": args.fps,
        "min_track_frames": args.min_track_frames,
        "on_progress": show,
        "on_upload": uploaded,
    }
    try:
        if args.enroll:
            return client.enroll_video(
                args.video,
                args.tracks,
                args.camera,
                identities=_identities(args.identities),
                idempotency_key=args.idempotency_key,
                **common,
            )
        return client.query_video(
            args.video,
            args.tracks,
            args.camera,
            top_k=args.top_k,
            max_distance=args.max_distance,
            cameras=_csv(args.cameras),
            exclude_cameras=_csv(args.exclude_cameras),
            **common,
        )
    finally:
        sending.close()
        decoding.close()


def print_video(job: VideoJob, out: Any = sys.stdout) -> None:
    for track in job.tracks:
        span = f"track {track.track_id} (frames {track.first_frame}-{track.last_frame})"
        if track.matches is None:
            print(f"{span}: enrolled as {track.identity} ({track.tracklet_id})", file=out)
        elif not track.matches:
            print(f"{span}: no match", file=out)
        else:
            best = ", ".join(f"{m.identity} {m.score:.3f}" for m in track.matches)
            print(f"{span}: {best}", file=out)
    for dropped in job.dropped_tracks:
        print(f"track {dropped.track_id} dropped: {dropped.reason}", file=out)


# ------------------------------------------------------------------------------------- parser


def _common_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    """Accepted before or after the command; only the top level sets the defaults."""

    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    url = os.environ.get("REID_URL", "http://127.0.0.1:8000")
    parser.add_argument(
        "--url",
        default=default(url),
        help="the service (default: REID_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--api-key",
        default=default(os.environ.get("REID_API_KEY")),
        help="X-API-Key to send (default: REID_API_KEY)",
    )
    parser.add_argument(
        "--retries", type=int, default=default(5), help="retries on connection errors (default 5)"
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print the answer as JSON"
    )
    parser.add_argument(
        "--no-progress", action="store_true", default=default(False), help="no progress bars"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-client",
        description="Enroll and query people with the re-identification service.",
    )
    _common_options(parser, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _common_options(common, defaults=False)
    commands = parser.add_subparsers(dest="command", required=True)

    folder = commands.add_parser(
        "enroll-folder", parents=[common], help="enroll ROOT/<camera>/<identity>/<frames>"
    )
    folder.add_argument("root", type=Path)

    video = commands.add_parser(
        "video", parents=[common], help="enroll or query with a video and its MOT tracks"
    )
    video.add_argument("video", type=Path, help="video file, zip of img1/, or an img1/ folder")
    video.add_argument("--tracks", type=Path, required=True, help="the tracker's MOT .txt")
    video.add_argument("--camera", required=True, help="the camera that filmed it")
    mode = video.add_mutually_exclusive_group(required=True)
    mode.add_argument("--enroll", action="store_true", help="enroll every track")
    mode.add_argument("--query", action="store_true", help="who is each track?")
    video.add_argument("--start-time", type=datetime.fromisoformat, help="when frame 1 was filmed")
    video.add_argument("--fps", type=float, help="frame rate (default: the video's)")
    video.add_argument("--min-track-frames", type=int, help="drop shorter tracks")
    video.add_argument("--identities", help='enroll: {"3": "alice"} as JSON, or a JSON file')
    video.add_argument("--idempotency-key", help="enroll: the same key never enrolls twice")
    _query_options(video)

    query = commands.add_parser(
        "query", parents=[common], help="who do these frames (one tracklet) show?"
    )
    query.add_argument("frames", nargs="+", type=Path, help="frames in order")
    _query_options(query)

    grid = commands.add_parser(
        "grid",
        parents=[common],
        help="ranked matches of every QUERIES/<camera>/<identity>/ tracklet, as one PNG",
        description="One row per query tracklet: its most attended frame, the attention of "
        "every frame as bars, then its matches best first (each by its most attended "
        "thumbnail), framed green when the identity is the query folder's, red when not.",
    )
    grid.add_argument("queries", type=Path, help="QUERIES/<camera>/<identity>/<frames>")
    grid.add_argument("--out", type=Path, default=Path("ranked.png"), help="the PNG to write")
    grid.add_argument("--rerank", type=int, help="candidates re-scored pair by pair (0: off)")
    grid.add_argument(
        "--unlabelled",
        action="store_true",
        help="the folder names are not who the queries show: frame every match grey",
    )
    _query_options(grid)
    return parser


def _query_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top-k", type=int, default=5, help="matches to show (default 5)")
    parser.add_argument("--max-distance", type=float, help="drop matches farther than this")
    parser.add_argument("--cameras", help="only these cameras (comma-separated)")
    parser.add_argument("--exclude-cameras", help="never these cameras (comma-separated)")


def _run(args: argparse.Namespace, client: ReidClient) -> None:
    if args.command == "enroll-folder":
        summary = enroll_folder(client, args.root, not args.no_progress)
        if args.json:
            print(json.dumps(summary, indent=2, default=str))
        else:
            print(
                f"enrolled {len(summary['tracklets'])} tracklets of {summary['identities']} "
                f"identities from {summary['cameras']} cameras"
            )
    elif args.command == "grid":
        print(ranked_grid(client, args))
    elif args.command == "video":
        job = run_video(client, args)
        if args.json:
            print(job.model_dump_json(indent=2))
        else:
            print_video(job)
    else:
        answer = client.query(
            args.frames,
            top_k=args.top_k,
            max_distance=args.max_distance,
            cameras=_csv(args.cameras),
            exclude_cameras=_csv(args.exclude_cameras),
        )
        if args.json:
            print(answer.model_dump_json(indent=2))
            return
        for match in answer.matches:
            print(
                f"{match.rank}. {match.identity} score {match.score:.3f} "
                f"(camera {match.camera}, tracklet {match.tracklet_id})"
            )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with ReidClient(args.url, args.api_key, retries=args.retries) as client:
            _run(args, client)
    except ReidError as exc:
        print(f"reid-client: {exc.message} ({exc.status} {exc.code})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"reid-client: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
