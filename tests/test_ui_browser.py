"""The page at /ui and the docs at /docs in a real browser (headless Chromium, tests/browser.py)
cut off from every host but this one: a person enrolls, queries, reads the ranked grid and
deletes, with and without API keys; /docs and /ui render from the service alone.

Set ``REID_UI_SCREENSHOT=path.png`` to keep a screenshot of the answer page."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_fixtures import ServiceProcess, encode, person_frames
from video_fixtures import post_video, small_scene, video_files, wait_job

from bench.browser import MISSING, MISSING_REASON, chromium, console_errors, foreign, requested_urls

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(MISSING), reason=MISSING_REASON)]

WRITE_KEY = "ui-write-key-0123456789"
#: Seconds a step may take on a loaded 2-core machine.
TIMEOUT = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with chromium() as driver:
        yield driver


def frame_files(folder: Path, seed: int, count: int = 6) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(person_frames(seed, count)):
        path = folder / f"{i:04d}.png"
        path.write_bytes(encode(frame))
        paths.append(str(path))
    return paths


def zipped(folder: Path, seed: int, count: int = 6) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for i, frame in enumerate(person_frames(seed, count)):
            archive.writestr(f"frame{i + 1}.png", encode(frame))  # 1..6: numeric order
    path = folder / f"tracklet-{seed}.zip"
    path.write_bytes(buffer.getvalue())
    return str(path)


def wait_for(driver: object, condition, timeout: float = TIMEOUT) -> object:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page replaces what it draws (a new answer, a reloaded gallery): an element found
    # a moment ago may be gone, so look again.
    wait = WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException])
    return wait.until(condition)


def shown_error(driver: object) -> str | None:
    box = css(driver, "#message.error")
    return box[0].text if box and box[0].is_displayed() else None


def wait_shown(driver: object, selector: str, text: str = "") -> None:
    """Until ``selector`` shows ``text``; an error message on the page fails at once."""

    def ready(d: object) -> bool:
        error = shown_error(d)
        assert error is None, error
        return any(text in e.text for e in css(d, selector))

    wait_for(driver, ready)


def css(driver: object, selector: str) -> list:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)  # type: ignore[attr-defined]


def fill(driver: object, form: str, values: dict[str, str]) -> None:
    for name, value in values.items():
        (field,) = css(driver, f"{form} [name={name}]")
        field.clear()
        field.send_keys(value)


def submit(driver: object, form: str) -> None:
    css(driver, f"{form} button[type=submit]")[0].click()


def open_view(driver: object, view: str) -> None:
    css(driver, f"nav button[data-view={view}]")[0].click()


def images_loaded(driver: object, selector: str) -> bool:
    return bool(
        driver.execute_script(  # type: ignore[attr-defined]
            "const images = [...document.querySelectorAll(arguments[0])];"
            "return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);",
            selector,
        )
    )


def enroll_on_page(driver: object, identity: str, camera: str, frames: str, zip_: bool) -> None:
    open_view(driver, "enroll")
    fill(driver, "#enroll-form", {"identity": identity, "camera": camera})
    field = "archive" if zip_ else "frames"
    css(driver, f"#enroll-form [name={field}]")[0].send_keys(frames)
    submit(driver, "#enroll-form")
    wait_shown(driver, "#enrolled .done", identity)
    wait_for(driver, lambda d: images_loaded(d, "#enrolled figure img"))
    for name in ("frames", "archive"):  # the next enrolment starts from empty fields
        css(driver, f"#enroll-form [name={name}]")[0].clear()


def query_on_page(driver: object, frames: str, fields: dict[str, str]) -> list:
    open_view(driver, "query")
    css(driver, "#query-form [name=archive]")[0].send_keys(frames)
    fill(driver, "#query-form", fields)
    driver.execute_script("document.querySelector('#answer').replaceChildren()")  # type: ignore[attr-defined]
    submit(driver, "#query-form")
    wait_shown(driver, "#answer .grid")
    wait_for(driver, lambda d: images_loaded(d, "#answer img"))
    return css(driver, "#answer .match")


def test_enroll_query_and_delete_from_the_page(
    service: ServiceProcess, browser: object, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    alice, bob, camera = f"alice-{tag}", f"bob-{tag}", f"gate-{tag}"
    browser.get(f"{service.url}/ui")  # type: ignore[attr-defined]
    enroll_on_page(browser, alice, camera, "\n".join(frame_files(tmp_path / "a", 910)), False)
    enroll_on_page(browser, bob, camera, zipped(tmp_path, 911), True)

    # The query is alice's tracklet again, zipped: the page shows its frames too.
    fields = {"cameras": camera, "expected": alice, "top_k": "5"}
    matches = query_on_page(browser, zipped(tmp_path, 910), fields)
    assert [m.get_attribute("data-identity") for m in matches] == [alice, bob]
    assert "correct" in matches[0].get_attribute("class")
    assert "wrong" in matches[1].get_attribute("class")
    assert len(css(browser, "#answer .query figure img")) == 6
    assert len(css(matches[0], "figure img")) == 3  # its thumbnails
    assert camera in matches[0].text and "distance" in matches[0].text
    if os.environ.get("REID_UI_SCREENSHOT"):
        browser.save_screenshot(os.environ["REID_UI_SCREENSHOT"])  # type: ignore[attr-defined]

    rescored = query_on_page(browser, zipped(tmp_path, 910), {**fields, "rerank": "5"})
    assert rescored[0].get_attribute("data-identity") == alice
    pair = css(rescored[0], ".pair .bars")
    assert len(pair) == 2
    assert len(css(pair[0], ".bar")) == 6  # one bar per query frame
    assert len(css(pair[1], ".bar.marked")) == 3  # its thumbnails' frames

    open_view(browser, "gallery")
    search = css(browser, "#name-search")[0]
    search.send_keys(tag)
    css(browser, "#search-form button")[0].click()
    searched = f"#identities[data-contains='{tag}'] .card"
    wait_for(browser, lambda d: len(css(d, searched)) == 2)
    card = css(browser, f"#identities .card[data-identity='{alice}']")[0]
    assert "1 tracklet(s)" in card.text and camera in card.text
    wait_for(browser, lambda d: images_loaded(d, "#identities img"))
    css(card, "button.danger")[0].click()
    wait_for(browser, lambda d: css(d, "#confirm[open]"))
    assert alice in css(browser, "#confirm-text")[0].text
    css(browser, "#confirm-ok")[0].click()
    wait_for(browser, lambda d: len(css(d, searched)) == 1)
    with httpx.Client(base_url=service.url) as client:
        assert client.get(f"/identities/{alice}").status_code == 404
        assert client.get(f"/identities/{bob}").status_code == 200


def test_the_page_asks_for_the_key_and_sends_it(
    exported_model: Path, browser: object, tmp_path: Path
) -> None:
    env = {"REID_API_KEYS_WRITE": WRITE_KEY}
    with ServiceProcess(exported_model, tmp_path / "data", env) as server:
        browser.get(f"{server.url}/ui")  # type: ignore[attr-defined]
        browser.execute_script("sessionStorage.clear()")  # type: ignore[attr-defined]
        browser.refresh()  # type: ignore[attr-defined]
        enroll_frames = "\n".join(frame_files(tmp_path / "k", 920))
        open_view(browser, "enroll")
        fill(browser, "#enroll-form", {"identity": "keyed"})
        css(browser, "#enroll-form [name=frames]")[0].send_keys(enroll_frames)
        submit(browser, "#enroll-form")
        wait_for(browser, lambda d: "X-API-Key" in (shown_error(d) or ""))

        css(browser, "#api-key")[0].send_keys(WRITE_KEY)
        css(browser, "#key-form button[type=submit]")[0].click()
        submit(browser, "#enroll-form")
        wait_shown(browser, "#enrolled .done", "keyed")
        wait_for(browser, lambda d: images_loaded(d, "#enrolled figure img"))
        with httpx.Client(base_url=server.url) as client:
            listed = client.get("/identities", headers={"X-API-Key": WRITE_KEY}).json()
        assert [item["identity"] for item in listed["items"]] == ["keyed"]


def test_a_video_query_from_the_page(
    service: ServiceProcess, browser: object, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:6]
    scene = small_scene(tmp_path / "cam1.mp4", 1, [1, 2], track_ids=[3, 5])
    names = {"3": f"ann-{tag}", "5": f"ben-{tag}"}
    with httpx.Client(base_url=service.url, timeout=60) as client:
        fields = {"camera": f"lobby-{tag}", "identities": json.dumps(names)}
        enrolled = post_video(client, "enroll", video_files(scene), fields)
        assert wait_job(client, enrolled.json())["status"] == "succeeded"

    browser.get(f"{service.url}/ui")  # type: ignore[attr-defined]
    css(browser, "#query-form [name=video]")[0].send_keys(str(scene.path))
    css(browser, "#query-form [name=tracks]")[0].send_keys(str(scene.path.with_suffix(".txt")))
    fill(browser, "#query-form", {"video_camera": f"hall-{tag}", "cameras": f"lobby-{tag}"})
    submit(browser, "#query-form")
    wait_shown(browser, "#answer .track")
    wait_for(browser, lambda d: images_loaded(d, "#answer img"))
    for track_id, name in names.items():
        (section,) = css(browser, f"#answer .track[data-track='{track_id}']")
        assert f"Track {track_id}" in section.text
        assert css(section, ".match")[0].get_attribute("data-identity") == name
        assert len(css(section, ".match")[0].find_elements("css selector", "img")) == 3


@pytest.mark.parametrize("path", ["/docs", "/ui"])
def test_docs_and_page_render_without_a_network(
    service: ServiceProcess, browser: object, path: str
) -> None:
    requested_urls(browser)  # drop what earlier tests requested
    console_errors(browser)
    browser.get(f"{service.url}{path}")  # type: ignore[attr-defined]
    if path == "/docs":
        wait_for(browser, lambda d: css(d, ".swagger-ui .opblock"))
        title = css(browser, ".swagger-ui .info .title")[0].text
        assert "re-identification" in title
        assert len(css(browser, ".swagger-ui .opblock")) >= 10
    else:
        wait_for(browser, lambda d: "tracklets" in css(d, "#status")[0].text)
        assert css(browser, "#query-form")[0].is_displayed()
    urls = requested_urls(browser)
    assert any(url.startswith(f"{service.url}{path}") for url in urls)
    assert foreign(urls, service.url) == []
    assert console_errors(browser) == []
