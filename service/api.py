"""The HTTP API: ``create_app(settings)`` builds the whole service.

Request bodies of the enrolment and query routes are read by hand rather than declared as FastAPI
body parameters, for two reasons: one route accepts three input forms (multipart files, a zip
archive, JSON with base64 frames), and the API key must be checked *before* anything of the body
is parsed. Their schemas still appear in OpenAPI (``/docs``), built from the same pydantic models
that validate them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from model.preprocessing import prepare_tracklet
from service.batching import MicroBatcher
from service.encoder import (
    Embedded,
    Encoder,
    ModelLoadError,
    spread_attention,
    subsample_indices,
)
from service.frames import (
    EncodedFrame,
    FrameLimits,
    check_frame_count,
    decode_base64_frames,
    decode_frames,
    read_zip,
)
from service.gallery import (
    Gallery,
    GalleryError,
    GalleryModelMismatch,
    ModelSignature,
    SearchFilters,
    TrackletExists,
    TrackletRecord,
    open_gallery,
)
from service.idempotency import idempotent, new_tracklet_id
from service.limits import BodySizeLimitMiddleware
from service.metrics import RequestMetricsMiddleware, ServiceMetrics
from service.rescoring import PairScorer, RescoredMatch, rescore
from service.schemas import (
    ApiError,
    BatchEnrollRequest,
    BatchEnrollResponse,
    DeletedIdentity,
    DeletedTracklet,
    EnrollJson,
    EnrollResponse,
    ErrorResponse,
    GalleryInfo,
    Health,
    IdentityDetail,
    IdentityOut,
    IdentityPage,
    MatchOut,
    ModelInfo,
    QueryFields,
    QueryJson,
    QueryResponse,
    Ready,
    Timings,
    TrackletFields,
    TrackletOut,
)
from service.security import ApiKeys, Scope, require
from service.settings import Settings
from service.videos_api import video_body_limits, video_router

log = logging.getLogger(__name__)

FieldsT = TypeVar("FieldsT", bound=BaseModel)

SERVICE_VERSION = "0.1.0"
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in (400, 401, 403, 404, 413, 415, 422)
}


class StartupError(RuntimeError):
    """The service cannot start; the message says why and what to do."""


@dataclass
class Runtime:
    """Everything the lifespan opens and the routes use."""

    encoder: Encoder
    gallery: Gallery
    scorer: PairScorer | None  # None: the model was exported without a pair scorer
    rerank_default: int
    batcher: MicroBatcher
    executor: ThreadPoolExecutor
    decode_limiter: anyio.CapacityLimiter


@dataclass
class PreparedTracklet:
    tracklet: np.ndarray  # float32 (T, 5, 56, 40)
    decode_ms: float
    preprocess_ms: float


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


# ------------------------------------------------------------------------------------ startup


def _open_runtime(settings: Settings, metrics: ServiceMetrics) -> Runtime:
    def observe_run(tracklets: int, frames: int, seconds: float) -> None:
        metrics.batch_size.observe(tracklets)
        metrics.inference_duration.observe(seconds)

    encoder = Encoder(
        settings.model_path,
        max_embedded_frames=settings.max_embedded_frames,
        use_cuda=settings.use_cuda,
        intra_op_threads=settings.ort_intra_op_threads,
        on_run=observe_run,
    )
    scorer = None
    if encoder.card.get("pair_scorer"):
        scorer = PairScorer(
            settings.model_path,
            encoder.card,
            use_cuda=settings.use_cuda,
            intra_op_threads=settings.ort_intra_op_threads,
        )
    elif settings.rerank:
        log.warning(
            "REID_RERANK=%d but model %s has no pair scorer (exported before re-scoring "
            "existed): queries are not re-scored. Re-export it with `python -m training export`",
            settings.rerank,
            encoder.name,
        )
    location = settings.gallery_location()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    signature = ModelSignature(version=encoder.version, embedding_size=encoder.embedding_size)
    try:
        gallery = open_gallery(settings.gallery_backend, location, signature)
    except GalleryModelMismatch as exc:
        raise StartupError(
            f"the {settings.gallery_backend} gallery at {location} was built with another model "
            f"({exc}); this service runs model {encoder.name} version {encoder.version} with "
            f"{encoder.embedding_size}-d embeddings. Embeddings of different models cannot be "
            "compared: point REID_DATA_DIR (or REID_MILVUS_URI) at a new gallery and re-enroll, "
            "or serve the model the gallery was built with"
        ) from exc
    except GalleryError as exc:
        raise StartupError(
            f"cannot open the {settings.gallery_backend} gallery at {location}: {exc}"
        ) from exc
    executor = ThreadPoolExecutor(
        max_workers=settings.inference_workers, thread_name_prefix="reid-infer"
    )
    batcher = MicroBatcher(
        encoder,
        executor,
        enabled=settings.batching,
        max_size=settings.batch_max_size,
        max_frames=settings.batch_max_frames,
        wait_ms=settings.batch_wait_ms,
    )
    metrics.describe_model(
        encoder.provider, encoder.name, encoder.version, settings.gallery_backend
    )
    metrics.track_gallery(gallery.count)
    return Runtime(
        encoder=encoder,
        gallery=gallery,
        scorer=scorer,
        rerank_default=settings.rerank if scorer is not None else 0,
        batcher=batcher,
        executor=executor,
        decode_limiter=anyio.CapacityLimiter(settings.decode_workers),
    )


# ----------------------------------------------------------------------------- input reading


def _validation_error(exc: ValidationError) -> RequestValidationError:
    # Without the input (frames can be megabytes of base64) and without exception objects.
    errors = [
        {"loc": ["body", *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]
    return RequestValidationError(errors)


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def _read_json(request: Request, model: type[FieldsT]) -> FieldsT:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise _validation_error(exc) from exc


async def _read_frames_input(
    request: Request,
    fields_model: type[FieldsT],
    json_model: type[FieldsT],
    limits: FrameLimits,
) -> tuple[FieldsT, list[str] | list[EncodedFrame] | bytes]:
    """The request's fields and its frames: base64 strings (JSON), encoded files (multipart
    ``frames``) or zip bytes (multipart ``archive``). Nothing is decoded yet."""
    media_type = _media_type(request)
    if media_type == "application/json":
        parsed = await _read_json(request, json_model)
        return parsed, parsed.frames  # type: ignore[attr-defined]
    # A urlencoded form has no files, but answering "no frames" helps more than a 415.
    if media_type not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media_type or '(none)'} is not accepted: send multipart/form-data "
            "(files 'frames' or one zip 'archive') or application/json (base64 'frames')",
        )
    # Every frame is a file part; one more for the archive. Text fields are small.
    async with request.form(max_files=limits.max_frames + 1, max_fields=64) as form:
        values: dict[str, str] = {}
        uploads: list[UploadFile] = []
        archive: UploadFile | None = None
        for key, value in form.multi_items():
            if key == "frames" and isinstance(value, UploadFile):
                uploads.append(value)
            elif key == "archive" and isinstance(value, UploadFile):
                if archive is not None:
                    raise ApiError(400, "bad_request", "send at most one 'archive' file")
                archive = value
            elif key in ("frames", "archive") and not isinstance(value, UploadFile):
                raise ApiError(
                    400,
                    "bad_request",
                    f"{key!r} must be a file upload (curl -F {key}=@path), not a text field",
                )
            elif isinstance(value, UploadFile):
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
        try:
            fields = fields_model.model_validate(values)
        except ValidationError as exc:
            raise _validation_error(exc) from exc
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


def _decode_and_prepare(
    source: list[str] | list[EncodedFrame] | bytes, limits: FrameLimits
) -> PreparedTracklet:
    """Runs in a worker thread: base64/zip -> images -> the network's input."""
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
        tracklet = prepare_tracklet(images)
    except Exception as exc:
        # Preprocessing only ever sees images that decoded; if it still fails, the cause is in
        # those images, so the client hears about it (and the server log has the trace).
        log.warning("preprocessing rejected an upload", exc_info=True)
        raise ApiError(
            422, "unprocessable_frames", f"the frames could not be preprocessed: {exc}"
        ) from exc
    return PreparedTracklet(
        tracklet=tracklet,
        decode_ms=_ms(decoded - start),
        preprocess_ms=_ms(time.perf_counter() - decoded),
    )


