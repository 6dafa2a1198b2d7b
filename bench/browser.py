"""Headless Chromium for the page's tests and its screenshot: Debian's ``chromium`` driven
through its ``chromium-driver`` by Selenium, with every connection to anything but this machine
cut off and every request the page makes recorded (Chrome's performance log), so a test can
prove the page needed nothing from another host.

``.ci/run`` installs the two Debian packages where they are missing; elsewhere the tests skip
with :data:`MISSING_REASON`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
MISSING = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
MISSING_REASON = (
    f"{', '.join(MISSING)} not found: apt-get install -y chromium chromium-driver "
    "(.ci/run does this)"
)

#: Chrome bypasses the proxy for loopback addresses only: a dead proxy for everything else
#: cuts the browser off from any other host (named or by address), as a machine without a
#: network would be.
OFFLINE_FLAGS = [
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]


@contextmanager
def chromium(width: int = 1280, height: int = 1000) -> Iterator[object]:
    """A headless Chromium cut off from the network, recording its requests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium fetch a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]:
        options.add_argument(flag)
    for flag in OFFLINE_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: object) -> list[str]:
    """Every URL the page requested since the last call (Network.requestWillBeSent)."""
    urls = []
    for entry in driver.get_log("performance"):  # type: ignore[attr-defined]
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def foreign(urls: list[str], origin: str) -> list[str]:
    """The URLs that are neither this service's nor the page's own (blob:, data:)."""
    return [u for u in urls if not u.startswith((origin + "/", "blob:", "data:"))]


def console_errors(driver: object) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")  # type: ignore[attr-defined]
        if entry["level"] == "SEVERE"
    ]
