"""The HTTP routes, one router per resource (FastAPI's layout): ``tracklets``, ``query``,
``identities`` and ``health`` (liveness, readiness, metrics)."""
