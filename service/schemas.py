"""The HTTP API's one contract: request and response models, and the error shape.

Multipart forms and JSON bodies are validated by the same models (form fields arrive as strings
and pydantic's lax mode turns ``"5"`` into 5 and ``"true"`` into True), so both input forms accept
exactly the same fields and give the same errors.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

import pydantic_core
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

#: Most cameras one query may name in ``cameras`` or ``exclude_cameras`` (each becomes a bound
#: parameter of the gallery's filter, and SQLite allows 32766 of those in one statement).
MAX_CAMERAS = 1024


class ApiError(Exception):
    """A client error answered as ``{"error": {"code", "message"}}`` with this HTTP status."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers  # e.g. Retry-After on a 503

    def prefixed(self, prefix: str) -> ApiError:
        """The same error, its message saying where (``tracklets[3]: ...``)."""
        return ApiError(self.status, self.code, f"{prefix}: {self.message}", self.headers)


def _as_utc(value: datetime) -> datetime:
    """Naive times are taken as UTC so every stored time compares with every other."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # 9999-12-31T23:59:59-14:00 is a valid ISO time whose UTC instant is in year 10000.
        raise ValueError(
            "the time in UTC falls outside years 1..9999; send a time between "
            "0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z"
        ) from None


def _comma_list(value: object) -> object:
    """Forms send ``cameras=a,b``; JSON sends a list. Blank items are dropped."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def _json_object(value: object) -> object:
    """Forms send ``metadata`` as a JSON string; JSON bodies send an object. The string is
    parsed by the same parser as JSON bodies: nesting is capped (no RecursionError), NaN and
    Infinity are refused, and so is a lone surrogate escape (SQLite could not store it)."""
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            value = pydantic_core.from_json(value, allow_inf_nan=False)
        except ValueError as exc:
            raise ValueError(
                f"metadata is not valid JSON ({exc}); NaN, Infinity and lone surrogate escapes "
                "are refused"
            ) from exc
        if not isinstance(value, dict):
            raise ValueError('metadata must be a JSON object, e.g. {"site": "north"}')
    return value


def _finite_numbers(value: Any) -> Any:
    """JSON bodies may spell NaN and Infinity (and 1e400 overflows to infinity); none of them
    is JSON that can be stored and read back, so they are refused before any work is done."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("metadata holds NaN or Infinity, which JSON cannot store")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return value


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
CameraList = Annotated[
    Annotated[
        list[Annotated[str, Field(min_length=1, max_length=256)]], Field(max_length=MAX_CAMERAS)
    ]
    | None,
    BeforeValidator(_comma_list),
]
Metadata = Annotated[dict[str, Any], BeforeValidator(_json_object), AfterValidator(_finite_numbers)]
Base64Frames = Annotated[
    list[str],
    Field(
        min_length=1,
        description="Frames in tracklet order, each a base64 JPEG or PNG "
        "(a data:image/...;base64, prefix is accepted).",
    ),
]


#: Two tiny PNG frames (8 x 16): the documented examples are requests that really work, so
#: /docs can send them as they are, and schemathesis's examples phase gets past the decoder.
EXAMPLE_FRAMES = [
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAQCAIAAACk6KkqAAAAHElEQVQY02PU0DjBgA0wMeAAg1OCcYGGxnDwBwCGrgIn"
    "15KLvAAAAABJRU5ErkJggg==",
    "iVBORw0KGgoAAAANSUhEUgAAAAgAAAAQCAIAAACk6KkqAAAAJElEQVQY02OUOyHHwMDAlbCKARUwMeAAg1OCBUJVMCQM"
    "bX8AAPidAxKnEtnnAAAAAElFTkSuQmCC",
]
_EXAMPLE_TRACKLET = {
    "identity": "alice",
    "camera": "cam1",
    "start_time": "2024-05-01T10:00:00Z",
    "metadata": {"site": "north"},
    "frames": EXAMPLE_FRAMES,
}

# ----------------------------------------------------------------------------------- requests


class TrackletFields(BaseModel):
    """What describes one tracklet being enrolled (everything but its frames)."""

    model_config = ConfigDict(extra="forbid")

    identity: str = Field(min_length=1, max_length=256, description="Who this tracklet shows.")
    camera: str | None = Field(None, min_length=1, max_length=256)
    start_time: UtcDatetime | None = Field(None, description="ISO 8601; naive times are UTC.")
    end_time: UtcDatetime | None = Field(None, description="ISO 8601; naive times are UTC.")
    metadata: Metadata = Field(
        default_factory=dict, description="Free JSON object stored with the tracklet."
    )

    @model_validator(mode="after")
    def _ordered_times(self) -> TrackletFields:
        if self.start_time and self.end_time and self.end_time < self.start_time:
            raise ValueError("end_time is before start_time")
        return self


class EnrollJson(TrackletFields):
    """``POST /tracklets`` with ``Content-Type: application/json``."""

    model_config = ConfigDict(json_schema_extra={"examples": [_EXAMPLE_TRACKLET]})

    frames: Base64Frames


class BatchEnrollRequest(BaseModel):
    """``POST /tracklets/batch``: every tracklet is enrolled, or none."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"tracklets": [_EXAMPLE_TRACKLET]}]}
    )

    tracklets: list[EnrollJson] = Field(min_length=1)


