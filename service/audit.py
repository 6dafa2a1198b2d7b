"""One audit line for every change to the gallery (enrolments and deletions): what changed and
the name of the API key that changed it, never the key itself (:mod:`service.security`).

The lines go to the logger ``reid.audit`` at INFO, in the process's log format, with the
request id; an operator can route that logger elsewhere with ordinary logging configuration.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request

from service.dependencies import key_name
from service.logging_setup import log_fields

log = logging.getLogger("reid.audit")


def audit(request: Request, event: str, **fields: Any) -> None:
    """Record ``event`` (``enroll``, ``delete_tracklet``, ``delete_identity``) with ``fields``."""
    log_fields(log, logging.INFO, event, event=event, key=key_name(request), **fields)
