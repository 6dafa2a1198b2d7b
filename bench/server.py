"""The service as deployed, in its own process on 127.0.0.1: the one helper the benchmark and the
test suite (``tests/service_fixtures.py``) start servers with.

The process runs ``uvicorn service.app:app`` (or ``reid-serve``, ``python -m service.cli``) on a
free port, configured only through ``REID_*`` variables: the caller's own ``REID_*`` variables
are dropped, so an API key or gallery backend left in a shell cannot change what is measured or
tested, and neither can a ``.env`` file in the working directory (``REID_ENV_FILE`` is empty).
Its output goes to a log file next to its data directory. Used as a context manager, the
server is always stopped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.gallery import Gallery

ROOT = Path(__file__).resolve().parents[1]

#: How the server is started: the deployment's two entry points.
ENTRY_COMMANDS = {
    "uvicorn": ["-m", "uvicorn", "service.app:app", "--log-level", "warning"],
    "reid-serve": ["-m", "service.cli"],
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_environment(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ``REID_*`` variables, plus ``env``."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("REID_")}
    return {**base, **env}


def open_default_gallery(model_path: Path, data_dir: Path) -> Gallery:
    """The gallery a :class:`ServiceProcess` on ``data_dir`` opens: the service's default
    backend and index, whatever this process's ``REID_*`` variables say (the server never sees
    them). For filling it before the server starts and searching it in-process."""
    from model.card import card_path_for, load_card
    from service.backends import DEFAULT_BACKEND, get_backend, open_gallery
    from service.gallery import ModelSignature

    card = load_card(card_path_for(model_path))
    signature = ModelSignature(str(card["version"]), int(card["embedding_size"]))
    location = get_backend(DEFAULT_BACKEND).default_location(data_dir)
    return open_gallery(DEFAULT_BACKEND, str(location), signature)


class ServiceProcess:
    """One server process. ``env`` adds ``REID_*`` settings to the ones that place it (model,
    data directory, host, port, log level); ``entry`` is ``uvicorn`` or ``reid-serve``."""

    def __init__(
        self,
        model_path: Path,
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        entry: str = "uvicorn",
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = data_dir
        self.log_path = data_dir.parent / f"{data_dir.name}-server-{self.port}.log"
        self.env = server_environment(
            {
                "PYTHONPATH": str(ROOT),
                "REID_MODEL_PATH": str(model_path),
                "REID_DATA_DIR": str(data_dir),
                "REID_HOST": "127.0.0.1",
                "REID_PORT": str(self.port),
                "REID_LOG_LEVEL": "warning",
                "REID_ENV_FILE": "",
                **(env or {}),
            }
        )
        self.command = [sys.executable, *ENTRY_COMMANDS[entry]]
        if entry == "uvicorn":
            self.command += ["--host", "127.0.0.1", "--port", str(self.port)]
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 300.0) -> ServiceProcess:
        """Start the process and wait until ``/readyz`` answers 200."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the service exited with {self.process.returncode} before it was ready:\n"
                    + self.log_tail()
                )
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the service was not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, chars: int = 4000) -> str:
        return self.log()[-chars:]

    def ready(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/readyz", timeout=60) as response:
            return json.loads(response.read())
