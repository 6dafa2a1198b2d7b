"""Micro-batching: concurrent requests share one ONNX Runtime call.

A single tracklet leaves most of a CPU's (and nearly all of a GPU's) parallelism unused; several
tracklets in one call cost little more than one. With batching on, each tracklet waits at most
``wait_ms`` for others *of the same embedded length* (the network cannot mix lengths in a batch
without padding, which would change attention pooling); the batch runs as soon as it holds
``max_size`` tracklets or ``max_frames`` frames, or when the wait is over. A tracklet that
arrives while no batch is running runs at once (a lone client never waits for company). With
batching off, each tracklet runs alone. Either way the call runs in a thread pool, never on the
event loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from service.encoder import Embedded, Encoder


@dataclass
class _Group:
    """Tracklets of one embedded length waiting for their batch."""

    tracklets: list[np.ndarray] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    futures: list[asyncio.Future[Embedded]] = field(default_factory=list)
    frames: int = 0
    timer: asyncio.TimerHandle | None = None


class MicroBatcher:
    """Collects tracklets from concurrent requests and embeds them in batches."""

    def __init__(
        self,
        encoder: Encoder,
        executor: Executor,
        *,
        enabled: bool = True,
        max_size: int = 32,
        max_frames: int = 4096,
        wait_ms: float = 5.0,
    ) -> None:
        self.encoder = encoder
        self.executor = executor
        self.enabled = enabled
        self.max_size = max_size
        self.max_frames = max_frames
        self.wait_s = wait_ms / 1000.0
        self._groups: dict[int, _Group] = {}
        self._running: set[asyncio.Task[None]] = set()

    async def embed(self, tracklet: np.ndarray, role: str) -> Embedded:
        """Embed one preprocessed tracklet (float32 (T, 5, H, W)) for ``role``."""
        return (await self.embed_many([tracklet], role))[0]

    async def embed_many(self, tracklets: Sequence[np.ndarray], role: str) -> list[Embedded]:
        """Embed several tracklets of one request; they batch with each other and with others."""
        if not self.enabled:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self.executor, self.encoder.embed, list(tracklets), role
            )
        idle = not self._running
        futures = [self._add(x, role) for x in tracklets]
        if idle:
            # Nothing is running: waiting for company would only add latency. Whatever arrives
            # while this batch runs gathers for the next one.
            for length in list(self._groups):
                self._flush(length)
        return list(await asyncio.gather(*futures))

    def _add(self, tracklet: np.ndarray, role: str) -> asyncio.Future[Embedded]:
        loop = asyncio.get_running_loop()
        length = self.encoder.embedded_length(tracklet.shape[0])
        group = self._groups.get(length)
        if group is not None and group.frames + length > self.max_frames:
            self._flush(length)
            group = None
        if group is None:
            group = _Group()
            self._groups[length] = group
            group.timer = loop.call_later(self.wait_s, self._flush, length)
        future: asyncio.Future[Embedded] = loop.create_future()
        group.tracklets.append(tracklet)
        group.roles.append(role)
        group.futures.append(future)
        group.frames += length
        if len(group.tracklets) >= self.max_size or group.frames >= self.max_frames:
            self._flush(length)
        return future

    def _flush(self, length: int) -> None:
        group = self._groups.pop(length, None)
        if group is None:
            return
        if group.timer is not None:
            group.timer.cancel()
        task = asyncio.get_running_loop().create_task(self._run(group))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, group: _Group) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(
                self.executor, self.encoder.embed, group.tracklets, group.roles
            )
        except Exception as exc:
            for future in group.futures:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, result in zip(group.futures, results, strict=True):
            if not future.done():  # a client that went away cancelled its future
                future.set_result(result)

    async def drain(self) -> None:
        """Run whatever is still waiting and wait for every batch in flight (at shutdown)."""
        for length in list(self._groups):
            self._flush(length)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