def _check_metadata(metadata: dict[str, Any], settings: Settings) -> None:
    size = len(json.dumps(metadata, separators=(",", ":")).encode())
    if size > settings.max_metadata_bytes:
        raise ApiError(
            413,
            "metadata_too_large",
            f"metadata is {size} bytes of JSON, more than the limit of "
            f"{settings.max_metadata_bytes} (REID_MAX_METADATA_BYTES): store large data elsewhere "
            "and keep a reference in metadata",
        )


def _with_prefix(exc: ApiError, prefix: str) -> ApiError:
    return ApiError(exc.status, exc.code, f"{prefix}: {exc.message}")


def _record(fields: TrackletFields, embedded: Embedded) -> TrackletRecord:
    return TrackletRecord(
        tracklet_id=new_tracklet_id(),  # derived from an Idempotency-Key when there is one
        identity=fields.identity,
        embedding=embedded.embedding,
        features=embedded.features,
        attention=embedded.attention,
        camera=fields.camera,
        start_time=fields.start_time,
        end_time=fields.end_time,
        metadata=fields.metadata,
        created_at=datetime.now(UTC),
    )


def _enroll_response(record: TrackletRecord) -> EnrollResponse:
    return EnrollResponse(
        tracklet_id=record.tracklet_id,
        identity=record.identity,
        camera=record.camera,
        num_frames=record.num_frames,
        attention=[float(w) for w in record.attention],
    )


