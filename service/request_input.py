"""Reading the enrolment and query bodies: their fields and their frames, nothing decoded yet
(:mod:`service.embedding` takes the frames from there).

These bodies are read by hand rather than declared as FastAPI body parameters, for two reasons:
one route accepts three input forms (multipart files, a zip archive, JSON with base64 frames),
and the API key must be checked *before* anything of the body is parsed (the routes' key
dependencies run first). Their schemas still appear in OpenAPI (:mod:`service.openapi`), built
from the same pydantic models that validate them here.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from service.embedding import FrameSource
from service.frames import EncodedFrame, FrameLimits, check_frame_count
from service.schemas import ApiError

FieldsT = TypeVar("FieldsT", bound=BaseModel)


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
    """The body validated by ``model`` in strict mode: JSON has real booleans and numbers, so
    ``"top_k": true`` is refused rather than taken as 1 (forms, all strings, stay lax). The body
    is read without Starlette's cache (``request.body()`` keeps it for the request's life), so
    its bytes are freed once parsed."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    try:
        return model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from exc


class _Utf8MultiPartParser(MultiPartParser):
    """Starlette's multipart parser, except that a text field that is not UTF-8 is refused:
    Starlette falls back to Latin-1, and an identity would be stored as mojibake."""

    def on_part_end(self) -> None:
        part = self._current_part
        if part.file is None:
            try:
                bytes(part.data).decode("utf-8")
            except UnicodeDecodeError:
                raise MultiPartException(
                    f"form field {part.field_name!r} is not valid UTF-8: send text fields "
                    "encoded as UTF-8"
                ) from None
        super().on_part_end()


@asynccontextmanager
async def read_form(request: Request, max_files: int, max_fields: int) -> AsyncIterator[FormData]:
    """The request's form (multipart, or urlencoded), closed (its temporary files too) on exit."""
    try:
        if media_type(request) == "multipart/form-data":
            parser = _Utf8MultiPartParser(
                request.headers, request.stream(), max_files=max_files, max_fields=max_fields
            )
            form = await parser.parse()
        else:
            form = await request.form(max_files=max_files, max_fields=max_fields)
    except MultiPartException as exc:
        raise ApiError(
            400, "bad_request", f"the multipart body is malformed: {exc.message}"
        ) from exc
    try:
        yield form
    finally:
        await form.close()


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
    async with read_form(request, max_files=limits.max_frames + 1, max_fields=64) as form:
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
