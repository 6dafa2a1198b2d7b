"""``POST /query``: who does this tracklet show? The index's nearest tracklets (or identities),
optionally re-scored pair by pair with the joint attention (:mod:`service.rescoring`)."""

from __future__ import annotations

import functools
import time
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from service.dependencies import CAN_READ, SettingsDep, WorkDep
from service.embedding import embed_checked, ms, unpack
from service.encoder import Embedded
from service.gallery import Match, SearchFilters
from service.openapi import body_doc, multipart_schema
from service.request_input import read_frames_input
from service.rescoring import RescoredMatch, rescore
from service.runtime import Runtime
from service.schemas import ApiError, MatchOut, QueryFields, QueryJson, QueryResponse, Timings
from service.settings import Settings

router = APIRouter(tags=["query"])


def score(distance: float) -> float:
    """Similarity in (0, 1] from a Euclidean distance: 1 / (1 + d). No scale to tune, monotone,
    and 1 exactly for identical embeddings."""
    return 1.0 / (1.0 + max(distance, 0.0))


def rerank_of(fields: QueryFields, settings: Settings, runtime: Runtime) -> int:
    """How many candidates this query re-scores (0: none), or why it may not."""
    if fields.top_k > settings.max_top_k:
        raise ApiError(
            422,
            "top_k_too_large",
            f"top_k is {fields.top_k}; the limit is {settings.max_top_k} (REID_MAX_TOP_K)",
        )
    rerank = runtime.model.rerank_default if fields.rerank is None else fields.rerank
    if rerank > settings.max_rerank:
        raise ApiError(
            422,
            "rerank_too_large",
            f"rerank is {rerank}; the limit is {settings.max_rerank} (REID_MAX_RERANK)",
        )
    if rerank and runtime.model.scorer is None:
        raise ApiError(
            422,
            "rerank_unavailable",
            f"model {runtime.encoder.name} {runtime.encoder.version} has no pair scorer; "
            "query with rerank=0, or serve a model re-exported with `python -m training "
            "export` (it writes the .pair.onnx beside the .onnx)",
        )
    return rerank


def search_matches(
    runtime: Runtime, embedded: Embedded, fields: QueryFields, rerank: int
) -> list[Match]:
    filters = SearchFilters(
        cameras=fields.cameras,
        exclude_cameras=fields.exclude_cameras,
        start_after=fields.start_after,
        end_before=fields.end_before,
    )
    # Re-scoring needs the nearest *tracklets* (several may belong to one identity) and decides
    # grouping and the open-set cut on the pair distance afterwards.
    return runtime.gallery.search(
        embedded.embedding,
        max(rerank, fields.top_k) if rerank else fields.top_k,
        filters,
        group_by_identity=fields.group_by_identity and not rerank,
        max_distance=None if rerank else fields.max_distance,
    )


def match_out(rank: int, match: Match | RescoredMatch, **rescored: Any) -> MatchOut:
    distance = float(match.distance)
    return MatchOut(
        rank=rank,
        identity=match.identity,
        tracklet_id=match.tracklet_id,
        camera=match.camera,
        distance=distance,
        score=score(distance),
        **rescored,
    )


def rescored_matches(
    runtime: Runtime, embedded: Embedded, candidates: list[Match], fields: QueryFields
) -> list[MatchOut]:
    assert runtime.model.scorer is not None
    rescored = rescore(
        runtime.gallery,
        runtime.model.scorer,
        embedded.features,
        int(embedded.attention.shape[0]),
        candidates,
        fields.top_k,
        group_by_identity=fields.group_by_identity,
        max_distance=fields.max_distance,
    )
    return [
        match_out(
            rank,
            match,
            index_distance=match.index_distance,
            attention=[float(w) for w in match.candidate_attention],
            query_attention=[float(w) for w in match.query_attention],
        )
        for rank, match in enumerate(rescored, start=1)
    ]


@router.post(
    "/query",
    response_model=QueryResponse,
    dependencies=[CAN_READ],
    openapi_extra=body_doc(
        QueryJson, multipart_schema(QueryFields, ["cameras", "exclude_cameras"])
    ),
    summary="Who does this tracklet show?",
)
async def query(request: Request, settings: SettingsDep, work: WorkDep) -> QueryResponse:
    """The nearest enrolled tracklets (or identities) to the query's frames."""
    start = time.perf_counter()
    runtime = work.runtime
    fields, source = await read_frames_input(request, QueryFields, QueryJson, work.limits)
    rerank = rerank_of(fields, settings, runtime)
    checked = await unpack(source, work)
    del source  # unpacked: an archive's bytes need not outlive this point
    encoded = await embed_checked(checked, "query", work)
    embedded = encoded.embedded
    work.deadline.check("before searching the gallery")
    search_start = time.perf_counter()
    search = functools.partial(search_matches, runtime, embedded, fields, rerank)
    matches = await anyio.to_thread.run_sync(search)
    rerank_start = time.perf_counter()
    if rerank:
        answer = functools.partial(rescored_matches, runtime, embedded, matches, fields)
        out = await anyio.to_thread.run_sync(answer)
    else:
        out = [match_out(rank, match) for rank, match in enumerate(matches, start=1)]
    end = time.perf_counter()
    return QueryResponse(
        matches=out,
        reranked=len(matches) if rerank else 0,
        num_frames=int(embedded.attention.shape[0]),
        attention=[float(w) for w in embedded.attention],
        timings=Timings(
            decode_ms=encoded.decode_ms,
            preprocess_ms=encoded.preprocess_ms,
            embed_ms=encoded.embed_ms,
            search_ms=ms(rerank_start - search_start),
            rerank_ms=ms(end - rerank_start) if rerank else 0.0,
            total_ms=ms(end - start),
        ),
    )
