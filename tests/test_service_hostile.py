"""Issue 18's hostile corpus (bench/hostile.py) as regression tests against the shared server:
every input gets its named 4xx (or a success), never a 5xx, the keep-alive connection survives,
the gallery is unchanged; plus the catch-all and the hang-up classification in process."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from service_fixtures import ServiceProcess, gallery_count
from starlette.requests import ClientDisconnect

from bench.hostile import Hostile, heavy_corpus, malformed_corpus
from service.metrics import ServiceMetrics
from service.request_context import RequestContextMiddleware

MALFORMED = {h.name: h for h in malformed_corpus()}
# The heavy attacks shrunk to the suite's limits (their memory is measured by bench/attack.py
# and the slow test in test_service_attack.py).
HEAVY = {h.name: h for h in heavy_corpus(scale=0.02)}


def _check_answer(response: httpx.Response, hostile: Hostile) -> None:
    assert response.status_code in hostile.statuses, response.text[:500]
    assert response.headers["x-request-id"]
    # The server keeps the connection: only a refused, unread body closes it.
    assert response.headers.get("connection") != "close"
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert len(error["message"]) > 10
        if hostile.code is not None:
            assert error["code"] == hostile.code, error


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_input_is_refused_by_name(service: ServiceProcess, name: str) -> None:
    hostile = MALFORMED[name]
    with service.client() as client:
        before = gallery_count(client)
        response = hostile.send(client)
        _check_answer(response, hostile)
        # The same pooled connection serves the next request.
        assert client.get("/healthz").status_code == 200
        assert gallery_count(client) == before + (response.status_code == 201)


@pytest.mark.parametrize("name", list(HEAVY))
def test_heavy_attacks_are_refused_or_served(service: ServiceProcess, name: str) -> None:
    hostile = HEAVY[name]
    with service.client() as client:
        response = hostile.send(client)
        _check_answer(response, hostile)
        assert client.get("/healthz").status_code == 200


def test_no_internal_error_was_ever_counted(service: ServiceProcess) -> None:
    """Whatever ran before on the shared server (the whole corpus above), nothing was a 500."""
    with service.client() as client:
        for hostile in [*MALFORMED.values(), *HEAVY.values()]:
            hostile.send(client)
        metrics = client.get("/metrics").text
    assert 'reid_errors_total{code="internal_error"}' not in metrics
    assert 'status="500"' not in metrics
    assert "Traceback" not in service.log()


def _broken_app(error: BaseException) -> FastAPI:
    app = FastAPI()

    @app.get("/boom")
    async def boom() -> None:
        raise error

    app.add_middleware(RequestContextMiddleware, metrics=ServiceMetrics())
    return app


def _get(app: FastAPI, headers: dict[str, str]) -> httpx.Response:
    # raise_app_exceptions: an exception reaching the server (which would make uvicorn close
    # the keep-alive connection) fails the test.
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.get("/boom", headers=headers)

    return asyncio.run(call())


def test_an_unexpected_error_is_a_json_500_that_does_not_escape() -> None:
    response = _get(_broken_app(RuntimeError("a bug")), {"X-Request-ID": "abc-123"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert "a bug" not in response.text
    assert response.headers["x-request-id"] == "abc-123"


def test_a_client_hang_up_is_not_an_internal_error() -> None:
    app = _broken_app(ClientDisconnect())
    metrics: ServiceMetrics = app.user_middleware[0].kwargs["metrics"]
    response = _get(app, {"X-Request-ID": "not valid!"})
    assert response.status_code == 499
    assert len(response.headers["x-request-id"]) == 32  # an invalid id is replaced
    counted = metrics.errors.labels("client_disconnected")._value.get()
    assert counted == 1 and metrics.errors.labels("internal_error")._value.get() == 0
