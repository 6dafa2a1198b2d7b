"""The service's configuration: one pydantic-settings object read from ``REID_*`` variables
and, by the entry points, from an optional ``.env`` file (:func:`load_settings`).

The object is built once by the entry point (``service.app`` or ``reid-serve``) and passed to
:func:`service.api.create_app` explicitly, so tests and benchmarks can run several differently
configured apps side by side. Every field is documented once, here: ``reid-serve --help``,
docker-compose's pass-through list (checked by a test) and the one-line error for a bad value
are all made from these declarations.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import model
from service.backends import BACKENDS, DEFAULT_BACKEND, get_backend
from service.gallery import MAX_THUMBNAILS
from service.onnx_session import DEFAULT_ARENA_FRAMES
from service.thumbnails import ThumbnailConfig

MiB = 1024 * 1024

#: Where ``python -m training export`` writes the default model (inside the installed package, so
#: ``pip install .`` ships it as package data).
DEFAULT_MODEL_PATH = Path(model.__file__).resolve().parent / "weights" / "astpn-cuhk03.onnx"

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    """Environment variables hold lists as ``a,b,c``; blanks are dropped so ``""`` means none."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of the service. Each field is read from ``REID_<FIELD NAME>``."""

    model_config = SettingsConfigDict(
        env_prefix="REID_", extra="ignore", protected_namespaces=(), validate_default=True
    )

    # -- model and gallery -------------------------------------------------------------------
    model_path: Path = Field(
        DEFAULT_MODEL_PATH, description="ONNX model; its model card is the .json beside it."
    )
    data_dir: Path = Field(Path("./reid-data"), description="Where the gallery is stored.")
    gallery_backend: str = Field(
        DEFAULT_BACKEND,
        description="The gallery backend: " + " or ".join(b.describe() for b in BACKENDS.values()),
    )
    milvus_uri: str | None = Field(
        None,
        description="Milvus Lite file or http(s):// server URI; default data_dir/milvus.db.",
    )
    faiss_index: Literal["exact", "hnsw"] = Field(
        "exact",
        description="The faiss backend's index: exact (every vector scanned; exact answers) or "
        "hnsw (approximate, for galleries of millions: recall@10 ~0.99 at 1M; rebuilt from the "
        "gallery at each start; deleted vectors are skipped until the next start frees them).",
    )
    faiss_hnsw_m: int = Field(
        32, ge=4, le=256, description="HNSW: graph neighbours per vector (memory grows with it)."
    )
    faiss_hnsw_ef_construction: int = Field(
        40,
        gt=0,
        description="HNSW: candidate list while adding (higher: better graph, slower adds).",
    )
    faiss_hnsw_ef_search: int = Field(
        64,
        gt=0,
        description="HNSW: candidate list while searching (higher: better recall, slower "
        "searches; a query needing more results uses more).",
    )
    faiss_threads: int = Field(
        1,
        gt=0,
        description="OpenMP threads of each FAISS search (process-wide). One query at a time "
        "gains nothing from more: OpenMP's hand-offs and spinning cost more than they split "
        "(docs/service.md, 'Speed settings').",
    )

    # -- thumbnails ----------------------------------------------------------------------------
    thumbnails: bool = Field(
        True,
        description="Keep a few small JPEGs of each enrolled tracklet with the gallery (for /ui "
        "and GET /tracklets/{id}/thumbnails/{n}); false stores no image.",
    )
    thumbnail_count: int = Field(
        3,
        ge=1,
        le=MAX_THUMBNAILS,
        description="Thumbnails per tracklet: the most attended frame, the first and the last, "
        "then the next most attended.",
    )
    thumbnail_max_side: int = Field(
        128, ge=16, le=256, description="Longest side of a thumbnail in pixels."
    )

    # -- security ------------------------------------------------------------------------------
    api_keys_read: CommaList = Field(
        default_factory=list, description="Keys allowed to query and list (comma-separated)."
    )
    api_keys_write: CommaList = Field(
        default_factory=list,
        description="Keys allowed to enroll and delete; they may also read (comma-separated).",
    )

    # -- limits --------------------------------------------------------------------------------
    max_request_bytes: int = Field(64 * MiB, gt=0, description="Largest request body.")
    max_frames_per_tracklet: int = Field(
        512, gt=0, description="Most frames accepted in one tracklet."
    )
    max_embedded_frames: int = Field(
        128,
        gt=0,
        description="Longer tracklets are evenly subsampled to this many frames before embedding.",
    )
    max_pixels_per_frame: int = Field(
        2_097_152, gt=0, description="Largest width x height of one frame (read from its header)."
    )
    max_frame_side: int = Field(8192, gt=0, description="Largest width or height of one frame.")
    max_pixels_per_tracklet: int = Field(
        16 * MiB,
        gt=0,
        description="Largest total of width x height over a tracklet's frames (decoding and "
        "preprocessing cost about 15 bytes per pixel).",
    )
    allowed_formats: CommaList = Field(
        default_factory=lambda: ["jpeg", "png"], description="Accepted image formats."
    )
    max_zip_entries: int = Field(1024, gt=0, description="Most files in one zip archive.")
    max_zip_uncompressed_bytes: int = Field(
        64 * MiB,
        gt=0,
        description="Largest total uncompressed size of one zip archive (held in memory; "
        "images do not compress, so an honest archive inflates to about its own size).",
    )
    max_metadata_bytes: int = Field(16 * 1024, gt=0, description="Largest metadata JSON object.")
    max_batch_tracklets: int = Field(
        256, gt=0, description="Most tracklets in one POST /tracklets/batch."
    )
    max_batch_frames: int = Field(
        16384,
        gt=0,
        description="Most frames in one POST /tracklets/batch, its tracklets together: bounds "
        "one request's decoding, preprocessing and embedding work.",
    )
    max_top_k: int = Field(100, gt=0, description="Largest top_k a query may ask for.")
    rerank: int = Field(
        0,
        ge=0,
        description="Index candidates each query re-scores pair by pair with the joint attention "
        "(a query's `rerank` overrides it); 0 turns re-scoring off.",
    )
    max_rerank: int = Field(
        500, gt=0, description="Largest `rerank` a query may ask for (it costs one pair each)."
    )
    max_page_size: int = Field(1000, gt=0, description="Largest page of GET /identities.")

    # -- admission control (service/admission.py) ---------------------------------------------
    admission_body_bytes: int = Field(
        64 * MiB,
        gt=0,
        description="Request bodies held in memory at once, all requests together; a chunked "
        "upload counts as max_request_bytes. Over it, requests wait their turn.",
    )
    admission_pixels: int = Field(
        16 * MiB,
        gt=0,
        description="Pixels (width x height) being decoded and preprocessed at once, all "
        "requests together; a larger tracklet waits to have them all.",
    )
    admission_frames: int = Field(
        256,
        gt=0,
        description="Frames being decoded, preprocessed and embedded at once, all requests "
        "together (what a frame costs depends on the model's input size; the memory bound "
        "under attack is measured with the default model).",
    )
    admission_wait_s: float = Field(
        10.0,
        gt=0,
        description="How long a request waits for room before it is refused with 503 and "
        "Retry-After.",
    )
    request_timeout_s: float = Field(
        60.0,
        gt=0,
        description="Wall time one request may take, its upload included (408 when the body "
        "is late, 503 when the work is; nothing is stored either way).",
    )

    # -- videos (POST /videos) -----------------------------------------------------------------
    max_video_bytes: int = Field(
        1024 * MiB,
        gt=0,
        description="Largest POST /videos body (video or frames, tracks file and fields); "
        "other routes keep max_request_bytes.",
    )
    max_video_frames: int = Field(
        108_000,
        gt=0,
        description="Longest video decoded, in frames (one hour at 30 frames/s): the last "
        "frame a track may use.",
    )
    max_video_tracks: int = Field(500, gt=0, description="Most tracks in one tracks file.")
    max_video_crops: int = Field(
        16_384,
        gt=0,
        description="Most person crops cut from one video, all tracks together (each is held "
        "as 128x64 RGB until its track is embedded: bounds a job's memory).",
    )
    max_tracks_file_bytes: int = Field(32 * MiB, gt=0, description="Largest MOT tracks file.")
    video_min_track_frames: int = Field(
        8,
        gt=0,
        description="Tracks with fewer boxes are dropped (and listed) unless a request says "
        "otherwise.",
    )
    video_workers: int = Field(
        1, gt=0, description="Video jobs decoded at the same time; the others wait in line."
    )
    max_video_jobs: int = Field(
        8,
        gt=0,
        description="Most video jobs queued or running; more are refused with 503 and Retry-After.",
    )
    video_job_ttl_s: float = Field(
        86_400.0, gt=0, description="How long a finished video job can still be fetched."
    )

    # -- idempotency ---------------------------------------------------------------------------
    idempotency_ttl_s: float = Field(
        86_400.0,
        gt=0,
        description="How long an Idempotency-Key's first answer is kept for replay.",
    )

    # -- inference -----------------------------------------------------------------------------
    batching: bool = Field(True, description="Micro-batch concurrent requests into one call.")
    batch_max_size: int = Field(32, gt=0, description="Most tracklets in one ONNX call.")
    batch_max_frames: int = Field(
        4096, gt=0, description="Most frames (tracklets x length) in one ONNX call."
    )
    batch_wait_ms: float = Field(
        5.0, ge=0, description="How long a batch waits for more requests before it runs."
    )
    inference_workers: int = Field(
        2, gt=0, description="Threads running ONNX calls (each call is itself multi-threaded)."
    )
    decode_workers: int = Field(
        4, gt=0, description="Threads decoding images and computing optical flow."
    )
    ort_intra_op_threads: int = Field(
        0, ge=0, description="ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose."
    )
    ort_arena_frames: int = Field(
        DEFAULT_ARENA_FRAMES,
        ge=0,
        description="ONNX Runtime keeps its CPU memory arena between calls (faster); batches are "
        "split into calls of at most this many frames, and a longer single tracklet gives back "
        "what it grew the arena to. 0: no arena (service/onnx_session.py).",
    )
    ort_spin: bool = Field(
        False,
        description="Let ONNX Runtime's idle threads spin waiting for work: lower latency where "
        "cores are to spare; on a small or shared machine they take the CPU other requests need.",
    )
    malloc_tuning: bool = Field(
        True,
        description="Cap glibc's malloc arenas at 2, fix its mmap threshold at 128 KiB and its "
        "trim threshold at 32 MiB, so that large blocks a request freed go back to the system and "
        "the heap keeps at most 32 MiB free at its top (service/process_memory.py).",
    )
    use_cuda: bool = Field(
        True, description="Use CUDAExecutionProvider when ONNX Runtime offers it."
    )

    # -- server --------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface reid-serve listens on.")
    port: int = Field(8000, gt=0, lt=65536, description="Port reid-serve listens on.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and uvicorn."
    )
    log_format: Literal["json", "text"] = Field(
        "json",
        description="Log lines as JSON objects (one per line) or as plain text; every line of "
        "a request carries its X-Request-ID.",
    )

    @field_validator("api_keys_read", "api_keys_write", "allowed_formats", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator("allowed_formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        formats = [item.lower().replace("jpg", "jpeg") for item in value]
        unknown = sorted(set(formats) - {"jpeg", "png"})
        if unknown:
            raise ValueError(f"unsupported image formats {unknown}: choose among jpeg, png")
        if not formats:
            raise ValueError("allowed_formats must name at least one of jpeg, png")
        return formats

    @field_validator("gallery_backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        get_backend(value)
        return value

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @property
    def thumbnail_config(self) -> ThumbnailConfig | None:
        """What enrolments keep of their frames; None when REID_THUMBNAILS is off."""
        if not self.thumbnails:
            return None
        return ThumbnailConfig(count=self.thumbnail_count, max_side=self.thumbnail_max_side)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys_read or self.api_keys_write)

    def gallery_options(self) -> dict[str, Any]:
        """The chosen backend's own keyword arguments for :func:`service.backends.open_gallery`."""
        if self.gallery_backend != "faiss":
            return {}
        from service.faiss_index import FaissIndexConfig

        return {
            "index": FaissIndexConfig(
                kind=self.faiss_index,
                hnsw_m=self.faiss_hnsw_m,
                hnsw_ef_construction=self.faiss_hnsw_ef_construction,
                hnsw_ef_search=self.faiss_hnsw_ef_search,
                search_threads=self.faiss_threads,
            )
        }

    def gallery_location(self) -> str:
        """Where the gallery of ``gallery_backend`` lives: its location setting when set, else
        its default place under ``data_dir``."""
        backend = get_backend(self.gallery_backend)
        chosen = getattr(self, backend.location_setting) if backend.location_setting else None
        return chosen or str(backend.default_location(self.data_dir))


# ------------------------------------------------------------------ reading and describing them

ENV_PREFIX = "REID_"
#: Where the entry points read an optional dotenv file from; empty: read none.
ENV_FILE_VARIABLE = "REID_ENV_FILE"
DEFAULT_ENV_FILE = ".env"


class SettingsInvalid(ValueError):
    """Bad settings; ``lines`` has one line per bad variable, naming it and the expected form."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


def variable(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _bounds(info: FieldInfo) -> str:
    signs = {annotated_types.Gt: ">", annotated_types.Ge: ">=", annotated_types.Lt: "<"}
    parts = []
    for item in info.metadata:
        for kind, sign in signs.items():
            if isinstance(item, kind):
                parts.append(f"{sign} {getattr(item, kind.__name__.lower())}")
    return " and ".join(parts)


def _type_form(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in get_args(annotation))
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _type_form(inner[0]) + " (or unset)"
    if origin is Annotated or origin is list:
        return "a comma-separated list"
    forms = {bool: "true or false", int: "a whole number", float: "a number", Path: "a path"}
    return forms.get(annotation, "text")


def expected_form(name: str) -> str:
    """What a valid value of setting ``name`` looks like, e.g. "a whole number > 0"."""
    info = Settings.model_fields[name]
    bounds = _bounds(info)
    return _type_form(info.annotation) + (f" {bounds}" if bounds else "")


def default_text(name: str) -> str:
    info = Settings.model_fields[name]
    value = info.default_factory() if info.default_factory else info.default  # type: ignore[call-arg]
    if value is None or value == []:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    return ",".join(value) if isinstance(value, list) else str(value)


def _error_line(error: dict[str, Any], given: dict[str, Any]) -> str:
    name = str(error["loc"][0]) if error.get("loc") else ""
    if name not in Settings.model_fields:
        return f"invalid settings: {error['msg']}"
    value = given.get(name, os.environ.get(variable(name)))
    shown = f"={value!r}" if value is not None else ""
    reason = str(error["msg"]).removeprefix("Value error, ")
    return f"{variable(name)}{shown} is not valid: expected {expected_form(name)} ({reason})"


def load_settings(env_file: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, then ``env_file`` (a dotenv file, if it exists), then
    ``overrides``; bad values raise :class:`SettingsInvalid`, one line per variable."""
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise SettingsInvalid([_error_line(dict(e), overrides) for e in errors]) from None


def env_file_from_environment() -> str | None:
    """The dotenv file the entry points read: ``REID_ENV_FILE``, or ``.env`` in the working
    directory; an empty ``REID_ENV_FILE`` reads none. A file named explicitly must exist."""
    chosen = os.environ.get(ENV_FILE_VARIABLE)
    if chosen is None:
        return DEFAULT_ENV_FILE
    if chosen and not Path(chosen).is_file():
        raise SettingsInvalid([f"{ENV_FILE_VARIABLE}={chosen!r} is not valid: no such file"])
    return chosen or None


def settings_help() -> str:
    """Every setting with its variable, default, meaning and form: ``reid-serve --help``."""
    lines = [
        f"settings (environment variables, or lines of {DEFAULT_ENV_FILE} in the working "
        f"directory; {ENV_FILE_VARIABLE} names another file, empty for none):"
    ]
    for name, info in Settings.model_fields.items():
        lines.append(f"  {variable(name)}  (default: {default_text(name)})")
        lines.append(f"      {info.description} [{expected_form(name)}]")
    return "\n".join(lines)
