"""Shared pytest setup.

The suite runs against the source tree (``pip install -e .`` is not required), so the repository
root goes first on ``sys.path``. The service's fixtures live in ``tests/service_fixtures.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from service_fixtures import (  # noqa: E402  (needs the path above)
    exported_model,
    service,
    service_client,
)

__all__ = ["exported_model", "service", "service_client"]
