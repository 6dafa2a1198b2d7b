"""The contract of ``POST /videos`` and its job resource ``GET /videos/{job_id}``."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from service.schemas import CameraList, MatchOut, Metadata, QueryFields, UtcDatetime

VideoMode = Literal["enroll", "query"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]


def _json_mapping(value: object) -> object:
    """Forms send ``identities`` as a JSON string."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"identities is not valid JSON ({exc.msg} at {exc.pos})") from exc
    if isinstance(value, dict):
        return {str(key): item for key, item in value.items()}
    raise ValueError('identities must be a JSON object of track id -> identity, e.g. {"3": "bob"}')


IdentityMap = Annotated[
    dict[str, Annotated[str, Field(min_length=1, max_length=256)]],
    BeforeValidator(_json_mapping),
]

_QUERY_ONLY = (
    "top_k",
    "max_distance",
    "cameras",
    "exclude_cameras",
    "start_after",
    "end_before",
    "group_by_identity",
    "rerank",
)


class VideoFields(BaseModel):
    """The form fields of ``POST /videos`` (the files are ``video`` or ``archive`` or
    ``frames``, and ``tracks``)."""

    model_config = ConfigDict(extra="forbid")

    mode: VideoMode = Field(description="From the query string: enroll or query.")
    camera: str = Field(min_length=1, max_length=256, description="The camera that filmed it.")
    start_time: UtcDatetime | None = Field(
        None, description="When frame 1 was filmed (ISO 8601); tracklet times follow from it."
    )
    fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        description="Frames per second; default: the video's own rate, or seqinfo.ini's.",
    )
    min_track_frames: int | None = Field(
        None,
        ge=1,
        description="Drop tracks with fewer boxes (default REID_VIDEO_MIN_TRACK_FRAMES).",
    )
    # -- enroll
    identities: IdentityMap | None = Field(
        None,
        description='Enroll: track id -> identity, e.g. {"3": "alice"}; every kept track must '
        "be named. Default: each track is '<camera>:<track id>'.",
    )
    metadata: Metadata = Field(
        default_factory=dict, description="Enroll: stored with every tracklet (plus 'track')."
    )
    # -- query
    top_k: int = Field(10, ge=1, description="Query: matches per track.")
    max_distance: float | None = Field(None, ge=0)
    cameras: CameraList = None
    exclude_cameras: CameraList = None
    start_after: UtcDatetime | None = None
    end_before: UtcDatetime | None = None
    group_by_identity: bool = True
    rerank: int | None = Field(None, ge=0)

    def query_fields(self) -> QueryFields:
        """The search options, as ``POST /query`` takes them."""
        return QueryFields.model_validate(self.model_dump(include=set(_QUERY_ONLY)))

    @model_validator(mode="before")
    @classmethod
    def _fields_of_mode(cls, data: object) -> object:
        if not isinstance(data, dict):
            return data
        mode = data.get("mode")
        wrong = (
            [name for name in _QUERY_ONLY if name in data]
            if mode == "enroll"
            else [name for name in ("identities", "metadata") if name in data]
        )
        if wrong:
            raise ValueError(f"{', '.join(wrong)} do not apply to mode={mode}")
        return data


class VideoProgress(BaseModel):
    frames_decoded: int = 0
    frames_total: int = Field(0, description="Frames to decode: up to the last box's frame.")
    tracks_embedded: int = 0
    tracks_total: int = 0


class TrackOut(BaseModel):
    track_id: int
    first_frame: int
    last_frame: int
    num_boxes: int = Field(description="Boxes of this track in the tracks file.")
    num_frames: int = Field(description="Crops embedded (long tracks are evenly subsampled).")
    start_time: datetime | None
    end_time: datetime | None
    tracklet_id: str | None = Field(None, description="Enroll: the enrolled tracklet.")
    identity: str | None = Field(None, description="Enroll: who it was enrolled as.")
    matches: list[MatchOut] | None = Field(None, description="Query: nearest first.")


class DroppedTrackOut(BaseModel):
    track_id: int
    first_frame: int
    last_frame: int
    num_boxes: int
    reason: str


class JobError(BaseModel):
    status: int = Field(description="The HTTP status this error would have had.")
    code: str
    message: str


class VideoJob(BaseModel):
    """A video being cut, embedded and enrolled or queried."""

    job_id: str
    status: JobStatus
    mode: VideoMode
    camera: str
    source: str = Field(description="The video file's name, or 'frames'.")
    width: int
    height: int
    fps: float | None
    progress: VideoProgress
    tracks: list[TrackOut] = Field(
        default_factory=list, description="Filled when the job succeeds, in track id order."
    )
    dropped_tracks: list[DroppedTrackOut] = Field(default_factory=list)
    error: JobError | None = None
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
