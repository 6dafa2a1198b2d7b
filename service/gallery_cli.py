"""``reid-gallery``: look at a gallery and move it between backends.

A gallery is named by a SPEC, ``BACKEND:LOCATION``:

* ``faiss:DIR``: the SQLite + FAISS gallery in directory DIR (the service's
  ``REID_DATA_DIR/gallery``)
* ``milvus:URI``: a Milvus Lite path ending in ``.db`` (the service's default
  ``REID_DATA_DIR/milvus.db``) or a Milvus server, ``milvus:http://host:19530``

Commands::

    reid-gallery info SPEC [--json]
    reid-gallery migrate --from SPEC --to SPEC [--batch-size N] [--append] [--no-progress]

Exit status: 0 on success, 1 when the gallery refused or the migration could not be verified,
2 for bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from service.backends import BACKENDS, open_gallery, read_signature
from service.gallery import Gallery, GalleryError, ModelSignature, TrackletExists

#: ``faiss:DIR or milvus:URI``
SPEC_FORMS = " or ".join(f"{b.name}:{b.location_kind}" for b in BACKENDS.values())


class CliError(Exception):
    """A problem the user can fix; printed without a traceback, exit status 1."""


@dataclass(frozen=True)
class Spec:
    backend: str
    location: str

    def __str__(self) -> str:
        return f"{self.backend}:{self.location}"


_EXAMPLES = ", ".join(
    f"{b.name}:./{b.default_location(Path('reid-data'))}" for b in BACKENDS.values()
)


def parse_spec(text: str) -> Spec:
    """``BACKEND:LOCATION`` (split at the first colon, so URIs keep theirs)."""
    backend, sep, location = text.partition(":")
    if not sep or backend not in BACKENDS or not location:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a gallery SPEC: write {SPEC_FORMS} (e.g. {_EXAMPLES}, "
            "milvus:http://localhost:19530)"
        )
    return Spec(backend, location)


def _signature(spec: Spec) -> ModelSignature:
    signature = read_signature(spec.backend, spec.location)
    if signature is None:
        raise CliError(f"there is no gallery at {spec}")
    return signature


def _open(spec: Spec, signature: ModelSignature) -> Gallery:
    return open_gallery(spec.backend, spec.location, signature)


def info(spec: Spec, as_json: bool = False) -> int:
    """Print what the gallery at ``spec`` is: backend, signature, size, index."""
    signature = _signature(spec)
    with _open(spec, signature) as gallery:
        thumbnails = gallery.thumbnail_stats()
        details = {
            "backend": spec.backend,
            "location": spec.location,
            "model_version": signature.version,
            "embedding_size": signature.embedding_size,
            "tracklets": gallery.count(),
            "identities": gallery.list_identities(0, 0)[1],
            "thumbnails": thumbnails.count,
            "thumbnail_bytes": thumbnails.bytes,
            "index": gallery.index_description,
        }
    if as_json:
        print(json.dumps(details, indent=2))
    else:
        width = max(len(key) for key in details)
        for key, value in details.items():
            print(f"{key:<{width}}  {value}")
    return 0


def migrate(
    source: Spec,
    target: Spec,
    batch_size: int = 500,
    append: bool = False,
    progress: bool = True,
) -> int:
    """Copy every tracklet of ``source`` into ``target`` (created with the source's signature)
    and verify the counts."""
    if source == target:
        raise CliError("--from and --to name the same gallery")
    signature = _signature(source)
    existing = read_signature(target.backend, target.location)
    if existing is not None and existing != signature:
        raise CliError(
            f"{target} was built with model {existing.version!r} ({existing.embedding_size}-d), "
            f"{source} with {signature.version!r} ({signature.embedding_size}-d): embeddings of "
            "different models cannot share a gallery; choose another target"
        )
    with _open(source, signature) as origin, _open(target, signature) as destination:
        before = destination.count()
        if before and not append:
            raise CliError(
                f"{target} already holds {before} tracklets: migrate into an empty gallery, or "
                "pass --append to add to them"
            )
        total = origin.count()
        copied = 0
        with tqdm(
            total=total, unit="tracklet", desc="migrating", disable=not progress, file=sys.stderr
        ) as bar:
            for batch in origin.iter_records(batch_size):
                try:
                    destination.add(batch)
                except TrackletExists as exc:
                    raise CliError(
                        f"{exc} in {target}; {copied} tracklets were copied before it. The "
                        "target already had some of these tracklets: migrate into an empty "
                        "gallery"
                    ) from exc
                copied += len(batch)
                bar.update(len(batch))
        after_source = origin.count()
        after_target = destination.count()
    if copied != after_source or after_target != before + copied:
        raise CliError(
            f"verification failed: {source} holds {after_source} tracklets (it held {total} "
            f"when the migration started), {copied} were copied, and {target} holds "
            f"{after_target} (expected {before} + {copied}). Was a service writing to one of "
            "them? Stop it and migrate again into an empty target"
        )
    print(f"migrated {copied} tracklets from {source} to {target}; counts verified")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-gallery",
        description="Inspect a re-id gallery, or migrate it between the faiss and milvus "
        "backends. A SPEC is BACKEND:LOCATION: faiss:DIR (the SQLite + FAISS gallery "
        "directory, the service's REID_DATA_DIR/gallery) or milvus:URI (a Milvus Lite path "
        "ending in .db, the service's REID_DATA_DIR/milvus.db, or a server such as "
        "milvus:http://localhost:19530). Stop a service that uses a Milvus Lite gallery first: "
        "Milvus Lite allows one process per path.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    show = commands.add_parser(
        "info",
        help="show a gallery's backend, model signature, size and index",
        description="Show a gallery's backend, model signature (version and embedding size), "
        "numbers of tracklets and identities, and the index serving its searches.",
    )
    show.add_argument("spec", type=parse_spec, metavar="SPEC", help="the gallery, BACKEND:LOCATION")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of text")

    move = commands.add_parser(
        "migrate",
        help="copy every tracklet from one gallery to another",
        description="Copy every tracklet (embedding, per-step features, attention, times, "
        "metadata) from --from to --to, in either direction between faiss and milvus. The "
        "target is created with the source's model signature and must be empty unless --append "
        "is given. At the end both galleries are counted; a mismatch exits with status 1.",
    )
    for flag, dest, role in (
        ("--from", "source", "the gallery to copy from (left unchanged)"),
        ("--to", "target", "the gallery to copy into (created if missing)"),
    ):
        move.add_argument(
            flag, dest=dest, type=parse_spec, required=True, metavar="SPEC", help=role
        )
    move.add_argument(
        "--batch-size",
        type=_positive,
        default=500,
        metavar="N",
        help="tracklets read and written per step; each step is one atomic add (default 500)",
    )
    move.add_argument(
        "--append",
        action="store_true",
        help="allow a target that already holds tracklets (a tracklet id present in both stops "
        "the migration)",
    )
    move.add_argument(
        "--no-progress", action="store_true", help="no progress bar (for logs and scripts)"
    )
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "info":
            return info(args.spec, as_json=args.json)
        return migrate(
            args.source,
            args.target,
            batch_size=args.batch_size,
            append=args.append,
            progress=not args.no_progress,
        )
    except (CliError, GalleryError, ValueError) as exc:
        print(f"reid-gallery: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
