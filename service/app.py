"""``uvicorn service.app:app``: the service configured from ``REID_*`` environment variables.

Importing this module only reads the settings; the model and the gallery open when the server
starts the app (its lifespan), so a missing model fails the start with a clear message.
"""

from __future__ import annotations

from service.api import create_app
from service.cli import entry_settings

app = create_app(entry_settings("uvicorn service.app:app"))
