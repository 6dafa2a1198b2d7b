"""Reading the enrolment and query bodies: their fields, their frames, then the network's input.

These bodies are read by hand rather than declared as FastAPI body parameters, for two reasons:
one route accepts three input forms (multipart files, a zip archive, JSON with base64 frames),
and the API key must be checked *before* anything of the body is parsed (the routes' key
dependencies run first). Their schemas still appear in OpenAPI (:mod:`service.openapi`), built
from the same pydantic models that validate them here.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile

from model.preprocessing import InputSpec, prepare_tracklet
from service.frames import (
    EncodedFrame,
    FrameLimits,
    check_frame_count,
    decode_base64_frames,
    decode_frames,
    read_zip,
)
from service.runtime import Runtime
from service.schemas import ApiError
from service.thumbnails import shrink

log = logging.getLogger(__name__)

FieldsT = TypeVar("FieldsT", bound=BaseModel)
#: Frames as they arrived: base64 strings (JSON), encoded files (multipart) or zip bytes.
FrameSource = list[str] | list[EncodedFrame] | bytes


@dataclass
class PreparedTracklet:
    tracklet: np.ndarray  # float32 (T, 5, 56, 40)
    decode_ms: float
    preprocess_ms: float
    #: Every frame shrunk for thumbnails (enrolments that keep them), else None.
    previews: list[np.ndarray] | None = None


def ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def validation_error(exc: ValidationError) -> RequestValidationError:
    # Without the input (frames can be megabytes of base64) and without exception objects.
    errors = [
        {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return RequestValidationError(errors)


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_json(request: Request, model: type[FieldsT]) -> FieldsT:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from exc


async def read_frames_input(
    request: Request,
    fields_model: type[FieldsT],
    json_model: type[FieldsT],
    limits: FrameLimits,
) -> tuple[FieldsT, FrameSource]:
    """The request's fields and its frames, nothing decoded yet."""
    kind = media_type(request)
    if kind == "application/json":
        parsed = await read_json(request, json_model)
        return parsed, parsed.frames  # type: ignore[attr-defined]
    # A urlencoded form has no files, but answering "no frames" helps more than a 415.
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {kind or '(none)'} is not accepted: send multipart/form-data "
            "(files 'frames' or one zip 'archive') or application/json (base64 'frames')",
        )
    # Every frame is a file part; one more for the archive. Text fields are small.
    async with request.form(max_files=limits.max_frames + 1, max_fields=64) as form:
        values, uploads, archive = _split_form(form)
        try:
            fields = fields_model.model_validate(values)
        except ValidationError as exc:
            raise validation_error(exc) from exc
        if uploads and archive is not None:
            raise ApiError(
                400, "bad_request", "send the frames either as 'frames' files or as one 'archive'"
            )
        if archive is not None:
            return fields, await archive.read()
        check_frame_count(len(uploads), limits)
        frames = [
            EncodedFrame(
                label=f"frames[{i}] ({upload.filename or 'unnamed'})", data=await upload.read()
            )
            for i, upload in enumerate(uploads)
        ]
        return fields, frames


def _split_form(form: FormData) -> tuple[dict[str, str], list[UploadFile], UploadFile | None]:
    """A multipart form's text fields, its ``frames`` files and its one ``archive``."""
    values: dict[str, str] = {}
    uploads: list[UploadFile] = []
    archive: UploadFile | None = None
    for key, value in form.multi_items():
        is_file = isinstance(value, UploadFile)
        if key == "frames" and is_file:
            uploads.append(value)
        elif key == "archive" and is_file:
            if archive is not None:
                raise ApiError(400, "bad_request", "send at most one 'archive' file")
            archive = value
        elif key in ("frames", "archive"):
            raise ApiError(
                400,
                "bad_request",
                f"{key!r} must be a file upload (curl -F {key}=@path), not a text field",
            )
        elif is_file:
            raise ApiError(
                400,
                "bad_request",
                f"unexpected file field {key!r}: frames go in 'frames' (repeated) or in one "
                "zip named 'archive'",
            )
        elif key in values:
            raise ApiError(400, "bad_request", f"form field {key!r} is given twice")
        else:
            values[key] = value
    return values, uploads, archive


def decode_and_prepare(
    source: FrameSource, limits: FrameLimits, spec: InputSpec, preview_side: int | None = None
) -> PreparedTracklet:
    """Runs in a worker thread: base64/zip -> images -> the network's input (as ``spec``, the
    served model's, says), and copies shrunk to ``preview_side`` when thumbnails are kept."""
    start = time.perf_counter()
    if isinstance(source, bytes):
        encoded = read_zip(source, limits)
    elif source and isinstance(source[0], str):
        encoded = decode_base64_frames(source, limits)  # type: ignore[arg-type]
    else:
        encoded = list(source)  # type: ignore[arg-type]
    images = decode_frames(encoded, limits)
    decoded = time.perf_counter()
    try:
        tracklet = prepare_tracklet(images, spec)
    except Exception as exc:
        # Preprocessing only ever sees images that decoded; if it still fails, the cause is in
        # those images, so the client hears about it (and the server log has the trace).
        log.warning("preprocessing rejected an upload", exc_info=True)
        raise ApiError(
            422, "unprocessable_frames", f"the frames could not be preprocessed: {exc}"
        ) from exc
    return PreparedTracklet(
        tracklet=tracklet,
        decode_ms=ms(decoded - start),
        preprocess_ms=ms(time.perf_counter() - decoded),
        previews=None if preview_side is None else [shrink(i, preview_side) for i in images],
    )


async def prepare(
    source: FrameSource, limits: FrameLimits, runtime: Runtime, preview_side: int | None = None
) -> PreparedTracklet:
    """:func:`decode_and_prepare` for the served model, in a worker thread (at most
    ``REID_DECODE_WORKERS`` at once)."""
    return await anyio.to_thread.run_sync(
        decode_and_prepare,
        source,
        limits,
        runtime.encoder.spec,
        preview_side,
        limiter=runtime.decode_limiter,
    )


def check_metadata(metadata: dict[str, Any], max_bytes: int) -> None:
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > max_bytes:
        raise ApiError(
            413,
            "metadata_too_large",
            f"metadata is {size} bytes of JSON, more than the limit of "
            f"{max_bytes} (REID_MAX_METADATA_BYTES): store large data elsewhere "
            "and keep a reference in metadata",
        )