def _tracklet_out(record: TrackletRecord) -> TrackletOut:
    return TrackletOut(
        tracklet_id=record.tracklet_id,
        identity=record.identity,
        camera=record.camera,
        start_time=record.start_time,
        end_time=record.end_time,
        metadata=record.metadata,
        num_frames=record.num_frames,
        attention=[float(w) for w in record.attention],
        created_at=record.created_at,
    )


def score(distance: float) -> float:
    """Similarity in (0, 1] from a Euclidean distance: 1 / (1 + d). No scale to tune, monotone,
    and 1 exactly for identical embeddings."""
    return 1.0 / (1.0 + max(distance, 0.0))


# ------------------------------------------------------------------------------ OpenAPI help


def _multipart_schema(fields_model: type[BaseModel], as_text: Sequence[str]) -> dict[str, Any]:
    schema = fields_model.model_json_schema()
    properties: dict[str, Any] = dict(schema["properties"])
    for name in as_text:
        description = properties[name].get("description", "")
        properties[name] = {"type": "string", "description": description}
    properties["frames"] = {
        "type": "array",
        "items": {"type": "string", "format": "binary"},
        "description": "JPEG or PNG files in tracklet order (repeat the field).",
    }
    properties["archive"] = {
        "type": "string",
        "format": "binary",
        "description": "Instead of 'frames': one zip of frames, ordered by name (numerically).",
    }
    return {"type": "object", "properties": properties, "required": schema.get("required", [])}


def _body_doc(json_model: type[BaseModel], multipart: dict[str, Any] | None) -> dict[str, Any]:
    content: dict[str, Any] = {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{json_model.__name__}"}}
    }
    if multipart is not None:
        content["multipart/form-data"] = {"schema": multipart}
    return {"requestBody": {"required": True, "content": content}}


