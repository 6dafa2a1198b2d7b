"""``reid-serve``: run the service with uvicorn, host and port from the settings.

Every setting comes from ``REID_*`` environment variables or an optional ``.env`` file (see
``reid-serve --help`` and docs/service.md); ``--host`` and ``--port`` override ``REID_HOST`` and
``REID_PORT`` for convenience.
"""

from __future__ import annotations

import argparse
from typing import Any

import uvicorn

from service.api import SERVICE_VERSION, create_app
from service.backends import get_backend
from service.logging_setup import configure_logging
from service.process_memory import tune_malloc
from service.settings import (
    Settings,
    SettingsInvalid,
    env_file_from_environment,
    load_settings,
    settings_help,
)


def entry_settings(program: str, **overrides: Any) -> Settings:
    """The settings of an entry point (``reid-serve``, ``uvicorn service.app:app``), with
    logging configured. A bad setting, or a gallery backend whose extra is not installed, stops
    the program here with one line naming the variable (or the extra), before anything is
    loaded."""
    try:
        settings = load_settings(env_file_from_environment(), **overrides)
    except SettingsInvalid as exc:
        raise SystemExit("\n".join(f"{program}: error: {line}" for line in exc.lines)) from None
    configure_logging(settings.log_level, settings.log_format)
    if settings.malloc_tuning:
        tune_malloc()
    missing = get_backend(settings.gallery_backend).missing()
    if missing is not None:
        raise SystemExit(f"{program}: error: {missing}")
    return settings


def serve(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="reid-serve",
        description="Serve the ASTPN re-identification API. Configure it with REID_* "
        "environment variables or a .env file (docs/service.md).",
        epilog=settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", help="interface to listen on (default: REID_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: REID_PORT or 8000)")
    parser.add_argument("--version", action="version", version=f"reid-serve {SERVICE_VERSION}")
    args = parser.parse_args(argv)
    overrides = {key: value for key, value in vars(args).items() if value is not None}
    settings = entry_settings("reid-serve", **overrides)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Logging is configured by entry_settings (one format); the access lines are the app's.
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    serve()
