"""Admission control: what concurrent requests may hold at once, and how long one may take.

Per-request limits (:mod:`service.frames`, :mod:`service.limits`) bound what *one* request can
cost; they do not bound eight of them arriving together. Two budgets are shared by every request
of the process, and each is granted first come, first served:

* **bodies** (``REID_ADMISSION_BODY_BYTES``): request bodies held in memory. A request reserves
  its declared ``Content-Length`` (a chunked upload, which declares none, reserves
  ``REID_MAX_REQUEST_BYTES``) *before* its body is read, and keeps it until it is answered.
* **work** (``REID_ADMISSION_PIXELS``, ``REID_ADMISSION_FRAMES``): frames being decoded,
  preprocessed and embedded. A tracklet reserves the pixels its image headers declare and its
  frame count once those headers have been checked, and before anything is decoded; it keeps
  them until its embedding is done.

A request that cannot be admitted within ``REID_ADMISSION_WAIT_S`` is answered ``503
overloaded`` with ``Retry-After``; nothing has been stored. A sixteenth of each budget more is
kept for small requests (:class:`Budget`), so ordinary requests pass while huge ones wait. A
cost larger than a whole budget is cut to the budget: such a request waits until it can have
the budget to itself, so every request the per-request limits allow can eventually run.

Every request also gets a :class:`Deadline` (``REID_REQUEST_TIMEOUT_S``): the body must arrive
in time (``408 request_timeout``) and the work is checked against it between stages and between
frames (``503 deadline_exceeded``). The check is cooperative and never interrupts a gallery
write: an enrolment past its deadline is refused *before* it is stored, never after.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import error_response
from service.metrics import ServiceMetrics
from service.schemas import ApiError

T = TypeVar("T")


@dataclass(frozen=True)
class Deadline:
    """When a request must be done by (``time.monotonic()``), and the setting behind it."""

    expires: float
    limit_s: float

    @classmethod
    def start(cls, limit_s: float) -> Deadline:
        return cls(time.monotonic() + limit_s, limit_s)

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def error(self, stage: str) -> ApiError:
        return ApiError(
            503,
            "deadline_exceeded",
            f"the request took longer than {self.limit_s:g} s (REID_REQUEST_TIMEOUT_S) {stage}; "
            "nothing was stored: send fewer or smaller frames, split the batch, or retry when "
            "the server is less busy",
            headers={"Retry-After": "5"},
        )

    def check(self, stage: str) -> None:
        """Raise :meth:`error` when the deadline has passed (safe to call from worker threads)."""
        if time.monotonic() > self.expires:
            raise self.error(stage)


def overloaded(what: str, setting: str, wait_s: float) -> ApiError:
    return ApiError(
        503,
        "overloaded",
        f"the server is busy: no room for this request's {what} within {wait_s:g} s ({setting}, "
        "REID_ADMISSION_WAIT_S); nothing was stored: retry after the Retry-After seconds",
        headers={"Retry-After": str(max(1, math.ceil(wait_s)))},
    )


#: The share of each budget set aside for small requests (at most this share each).
SMALL_SHARE = 1 / 16


@dataclass(frozen=True)
class Grant:
    """What a request was given, and from which lane (``main`` or ``small``)."""

    cost: dict[str, int]
    lane: str


class Budget:
    """Capacities (resource -> amount) shared by concurrent requests, granted in arrival order.

    Beside the main capacity, a lane of :data:`SMALL_SHARE` of it serves small requests (each at
    most that share) when the main capacity is taken or others wait for it: an ordinary
    tracklet never queues behind an attacker's huge ones, which wait their turn (and are told to
    retry) instead. At most ``capacity * (1 + SMALL_SHARE)`` is ever held.

    Used from the event loop only, so it needs no lock.
    """

    def __init__(self, capacity: Mapping[str, int]) -> None:
        self.capacity = {"main": dict(capacity)}
        self.capacity["small"] = {
            name: int(amount * SMALL_SHARE) for name, amount in capacity.items()
        }
        self.used = {lane: dict.fromkeys(capacity, 0) for lane in self.capacity}
        self._waiting: deque[tuple[dict[str, int], asyncio.Future[Grant]]] = deque()

    def clamp(self, cost: Mapping[str, int]) -> dict[str, int]:
        """``cost`` cut to the capacity, so that it can always be granted eventually."""
        main = self.capacity["main"]
        return {name: min(max(0, amount), main[name]) for name, amount in cost.items()}

    def _fits(self, cost: Mapping[str, int], lane: str) -> bool:
        used, capacity = self.used[lane], self.capacity[lane]
        return all(used[name] + amount <= capacity[name] for name, amount in cost.items())

    def _take(self, cost: dict[str, int], lane: str) -> Grant:
        for name, amount in cost.items():
            self.used[lane][name] += amount
        return Grant(cost, lane)

    def _grant_now(self, cost: dict[str, int]) -> Grant | None:
        if not self._waiting and self._fits(cost, "main"):
            return self._take(cost, "main")
        if self._fits(cost, "small"):
            return self._take(cost, "small")
        return None

    def _grant_waiting(self) -> None:
        while self._waiting:
            cost, future = self._waiting[0]
            if not future.done():
                if not self._fits(cost, "main"):
                    return
                future.set_result(self._take(cost, "main"))
            self._waiting.popleft()

    async def acquire(self, cost: dict[str, int], timeout: float) -> Grant:
        """Take ``cost`` (already clamped) or raise ``TimeoutError`` after ``timeout`` s."""
        grant = self._grant_now(cost)
        if grant is not None:
            return grant
        future: asyncio.Future[Grant] = asyncio.get_running_loop().create_future()
        self._waiting.append((cost, future))
        try:
            async with asyncio.timeout(timeout):
                return await future
        except BaseException:
            if future.done() and not future.cancelled():
                self.release(future.result())  # granted in the same instant the wait ended
            else:
                future.cancel()
                self._grant_waiting()  # the head of the line may have been this request
            raise

    def release(self, grant: Grant) -> None:
        for name, amount in grant.cost.items():
            self.used[grant.lane][name] -= amount
        self._grant_waiting()


@dataclass(frozen=True)
class Admission:
    """The process's two budgets and how long a request may wait for them."""

    bodies: Budget
    work: Budget
    wait_s: float

    @classmethod
    def create(cls, body_bytes: int, pixels: int, frames: int, wait_s: float) -> Admission:
        return cls(
            Budget({"bytes": body_bytes}), Budget({"pixels": pixels, "frames": frames}), wait_s
        )

    @asynccontextmanager
    async def tracklet(self, pixels: int, frames: int, deadline: Deadline) -> AsyncIterator[None]:
        """Hold room for one tracklet's decoding, preprocessing and embedding; the work inside
        is awaited with :func:`run_to_end`, so the room is held until the work has stopped."""
        cost = self.work.clamp({"pixels": pixels, "frames": frames})
        timeout = min(self.wait_s, deadline.remaining())
        try:
            grant = await self.work.acquire(cost, timeout)
        except TimeoutError:
            if deadline.remaining() <= 0:
                raise deadline.error("while waiting for room to decode its frames") from None
            raise overloaded(
                "frames", "REID_ADMISSION_PIXELS, REID_ADMISSION_FRAMES", self.wait_s
            ) from None
        try:
            yield
        finally:
            self.work.release(grant)


