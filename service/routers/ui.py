"""The web page at ``/ui``: plain HTML, CSS and JavaScript files shipped in the package
(``service/static/ui``), no build step and nothing fetched from another host, so it works on a
network without internet. It talks to the API like any client, sending the API key the person
typed (kept in the browser tab, never on the server)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.schemas import ApiError

router = APIRouter(include_in_schema=False)

STATIC = Path(__file__).resolve().parent.parent / "static" / "ui"
#: Served by name only, so no path can reach outside the folder.
ASSETS = {path.name: path for path in STATIC.iterdir() if path.is_file()}
#: The page may load only what this service serves; thumbnails come as blob: URLs because
#: they are fetched with the key header.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui")


@router.get("/ui")
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", headers=SECURITY_HEADERS)


@router.get("/ui/{name}")
async def asset(name: str) -> FileResponse:
    path = ASSETS.get(name)
    if path is None:
        raise ApiError(404, "not_found", f"/ui/{name} does not exist")
    return FileResponse(path, headers=SECURITY_HEADERS)
