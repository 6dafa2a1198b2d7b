"""``reid-serve``: run the service with uvicorn, host and port from the settings.

Every setting comes from ``REID_*`` environment variables (see docs/service.md); ``--host`` and
``--port`` override ``REID_HOST`` and ``REID_PORT`` for convenience.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

import uvicorn

from service.api import create_app
from service.backends import get_backend
from service.settings import Settings


def entry_settings(program: str, **overrides: Any) -> Settings:
    """The settings of an entry point (``reid-serve``, ``uvicorn service.app:app``), with
    logging configured. A gallery backend whose extra is not installed stops the program here
    with one line naming the extra, before anything is loaded."""
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    missing = get_backend(settings.gallery_backend).missing()
    if missing is not None:
        raise SystemExit(f"{program}: error: {missing}")
    return settings


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="reid-serve",
        description="Serve the ASTPN re-identification API. Configure it with REID_* "
        "environment variables (docs/service.md).",
    )
    parser.add_argument("--host", help="interface to listen on (default: REID_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: REID_PORT or 8000)")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = entry_settings("reid-serve", **overrides)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Connections are closed by the server after 413s; keep-alive otherwise as uvicorn does.
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    serve()
