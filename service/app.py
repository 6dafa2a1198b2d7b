"""``uvicorn service.app:app``: the service configured from ``REID_*`` environment variables.

Importing this module only reads the settings; the model and the gallery open when the server
starts the app (its lifespan), so a missing model fails the start with a clear message.
"""

from __future__ import annotations

import logging

from service.api import create_app
from service.settings import Settings

settings = Settings()
logging.basicConfig(
    level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
)
app = create_app(settings)
