"""``reid-client grid``: query the service with every tracklet of a folder and write the ranked
results as one PNG (:mod:`service.grid_png`), for reports.

A query tracklet is a folder of JPEG/PNG frames (ordered by name, numbers as numbers, as the
service orders a zip) or a ``.zip`` of them, anywhere under the folder given. Who it shows is the
tracklet folder's name (``--identity folder``, e.g. ``ROOT/<camera>/<identity>/<frames>``, the
training ``folder`` layout), its parent folder's (``--identity parent``, for
``ROOT/<identity>/<tracklet>/<frames>``), or unknown (``--identity none``: matches are framed
grey, not green or red).
"""

from __future__ import annotations

import argparse
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from service.client import ClientError, ReidClient
from service.frames import natural_key
from service.grid_png import Cell, GridRow, draw_grid

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


@dataclass
class QueryTracklet:
    name: str  # its path under the folder, for captions and messages
    identity: str | None
    frames: list[bytes]


def _identity(path: Path, mode: str) -> str | None:
    if mode == "none":
        return None
    name = path.stem if path.suffix == ".zip" else path.name
    return name if mode == "folder" else path.parent.name


def _zip_frames(path: Path) -> list[bytes]:
    with zipfile.ZipFile(path) as archive:
        names = [
            name
            for name in archive.namelist()
            if Path(name).suffix.lower() in IMAGE_SUFFIXES
            and not name.startswith("__MACOSX/")
            and not Path(name).name.startswith(".")
        ]
        return [archive.read(name) for name in sorted(names, key=natural_key)]


def find_tracklets(root: Path, identity: str) -> list[QueryTracklet]:
    """Every tracklet under ``root`` (folders holding images, and zips), sorted by path."""
    found = []
    for path in sorted({p.parent for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES}):
        images = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
        frames = [p.read_bytes() for p in sorted(images, key=lambda p: natural_key(p.name))]
        found.append(QueryTracklet(str(path.relative_to(root)), _identity(path, identity), frames))
    for path in sorted(root.rglob("*.zip")):
        name = str(path.relative_to(root))
        found.append(QueryTracklet(name, _identity(path, identity), _zip_frames(path)))
    return sorted(found, key=lambda t: natural_key(t.name))


def _decode(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _match_cell(client: ReidClient, match: dict[str, Any], expected: str | None) -> Cell:
    """The match shown by its most attended thumbnail (in this pair, when re-scored)."""
    thumbnails = client.tracklet(match["tracklet_id"])["thumbnails"]
    image = None
    if thumbnails:
        pair = match.get("attention")
        weight = (lambda t: pair[t["frame_index"]]) if pair else (lambda t: t["attention"])
        image = _decode(client.thumbnail(max(thumbnails, key=weight)["url"]))
    verdict = (
        "unknown" if expected is None else ("correct" if match["identity"] == expected else "wrong")
    )
    lines = [f"#{match['rank']} {match['identity']}", f"d={match['distance']:.3f}"]
    return Cell(image, lines, verdict)


def grid_row(client: ReidClient, tracklet: QueryTracklet, fields: dict[str, Any]) -> GridRow:
    answer = client.query(tracklet.frames, **fields)
    attention = np.asarray(answer["attention"])
    image = _decode(tracklet.frames[int(np.argmax(attention))])
    query = Cell(image, [tracklet.identity or tracklet.name, "query"], "query")
    matches = [_match_cell(client, m, tracklet.identity) for m in answer["matches"]]
    return GridRow(query, attention, matches)


def _grid(args: argparse.Namespace) -> int:
    tracklets = find_tracklets(args.queries, args.identity)
    if not tracklets:
        print(f"no tracklet (a folder of JPEG/PNG frames, or a zip) under {args.queries}")
        return 2
    client = ReidClient(args.url, args.api_key)
    fields = {
        "top_k": args.top_k,
        "rerank": args.rerank,
        "max_distance": args.max_distance,
        "cameras": args.cameras,
        "exclude_cameras": args.exclude_cameras,
    }
    rows = []
    for tracklet in tracklets:
        try:
            rows.append(grid_row(client, tracklet, fields))
        except ClientError as exc:
            print(f"{tracklet.name}: {exc}", file=sys.stderr)
            return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(args.out), draw_grid(rows)):
        print(f"cannot write {args.out}", file=sys.stderr)
        return 1
    first = [row.matches[0].verdict for row in rows if row.matches]
    known = [v for v in first if v != "unknown"]
    score = f"; right person first for {known.count('correct')} of {len(known)}" if known else ""
    print(f"wrote {args.out}: {len(rows)} queries{score}")
    return 0


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def parser() -> argparse.ArgumentParser:
    main_parser = argparse.ArgumentParser(prog="reid-client", description=__doc__.split("\n")[0])
    commands = main_parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser(
        "grid", help="ranked results of a folder of query tracklets, as a PNG", description=__doc__
    )
    grid.add_argument("queries", type=Path, help="folder of query tracklets")
    grid.add_argument("--out", type=Path, default=Path("ranked.png"), help="the PNG to write")
    grid.add_argument("--url", default="http://127.0.0.1:8000", help="the service")
    grid.add_argument("--api-key", default=None, help="a read key, when the service needs one")
    grid.add_argument(
        "--identity",
        choices=["folder", "parent", "none"],
        default="folder",
        help="who a query shows: its folder's name, its parent's, or unknown",
    )
    grid.add_argument("--top-k", type=int, default=5, help="matches per query")
    grid.add_argument("--rerank", type=int, default=None, help="candidates re-scored (0: off)")
    grid.add_argument("--max-distance", type=float, default=None, help="open-set cut")
    grid.add_argument("--cameras", type=_comma_list, default=None, help="only these cameras")
    grid.add_argument("--exclude-cameras", type=_comma_list, default=None, help="never these")
    return main_parser


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return _grid(args)


if __name__ == "__main__":
    sys.exit(main())
