"""The page's and the docs' files as the service serves them (the browser tests, marked slow,
render them in Chromium): everything they load comes from the service itself."""

from __future__ import annotations

import re

import httpx
import pytest

LOCAL_REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']""")


def references(html: str) -> list[str]:
    return LOCAL_REFERENCE.findall(html)


def test_home_leads_to_the_page(service_client: httpx.Client) -> None:
    response = service_client.get("/", follow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/ui"


def test_the_page_and_its_files_come_from_the_service(service_client: httpx.Client) -> None:
    page = service_client.get("/ui")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "img-src 'self' blob: data:" in policy
    assets = references(page.text)
    assert "/ui/ui.js" in assets and "/ui/ui.css" in assets
    scripts = ["/ui/ui.js"]
    while scripts:  # every module the page imports, transitively
        script = service_client.get(scripts.pop())
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        for module in re.findall(r'from "\./([\w-]+\.js)"', script.text):
            scripts.append(f"/ui/{module}")
            assets.append(f"/ui/{module}")
    for asset in assets:
        assert asset.startswith("/"), asset  # never another host
        assert service_client.get(asset).status_code == 200, asset


@pytest.mark.parametrize("name", ["../settings.py", "..%2Fsettings.py", "missing.js", "static"])
def test_only_the_page_files_are_served(service_client: httpx.Client, name: str) -> None:
    response = service_client.get(f"/ui/{name}")
    assert response.status_code == 404
    assert "error" in response.json()


def test_docs_load_their_scripts_from_the_service(service_client: httpx.Client) -> None:
    page = service_client.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href|url)\s*[=:]\s*["']([^"']+)["']""", page.text)
    assert any(url.endswith(".js") for url in urls)
    for url in urls:
        assert url.startswith("/"), f"/docs loads {url}"
        assert service_client.get(url).status_code == 200, url


def test_redoc_is_not_served(service_client: httpx.Client) -> None:
    # ReDoc's page fetches its logo from its vendor's CDN: /docs is the documentation.
    assert service_client.get("/redoc").status_code == 404


def test_the_page_is_not_part_of_the_api(service_client: httpx.Client) -> None:
    paths = service_client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p == "/" or p.startswith(("/ui", "/docs"))]
    assert "/tracklets/{tracklet_id}/thumbnails/{position}" in paths
