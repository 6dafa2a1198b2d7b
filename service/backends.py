"""The gallery backends by name: the one place that spells them.

Each entry says which class implements the backend (its ``read_signature`` reads an existing
gallery's signature), where its gallery lives by default under ``REID_DATA_DIR``, which setting
overrides that, and which pip extra installs its client libraries. The settings
(``REID_GALLERY_BACKEND``), ``reid-gallery``'s SPECs and the benchmark all look backends up here.

Classes are imported on first use: the interface module (:mod:`service.gallery`) imports no
backend, and a backend whose extra is not installed costs nothing until it is chosen, when it
fails with one line that names the extra.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.gallery import Gallery, GalleryError, ModelSignature

DEFAULT_BACKEND = "faiss"


class BackendUnavailable(GalleryError):
    """The backend's libraries are not installed; the message names the pip extra."""


@dataclass(frozen=True)
class Backend:
    name: str
    module: str
    class_name: str
    #: What a location is, for help texts: "DIR" or "URI".
    location_kind: str
    #: The gallery's location under the data directory when no setting says otherwise.
    default_location: Callable[[Path], Path]
    #: One line for help texts and settings descriptions.
    summary: str
    #: The setting (a field of :class:`service.settings.Settings`) that overrides the default.
    location_setting: str | None = None
    #: The pip extra installing ``requires`` (None: the base install has them).
    extra: str | None = None
    requires: tuple[str, ...] = ()

    def describe(self) -> str:
        """``name (summary; default REID_DATA_DIR/...)`` for help texts."""
        default = self.default_location(Path("REID_DATA_DIR"))
        override = f", or {self.location_setting.upper()}" if self.location_setting else ""
        return f"{self.name} ({self.summary}; {default}{override})"

    def missing(self) -> str | None:
        """Why this backend cannot run in this environment, in one line, or None."""
        absent = [name for name in self.requires if importlib.util.find_spec(name) is None]
        if not absent:
            return None
        return (
            f"the {self.name} gallery backend needs the '{self.extra}' extra ({', '.join(absent)} "
            f"is not installed): pip install 'astpn-reid[{self.extra}]'"
        )

    def gallery_class(self) -> type[Gallery]:
        reason = self.missing()
        if reason is not None:
            raise BackendUnavailable(reason)
        return getattr(importlib.import_module(self.module), self.class_name)

    def open(self, location: str, signature: ModelSignature, **options: Any) -> Gallery:
        """Open (or create) the gallery; ``options`` are the backend's own keyword arguments
        (faiss: ``index``, a :class:`service.faiss_index.FaissIndexConfig`)."""
        return self.gallery_class()(location, signature, **options)

    def read_signature(self, location: str) -> ModelSignature | None:
        return self.gallery_class().read_signature(location)


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            name="faiss",
            module="service.faiss_gallery",
            class_name="FaissGallery",
            location_kind="DIR",
            default_location=lambda data_dir: data_dir / "gallery",
            summary="SQLite + a FAISS index, exact or HNSW (REID_FAISS_INDEX)",
        ),
        Backend(
            name="milvus",
            module="service.milvus_gallery",
            class_name="MilvusGallery",
            location_kind="URI",
            # Milvus Lite, in-process; REID_MILVUS_URI names a server instead.
            default_location=lambda data_dir: data_dir / "milvus.db",
            summary="Milvus Lite in-process, or a Milvus server",
            location_setting="milvus_uri",
            extra="milvus",
            requires=("pymilvus",),
        ),
    )
}


def get_backend(name: str) -> Backend:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ValueError(
            f"unknown gallery backend {name!r}: use one of {', '.join(BACKENDS)}"
        ) from None


def open_gallery(backend: str, location: str, signature: ModelSignature, **options: Any) -> Gallery:
    """Open (or create) the ``backend`` gallery at ``location`` (see :data:`BACKENDS`), with
    the backend's own ``options`` (the settings' :meth:`gallery_options`)."""
    return get_backend(backend).open(location, signature, **options)


def read_signature(backend: str, location: str) -> ModelSignature | None:
    """The signature an existing gallery was built with, without opening it for writing;
    ``None`` when there is no gallery at ``location``."""
    return get_backend(backend).read_signature(location)
