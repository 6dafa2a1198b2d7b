"""``/identities``: list them (paged, sorted by name), read one with its tracklets, delete one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError

from service.audit import audit
from service.dependencies import CAN_READ, CAN_WRITE, RuntimeDep, SettingsDep
from service.routers.tracklets import tracklet_out
from service.schemas import ApiError, DeletedIdentity, IdentityDetail, IdentityOut, IdentityPage

router = APIRouter(tags=["identities"])

#: The largest offset a gallery can be asked for: SQLite binds 64-bit signed integers.
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int


def _page(
    settings: SettingsDep,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    limit: Annotated[
        int, Query(ge=1, description="At most REID_MAX_PAGE_SIZE (1000 by default).")
    ] = 100,
) -> Page:
    # The upper bound is a setting, so it is checked here rather than declared on the
    # parameter; the error is the one a declared bound gives.
    if limit > settings.max_page_size:
        raise RequestValidationError(
            [
                {
                    "loc": ("query", "limit"),
                    "msg": f"Input should be less than or equal to {settings.max_page_size}",
                    "type": "less_than_equal",
                }
            ]
        )
    return Page(offset, limit)


@router.get(
    "/identities",
    response_model=IdentityPage,
    dependencies=[CAN_READ],
    summary="List identities (paged, sorted by name)",
)
async def list_identities(
    runtime: RuntimeDep,
    page: Annotated[Page, Depends(_page)],
    contains: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=256,
            description="Only identities whose name contains this (ASCII letters in any case).",
        ),
    ] = None,
) -> IdentityPage:
    gallery = runtime.gallery
    items, total = await anyio.to_thread.run_sync(
        gallery.list_identities, page.offset, page.limit, contains
    )
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
        offset=page.offset,
        limit=page.limit,
    )


@router.get(
    "/identities/{identity:path}",
    response_model=IdentityDetail,
    dependencies=[CAN_READ],
    summary="One identity and its tracklets",
)
async def get_identity(runtime: RuntimeDep, identity: str) -> IdentityDetail:
    gallery = runtime.gallery
    records = await anyio.to_thread.run_sync(gallery.get_identity, identity)
    if not records:
        raise ApiError(404, "identity_not_found", f"identity {identity!r} is not enrolled")
    ids = [record.tracklet_id for record in records]
    frames = await anyio.to_thread.run_sync(gallery.thumbnail_frames, ids)
    return IdentityDetail(
        identity=identity,
        tracklets=[tracklet_out(r, frames.get(r.tracklet_id, [])) for r in records],
    )


@router.delete(
    "/identities/{identity:path}",
    response_model=DeletedIdentity,
    dependencies=[CAN_WRITE],
    summary="Delete an identity and all its tracklets",
)
async def delete_identity(request: Request, runtime: RuntimeDep, identity: str) -> DeletedIdentity:
    deleted = await anyio.to_thread.run_sync(runtime.gallery.delete_identity, identity)
    if not deleted:
        raise ApiError(404, "identity_not_found", f"identity {identity!r} is not enrolled")
    audit(request, "delete_identity", identity=identity, deleted_tracklets=deleted)
    return DeletedIdentity(identity=identity, deleted_tracklets=deleted)
