"""The service's configuration: one pydantic-settings object read from ``REID_*`` variables.

The object is built once by the entry point (``service.app`` or ``reid-serve``) and passed to
:func:`service.api.create_app` explicitly, so tests and benchmarks can run several differently
configured apps side by side.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import model
from service.backends import BACKENDS, DEFAULT_BACKEND, get_backend
from service.gallery import MAX_THUMBNAILS
from service.thumbnails import ThumbnailConfig

MiB = 1024 * 1024

#: Where ``python -m training export`` writes the default model (inside the installed package, so
#: ``pip install .`` ships it as package data).
DEFAULT_MODEL_PATH = Path(model.__file__).resolve().parent / "weights" / "astpn-synthetic.onnx"

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
        64 * MiB,
        gt=0,
        description="Largest total of width x height over a tracklet's frames (decoded memory).",
    )
    allowed_formats: CommaList = Field(
        default_factory=lambda: ["jpeg", "png"], description="Accepted image formats."
    )
    max_zip_entries: int = Field(1024, gt=0, description="Most files in one zip archive.")
    max_zip_uncompressed_bytes: int = Field(
        256 * MiB, gt=0, description="Largest total uncompressed size of one zip archive."
    )
    max_metadata_bytes: int = Field(16 * 1024, gt=0, description="Largest metadata JSON object.")
    max_batch_tracklets: int = Field(
        256, gt=0, description="Most tracklets in one POST /tracklets/batch."
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
    use_cuda: bool = Field(
        True, description="Use CUDAExecutionProvider when ONNX Runtime offers it."
    )

    # -- server --------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Interface reid-serve listens on.")
    port: int = Field(8000, gt=0, lt=65536, description="Port reid-serve listens on.")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the service and uvicorn."
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

    @field_validator("log_level", mode="before")
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

    def gallery_location(self) -> str:
        """Where the gallery of ``gallery_backend`` lives: its location setting when set, else
        its default place under ``data_dir``."""
        backend = get_backend(self.gallery_backend)
        chosen = getattr(self, backend.location_setting) if backend.location_setting else None
        return chosen or str(backend.default_location(self.data_dir))
