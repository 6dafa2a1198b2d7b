"""``python -m bench.ui_screenshot``: the picture of the answer page in the README
(``docs/ui-answer.png``), made as a person would see it: the shipped model served the way
``reid-serve`` starts it, synthetic persons it never saw in training enrolled from camera 2,
one of them queried from camera 1 through /ui in headless Chromium (:mod:`bench.browser`)."""

from __future__ import annotations

import argparse
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2

from bench.browser import chromium
from bench.report import ROOT
from bench.server import ServiceProcess
from service.client import ReidClient
from service.settings import DEFAULT_MODEL_PATH
from training.synthetic import synthesize_tracklet

FRAMES = 16
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def jpeg(frame) -> bytes:
    ok, buffer = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    assert ok
    return buffer.tobytes()


def enroll_persons(url: str, persons: range) -> None:
    with ReidClient(url) as client:
        for n, person in enumerate(persons):
            start = T0 + timedelta(minutes=7 * n)
            client.enroll(
                [jpeg(f) for f in synthesize_tracklet(person, 2, FRAMES, seed=0)],
                f"person{person}",
                camera="cam2",
                start_time=start,
                end_time=start + timedelta(seconds=FRAMES / 4),
            )


def query_frames(folder: Path, person: int) -> list[str]:
    paths = []
    for i, frame in enumerate(synthesize_tracklet(person, 1, FRAMES, seed=0)):
        path = folder / f"{i:03d}.jpg"
        path.write_bytes(jpeg(frame))
        paths.append(str(path))
    return paths


def screenshot(url: str, frames: list[str], fields: dict[str, str], out: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    loaded = (
        "const images = [...document.querySelectorAll('#answer img')];"
        "return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0);"
    )
    with chromium(width=1280, height=1720) as driver:
        driver.get(f"{url}/ui")
        driver.find_element(By.NAME, "frames").send_keys("\n".join(frames))
        for name, value in fields.items():
            field = driver.find_element(By.CSS_SELECTOR, f"#query-form [name={name}]")
            field.clear()
            field.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, "#query-form button[type=submit]").click()
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(loaded))
        driver.save_screenshot(str(out))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ui_screenshot", description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "ui-answer.png")
    parser.add_argument("--persons", type=int, default=8, help="persons enrolled (from 5001)")
    parser.add_argument("--query", type=int, default=5001, help="the person queried")
    parser.add_argument("--top-k", default="5")
    parser.add_argument("--rerank", default="10", help="candidates re-scored ('0': off)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        with ServiceProcess(DEFAULT_MODEL_PATH, folder / "data", entry="reid-serve") as server:
            enroll_persons(server.url, range(5001, 5001 + args.persons))
            fields = {
                "top_k": args.top_k,
                "rerank": args.rerank,
                "cameras": "cam2",
                "expected": f"person{args.query}",
            }
            screenshot(server.url, query_frames(folder, args.query), fields, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
