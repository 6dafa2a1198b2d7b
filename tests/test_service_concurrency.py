"""Parallel clients: nothing lost, nothing embedded twice, no server errors."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from service_fixtures import ServiceProcess, b64, encoded_frames, multipart_files

THREADS = 16


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_parallel_enrolls_and_queries_lose_nothing(service: ServiceProcess) -> None:
    camera = f"cam-{uuid.uuid4().hex[:8]}"
    frames = {i: encoded_frames(1000 + i, 4) for i in range(THREADS)}
    with service.client() as client:
        before = client.get("/readyz").json()["gallery"]["count"]
        metrics_before = client.get("/metrics").text

    def work(i: int) -> list[tuple[str, int, str]]:
        results = []
        with service.client() as client:
            for round_ in range(2):
                enrolled = client.post(
                    "/tracklets",
                    data={"identity": f"{camera}-p{i}", "camera": camera},
                    files=multipart_files(frames[i]),
                )
                results.append(("enroll", enrolled.status_code, enrolled.text))
                queried = client.post(
                    "/query",
                    json={"frames": b64(frames[(i + round_) % THREADS]), "cameras": [camera]},
                )
                results.append(("query", queried.status_code, queried.text))
        return results

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = [item for result in pool.map(work, range(THREADS)) for item in result]

    assert not [o for o in outcomes if o[1] >= 500], "server errors under load"
    assert {(kind, status) for kind, status, _ in outcomes} == {("enroll", 201), ("query", 200)}
    with service.client() as client:
        assert client.get("/readyz").json()["gallery"]["count"] == before + 2 * THREADS
        for i in range(THREADS):
            detail = client.get(f"/identities/{camera}-p{i}").json()
            assert len(detail["tracklets"]) == 2
        metrics_after = client.get("/metrics").text
    tracklets = _metric(metrics_after, "reid_batch_size_sum") - _metric(
        metrics_before, "reid_batch_size_sum"
    )
    assert tracklets == 4 * THREADS  # every enrolment and query was embedded exactly once


def test_server_stays_healthy_while_clients_hang_up(service: ServiceProcess) -> None:
    """Clients that give up mid-request (timeouts) must not break the server or the gallery."""
    with service.client() as client:
        before = client.get("/readyz").json()["gallery"]["count"]
    payload = {"frames": b64(encoded_frames(77, 30))}

    def impatient(_: int) -> None:
        try:
            with httpx.Client(base_url=service.url, timeout=0.005) as client:
                client.post("/query", json=payload)
        except httpx.TimeoutException:
            pass

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(impatient, range(8)))
    with service.client() as client:
        assert client.get("/healthz").status_code == 200
        assert client.post("/query", json=payload).status_code == 200
        assert client.get("/readyz").json()["gallery"]["count"] == before
