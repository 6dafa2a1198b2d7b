"""The HTTP routes, one router per resource (FastAPI's layout): ``tracklets``, ``query``,
``videos`` (a video and its tracks, and the job that cuts them), ``identities`` and ``health``
(liveness, readiness, metrics)."""