async def run_to_end(work: Awaitable[T]) -> T:
    """Await ``work`` to its end even when this task is cancelled meanwhile, then raise the
    cancellation. Work under a grant runs in a thread or an ONNX call that a cancellation does
    not stop (``anyio.to_thread`` is not shielded from an ``asyncio.TaskGroup`` cancelling a
    failed batch's other tracklets): releasing the grant at the cancellation let the next
    tracklet be admitted beside work still holding its memory (a valid-batch attack reached
    600 MiB over idle, against about 350 for the same work admitted one at a time)."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


class AdmissionMiddleware:
    """Gives every request its deadline and reserves room for its body before it is read."""

    def __init__(
        self,
        app: ASGIApp,
        admission: Admission,
        max_body_bytes: int,
        timeout_s: float,
        metrics: ServiceMetrics,
        streamed_paths: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.admission = admission
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s
        self.metrics = metrics
        # Uploads written to disk as they arrive (videos): no body held in memory to budget,
        # and a gigabyte may take longer than a request's deadline to arrive.
        self.streamed_paths = streamed_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline = Deadline.start(self.timeout_s)
        scope.setdefault("state", {})["deadline"] = deadline
        if scope.get("path") in self.streamed_paths:
            await self.app(scope, receive, send)
            return
        timed_receive = _receive_until(receive, deadline)
        size = _body_size(scope, self.max_body_bytes)
        if size == 0:
            await self.app(scope, timed_receive, send)
            return
        bodies = self.admission.bodies
        cost = bodies.clamp({"bytes": size})
        try:
            grant = await bodies.acquire(cost, min(self.admission.wait_s, deadline.remaining()))
        except TimeoutError:
            error = overloaded("body", "REID_ADMISSION_BODY_BYTES", self.admission.wait_s)
            await self._refuse(scope, receive, send, error)
            return
        try:
            await self.app(scope, timed_receive, send)
        finally:
            bodies.release(grant)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, error: ApiError) -> None:
        self.metrics.errors.labels(error.code).inc()
        response = error_response(error.status, error.code, error.message)
        # The body was never read: the connection cannot carry another request.
        response.headers.update({**(error.headers or {}), "Connection": "close"})
        await response(scope, receive, send)


def _receive_until(receive: Receive, deadline: Deadline) -> Receive:
    """``receive`` that gives up when the deadline passes (a client trickling its body)."""

    async def timed_receive() -> Message:
        try:
            async with asyncio.timeout(deadline.remaining()):
                return await receive()
        except TimeoutError:
            raise ApiError(
                408,
                "request_timeout",
                f"the request body did not arrive within {deadline.limit_s:g} s "
                "(REID_REQUEST_TIMEOUT_S)",
            ) from None

    return timed_receive


def _body_size(scope: Scope, chunked_size: int) -> int:
    """The bytes a request's body will hold: its Content-Length, or ``chunked_size`` for a
    chunked upload (which declares nothing), or 0 without a body."""
    headers = dict(scope.get("headers", ()))
    declared = headers.get(b"content-length")
    if declared is not None:
        try:
            return max(0, int(declared))
        except ValueError:
            return chunked_size
    return chunked_size if b"chunked" in headers.get(b"transfer-encoding", b"").lower() else 0