class QueryFields(BaseModel):
    """How to search (everything but the query's frames)."""

    model_config = ConfigDict(extra="forbid")

    top_k: int = Field(10, ge=1, description="Most matches returned (at most REID_MAX_TOP_K).")
    max_distance: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Open set: matches farther than this are dropped (maybe all).",
    )
    cameras: CameraList = Field(None, description="Only these cameras (comma-separated in forms).")
    exclude_cameras: CameraList = Field(None, description="Never these cameras.")
    start_after: UtcDatetime | None = Field(
        None, description="Only tracklets that overlap the window [start_after, end_before]."
    )
    end_before: UtcDatetime | None = None
    group_by_identity: bool = Field(
        True, description="Only the nearest tracklet of each identity; top_k counts identities."
    )
    rerank: int | None = Field(
        None,
        ge=0,
        description="Re-score this many of the index's nearest tracklets (at least top_k) pair "
        "by pair with the joint attention, and rank by the pair distance; 0 turns it off. "
        "Default: REID_RERANK.",
    )

    @model_validator(mode="after")
    def _ordered_window(self) -> QueryFields:
        if self.start_after and self.end_before and self.end_before < self.start_after:
            raise ValueError("end_before is before start_after")
        return self


class QueryJson(QueryFields):
    """``POST /query`` with ``Content-Type: application/json``."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"frames": EXAMPLE_FRAMES, "top_k": 5, "exclude_cameras": ["cam1"]}]
        }
    )

    frames: Base64Frames


# ---------------------------------------------------------------------------------- responses


class EnrollResponse(BaseModel):
    tracklet_id: str
    identity: str
    camera: str | None
    num_frames: int
    attention: list[float] = Field(description="One weight per uploaded frame; they sum to 1.")


class BatchEnrollResponse(BaseModel):
    tracklets: list[EnrollResponse]


class MatchOut(BaseModel):
    rank: int = Field(description="1 for the nearest.")
    identity: str
    tracklet_id: str
    camera: str | None
    distance: float = Field(
        description="Euclidean distance between embeddings: of the pair's jointly pooled "
        "vectors when re-scored, else of the self-paired embeddings the index holds."
    )
    score: float = Field(description="1 / (1 + distance): in (0, 1], higher is closer.")
    index_distance: float | None = Field(
        None, description="Re-scored matches: the index's (self-paired) distance, for reference."
    )
    attention: list[float] | None = Field(
        None,
        description="Re-scored matches: the enrolled tracklet's attention in this pair, one "
        "weight per enrolled frame (which of its frames mattered for this query).",
    )
    query_attention: list[float] | None = Field(
        None,
        description="Re-scored matches: the query's attention in this pair, one weight per "
        "uploaded frame.",
    )


class Timings(BaseModel):
    """Server-side milliseconds spent in each stage of the request."""

    decode_ms: float
    preprocess_ms: float
    embed_ms: float
    search_ms: float
    rerank_ms: float = 0.0
    total_ms: float


class QueryResponse(BaseModel):
    matches: list[MatchOut]
    reranked: int = Field(
        0, description="How many index candidates were re-scored pair by pair (0: none)."
    )
    num_frames: int
    attention: list[float] = Field(description="One weight per uploaded frame; they sum to 1.")
    timings: Timings


class ThumbnailOut(BaseModel):
    """One stored thumbnail of a tracklet (the JPEG itself is at ``url``)."""

    position: int = Field(description="Its number among the tracklet's thumbnails, from 0.")
    frame_index: int = Field(description="The uploaded frame it shows, from 0.")
    attention: float = Field(description="That frame's attention weight at enrolment.")
    url: str = Field(description="GET it (with the API key) for the JPEG.")


class TrackletOut(BaseModel):
    tracklet_id: str
    identity: str
    camera: str | None
    start_time: datetime | None
    end_time: datetime | None
    metadata: dict[str, Any]
    num_frames: int
    attention: list[float]
    created_at: datetime | None
    thumbnails: list[ThumbnailOut] = Field(
        default_factory=list, description="Empty when none were kept (REID_THUMBNAILS=false)."
    )


class IdentityOut(BaseModel):
    identity: str
    num_tracklets: int
    cameras: list[str]
    first_seen: datetime | None
    last_seen: datetime | None


class IdentityPage(BaseModel):
    items: list[IdentityOut]
    total: int
    offset: int
    limit: int


class IdentityDetail(BaseModel):
    identity: str
    tracklets: list[TrackletOut]


class DeletedIdentity(BaseModel):
    identity: str
    deleted_tracklets: int


class DeletedTracklet(BaseModel):
    tracklet_id: str
    deleted: bool


class Health(BaseModel):
    status: str


class ModelInfo(BaseModel):
    name: str
    version: str
    variant: str | None
    embedding_size: int
    roles: dict[str, str]
    pair_scorer: bool = Field(description="Whether the model can re-score pairs (rerank).")
    rerank_default: int = Field(description="Candidates re-scored when a query does not say.")


class ThumbnailInfo(BaseModel):
    enabled: bool = Field(description="Whether enrolments keep thumbnails (REID_THUMBNAILS).")
    count: int = Field(description="Thumbnails stored in the gallery.")
    bytes: int | None = Field(
        description="Their JPEG bytes; null on Milvus, which cannot total them cheaply."
    )


class GalleryInfo(BaseModel):
    backend: str
    count: int
    index: str = Field(
        description="The gallery's search index, e.g. the FAISS index REID_FAISS_INDEX chose."
    )
    thumbnails: ThumbnailInfo


class Ready(BaseModel):
    status: str
    provider: str = Field(description="The ONNX Runtime execution provider running the model.")
    available_providers: list[str]
    model: ModelInfo
    gallery: GalleryInfo
    batching: bool


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable name, e.g. frame_too_large.")
    message: str = Field(description="What was wrong, the limit involved and what to do.")
    details: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