def _install_openapi(app: FastAPI, models: Sequence[type[BaseModel]]) -> None:
    """Add the hand-read request models to the OpenAPI components."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = model_schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


# ------------------------------------------------------------------------------------ errors


def _error(status: int, code: str, message: str, details: list[dict[str, Any]] | None = None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse(status_code=status, content={"error": body})


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    415: "unsupported_media_type",
}


def _install_error_handlers(app: FastAPI, metrics: ServiceMetrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        metrics.errors.labels(exc.code).inc()
        response = _error(exc.status, exc.code, exc.message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {
                "loc": list(err.get("loc", ())),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
            for err in exc.errors()
        ]
        summary = "; ".join(
            f"{'.'.join(str(part) for part in d['loc'] if part != 'body') or 'body'}: {d['msg']}"
            for d in details
        )
        metrics.errors.labels("invalid_request").inc()
        return _error(422, "invalid_request", f"invalid request: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        metrics.errors.labels(code).inc()
        response = _error(exc.status_code, code, str(exc.detail))
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(GalleryError)
    async def gallery_error(_: Request, exc: GalleryError) -> JSONResponse:
        log.exception("gallery error", exc_info=exc)
        if isinstance(exc, TrackletExists):
            metrics.errors.labels("tracklet_exists").inc()
            return _error(409, "tracklet_exists", str(exc))
        metrics.errors.labels("gallery_error").inc()
        return _error(503, "gallery_error", f"the gallery failed: {exc}; nothing was changed")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        metrics.errors.labels("internal_error").inc()
        return _error(500, "internal_error", "internal server error (see the server log)")


def _rescored_matches(
    runtime: Runtime, embedded: Embedded, candidates: Sequence[Any], fields: QueryFields
) -> list[MatchOut]:
    """Re-score the index's candidates and give each match its pair attentions, spread over the
    uploaded frames of the query and of the enrolled tracklet (as enrolment answered them)."""
    assert runtime.scorer is not None
    rescored: list[RescoredMatch] = rescore(
        runtime.gallery,
        runtime.scorer,
        embedded.features,
        candidates,
        fields.top_k,
        group_by_identity=fields.group_by_identity,
        max_distance=fields.max_distance,
    )
    frames = runtime.gallery.get_num_frames([m.tracklet_id for m in rescored])
    query_frames = int(embedded.attention.shape[0])
    query_indices = subsample_indices(query_frames, embedded.features.shape[0])
    out = []
    for rank, match in enumerate(rescored, start=1):
        steps = match.candidate_attention.shape[0]
        enrolled_frames = frames.get(match.tracklet_id, steps)
        attention = spread_attention(
            match.candidate_attention, subsample_indices(enrolled_frames, steps), enrolled_frames
        )
        query_attention = spread_attention(match.query_attention, query_indices, query_frames)
        out.append(
            MatchOut(
                rank=rank,
                identity=match.identity,
                tracklet_id=match.tracklet_id,
                camera=match.camera,
                distance=match.distance,
                score=score(match.distance),
                index_distance=match.index_distance,
                attention=[float(w) for w in attention],
                query_attention=[float(w) for w in query_attention],
            )
        )
    return out


# ------------------------------------------------------------------------------------ the app


def create_app(settings: Settings) -> FastAPI:
    """The service, configured by ``settings``; the model and gallery open in its lifespan."""
    metrics = ServiceMetrics()
    keys = ApiKeys(settings.api_keys_read, settings.api_keys_write)
    limits = FrameLimits.from_settings(settings)
    can_read = Depends(require(keys, Scope.READ))
    can_write = Depends(require(keys, Scope.WRITE))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            runtime = await anyio.to_thread.run_sync(_open_runtime, settings, metrics)
        except (ModelLoadError, StartupError) as exc:
            log.error("cannot start the re-id service: %s", exc)
            raise
        app.state.runtime = runtime
        log.info(
            "serving model %s %s on %s; %s gallery with %d tracklets; batching %s",
            runtime.encoder.name,
            runtime.encoder.version,
            runtime.encoder.provider,
            settings.gallery_backend,
            runtime.gallery.count(),
            "on" if settings.batching else "off",
        )
        try:
            yield
        finally:
            await runtime.batcher.drain()
            runtime.executor.shutdown(wait=True)
            runtime.gallery.close()

    app = FastAPI(
        title="ASTPN video person re-identification",
        version=SERVICE_VERSION,
        description="Enroll tracklets (sequences of person crops) and query who a tracklet "
        'shows. Errors always come as {"error": {"code", "message"}}.',
        lifespan=lifespan,
        responses=_ERROR_RESPONSES,
    )
    _install_error_handlers(app, metrics)
    # Starlette runs the last added middleware first: metrics see the limiter's 413s too.
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_bytes,
        path_limits=video_body_limits(settings),
    )
    app.add_middleware(RequestMetricsMiddleware, metrics=metrics)

    def runtime_of(request: Request) -> Runtime:
        return request.app.state.runtime

    async def prepare(runtime: Runtime, source: list[str] | list[EncodedFrame] | bytes):
        return await anyio.to_thread.run_sync(
            _decode_and_prepare, source, limits, limiter=runtime.decode_limiter
        )

    def count_embedding(embedded: Embedded, role: str) -> None:
        metrics.frames_embedded.labels(role).inc(embedded.features.shape[0])
        metrics.tracklets_embedded.labels(role).inc()

    router = APIRouter()

    @router.post(
        "/tracklets",
        status_code=201,
        response_model=EnrollResponse,
        dependencies=[can_write],
        openapi_extra=_body_doc(EnrollJson, _multipart_schema(TrackletFields, ["metadata"])),
        summary="Enroll one tracklet",
    )
    @idempotent(lambda records: _enroll_response(records[0]))
    async def enroll(request: Request) -> EnrollResponse:
        """Frames as repeated multipart files ``frames``, one zip ``archive``, or JSON with
        base64 ``frames``. Answered once the gallery has stored the tracklet durably."""
        runtime = runtime_of(request)
        fields, source = await _read_frames_input(request, TrackletFields, EnrollJson, limits)
        _check_metadata(fields.metadata, settings)
        prepared = await prepare(runtime, source)
        embedded = await runtime.batcher.embed(prepared.tracklet, "enroll")
        count_embedding(embedded, "enroll")
        record = _record(fields, embedded)
        await anyio.to_thread.run_sync(runtime.gallery.add, [record])
        return _enroll_response(record)

    @router.post(
        "/tracklets/batch",
        status_code=201,
        response_model=BatchEnrollResponse,
        dependencies=[can_write],
        openapi_extra=_body_doc(BatchEnrollRequest, None),
        summary="Enroll many tracklets atomically",
    )
    @idempotent(
        lambda records: BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records])
    )
    async def enroll_batch(request: Request) -> BatchEnrollResponse:
        """JSON only. Every tracklet is enrolled, or (on any error) none is."""
        runtime = runtime_of(request)
        if _media_type(request) != "application/json":
            raise ApiError(
                415, "unsupported_media_type", "POST /tracklets/batch takes application/json"
            )
        batch = await _read_json(request, BatchEnrollRequest)
        if len(batch.tracklets) > settings.max_batch_tracklets:
            raise ApiError(
                413,
                "too_many_tracklets",
                f"the batch has {len(batch.tracklets)} tracklets, more than the limit of "
                f"{settings.max_batch_tracklets} (REID_MAX_BATCH_TRACKLETS): split it",
            )

        async def prepare_one(index: int, item: EnrollJson) -> PreparedTracklet:
            try:
                _check_metadata(item.metadata, settings)
                return await prepare(runtime, item.frames)
            except ApiError as exc:
                raise _with_prefix(exc, f"tracklets[{index}]") from exc

        # The first failing tracklet's error is the answer; nothing has been stored yet.
        prepared = await asyncio.gather(
            *(prepare_one(index, item) for index, item in enumerate(batch.tracklets))
        )
        tracklets = [item.tracklet for item in prepared]
        embedded = await runtime.batcher.embed_many(tracklets, "enroll")
        records = []
        for fields, result in zip(batch.tracklets, embedded, strict=True):
            count_embedding(result, "enroll")
            records.append(_record(fields, result))
        await anyio.to_thread.run_sync(runtime.gallery.add, records)
        return BatchEnrollResponse(tracklets=[_enroll_response(r) for r in records])

    @router.post(
        "/query",
        response_model=QueryResponse,
        dependencies=[can_read],
        openapi_extra=_body_doc(
            QueryJson, _multipart_schema(QueryFields, ["cameras", "exclude_cameras"])
        ),
        summary="Who does this tracklet show?",
    )
    async def query(request: Request) -> QueryResponse:
        """The nearest enrolled tracklets (or identities) to the query's frames."""
        start = time.perf_counter()
        runtime = runtime_of(request)
        fields, source = await _read_frames_input(request, QueryFields, QueryJson, limits)
        if fields.top_k > settings.max_top_k:
            raise ApiError(
                422,
                "top_k_too_large",
                f"top_k is {fields.top_k}; the limit is {settings.max_top_k} (REID_MAX_TOP_K)",
            )
        rerank = runtime.rerank_default if fields.rerank is None else fields.rerank
        if rerank > settings.max_rerank:
            raise ApiError(
                422,
                "rerank_too_large",
                f"rerank is {rerank}; the limit is {settings.max_rerank} (REID_MAX_RERANK)",
            )
        if rerank and runtime.scorer is None:
            raise ApiError(
                422,
                "rerank_unavailable",
                f"model {runtime.encoder.name} {runtime.encoder.version} has no pair scorer; "
                "query with rerank=0, or serve a model re-exported with `python -m training "
                "export` (it writes the .pair.onnx beside the .onnx)",
            )
        prepared = await prepare(runtime, source)
        embed_start = time.perf_counter()
        embedded = await runtime.batcher.embed(prepared.tracklet, "query")
        count_embedding(embedded, "query")
        search_start = time.perf_counter()
        filters = SearchFilters(
            cameras=fields.cameras,
            exclude_cameras=fields.exclude_cameras,
            start_after=fields.start_after,
            end_before=fields.end_before,
        )
        # Re-scoring needs the nearest *tracklets* (several may belong to one identity) and
        # decides grouping and the open-set cut on the pair distance afterwards.
        search = functools.partial(
            runtime.gallery.search,
            embedded.embedding,
            max(rerank, fields.top_k) if rerank else fields.top_k,
            filters,
            group_by_identity=fields.group_by_identity and not rerank,
            max_distance=None if rerank else fields.max_distance,
        )
        matches = await anyio.to_thread.run_sync(search)
        rerank_start = time.perf_counter()
        if rerank:
            assert runtime.scorer is not None
            out = await anyio.to_thread.run_sync(
                _rescored_matches, runtime, embedded, matches, fields
            )
        else:
            out = [
                MatchOut(
                    rank=rank,
                    identity=match.identity,
                    tracklet_id=match.tracklet_id,
                    camera=match.camera,
                    distance=float(match.distance),
                    score=score(float(match.distance)),
                )
                for rank, match in enumerate(matches, start=1)
            ]
        end = time.perf_counter()
        return QueryResponse(
            matches=out,
            reranked=len(matches) if rerank else 0,
            num_frames=int(embedded.attention.shape[0]),
            attention=[float(w) for w in embedded.attention],
            timings=Timings(
                decode_ms=prepared.decode_ms,
                preprocess_ms=prepared.preprocess_ms,
                embed_ms=_ms(search_start - embed_start),
                search_ms=_ms(rerank_start - search_start),
                rerank_ms=_ms(end - rerank_start) if rerank else 0.0,
                total_ms=_ms(end - start),
            ),
        )

    @router.get(
        "/identities",
        response_model=IdentityPage,
        dependencies=[can_read],
        summary="List identities (paged, sorted by name)",
    )
    async def list_identities(
        request: Request,
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=settings.max_page_size),
    ) -> IdentityPage:
        gallery = runtime_of(request).gallery
        items, total = await anyio.to_thread.run_sync(gallery.list_identities, offset, limit)
        return IdentityPage(
            items=[
                IdentityOut(
                    identity=item.identity,
                    num_tracklets=item.num_tracklets,
                    cameras=list(item.cameras),
                    first_seen=item.first_seen,
                    last_seen=item.last_seen,
                )
                for item in items
            ],
            total=total,
            offset=offset,
            limit=limit,
        )

    @router.get(
        "/identities/{identity:path}",
        response_model=IdentityDetail,
        dependencies=[can_read],
        summary="One identity and its tracklets",
    )
    async def get_identity(request: Request, identity: str) -> IdentityDetail:
        gallery = runtime_of(request).gallery
        records = await anyio.to_thread.run_sync(gallery.get_identity, identity)
        if not records:
            raise ApiError(404, "identity_not_found", f"identity {identity!r} is not enrolled")
        return IdentityDetail(identity=identity, tracklets=[_tracklet_out(r) for r in records])

    @router.delete(
        "/identities/{identity:path}",
        response_model=DeletedIdentity,
        dependencies=[can_write],
        summary="Delete an identity and all its tracklets",
    )
    async def delete_identity(request: Request, identity: str) -> DeletedIdentity:
        gallery = runtime_of(request).gallery
        deleted = await anyio.to_thread.run_sync(gallery.delete_identity, identity)
        if not deleted:
            raise ApiError(404, "identity_not_found", f"identity {identity!r} is not enrolled")
        return DeletedIdentity(identity=identity, deleted_tracklets=deleted)

    @router.get(
        "/tracklets/{tracklet_id}",
        response_model=TrackletOut,
        dependencies=[can_read],
        summary="One enrolled tracklet",
    )
    async def get_tracklet(request: Request, tracklet_id: str) -> TrackletOut:
        gallery = runtime_of(request).gallery
        record = await anyio.to_thread.run_sync(gallery.get_tracklet, tracklet_id)
        if record is None:
            raise ApiError(404, "tracklet_not_found", f"tracklet {tracklet_id!r} is not enrolled")
        return _tracklet_out(record)

    @router.delete(
        "/tracklets/{tracklet_id}",
        response_model=DeletedTracklet,
        dependencies=[can_write],
        summary="Delete one tracklet",
    )
    async def delete_tracklet(request: Request, tracklet_id: str) -> DeletedTracklet:
        gallery = runtime_of(request).gallery
        if not await anyio.to_thread.run_sync(gallery.delete_tracklet, tracklet_id):
            raise ApiError(404, "tracklet_not_found", f"tracklet {tracklet_id!r} is not enrolled")
        return DeletedTracklet(tracklet_id=tracklet_id, deleted=True)

    @router.get("/healthz", response_model=Health, summary="The process is alive")
    async def healthz() -> Health:
        return Health(status="ok")

    @router.get(
        "/readyz",
        response_model=Ready,
        responses={503: {"model": ErrorResponse}},
        summary="Model and gallery are loaded",
    )
    async def readyz(request: Request) -> Ready:
        runtime: Runtime | None = getattr(request.app.state, "runtime", None)
        if runtime is None:
            raise ApiError(503, "not_ready", "the model and gallery are still loading")
        try:
            count = await anyio.to_thread.run_sync(runtime.gallery.count)
        except Exception as exc:
            raise ApiError(
                503, "gallery_unavailable", f"the gallery does not answer: {exc}"
            ) from exc
        encoder = runtime.encoder
        return Ready(
            status="ready",
            provider=encoder.provider,
            available_providers=encoder.available_providers,
            model=ModelInfo(
                name=encoder.name,
                version=encoder.version,
                variant=encoder.variant,
                path=str(encoder.model_path),
                embedding_size=encoder.embedding_size,
                roles=encoder.roles,
                pair_scorer=runtime.scorer is not None,
                rerank_default=runtime.rerank_default,
            ),
            gallery=GalleryInfo(backend=settings.gallery_backend, count=count),
            batching=settings.batching,
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics_endpoint() -> Response:
        content, media_type = metrics.render()
        return Response(content=content, media_type=media_type)

    app.include_router(router)
    app.include_router(video_router(settings, keys))
    _install_openapi(app, [EnrollJson, QueryJson, BatchEnrollRequest])
    return app
