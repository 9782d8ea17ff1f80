"""Group ingestion: alert events that arrive together are ingested in one call.

Simple senders post one alert per request. Each request waits for its events to be recorded
(so a 202 still means "recorded"), but the events of every request that arrives while one
ingest call runs go into the next call together, like a database's group commit: the engine's
fixed costs per call (silences, storm state, the events log, delivery) are paid once per
group instead of once per alert. A failed call fails every request of its group (each sender
retries), never some other group.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from opsbot.alerting.event import AlertEvent

Ingest = Callable[[list[AlertEvent]], Awaitable[None]]

MAX_GROUP = 500  # events per call at most: one call stays short, the next group starts soon


class Coalescer:
    """``await coalescer(events)`` returns once ``events`` were ingested (or raises)."""

    def __init__(self, ingest: Ingest, max_group: int = MAX_GROUP) -> None:
        self._ingest = ingest
        self._max_group = max_group
        self._waiting: deque[tuple[Sequence[AlertEvent], asyncio.Future[None]]] = deque()
        self._running: asyncio.Task[None] | None = None

    async def __call__(self, events: Sequence[AlertEvent]) -> None:
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((events, done))
        if self._running is None:
            self._running = asyncio.create_task(self._drain())
        try:
            await asyncio.shield(done)  # a sender hanging up never cancels its group
        except asyncio.CancelledError:
            done.add_done_callback(_retrieve)
            raise

    async def _drain(self) -> None:
        try:
            while self._waiting:
                group: list[tuple[Sequence[AlertEvent], asyncio.Future[None]]] = []
                size = 0
                while self._waiting and (not group or size < self._max_group):
                    events, done = self._waiting.popleft()
                    group.append((events, done))
                    size += len(events)
                try:
                    await self._ingest([e for events, _ in group for e in events])
                except Exception as exc:
                    for _, done in group:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in group:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._running = None


def _retrieve(done: asyncio.Future[None]) -> None:
    """Nobody awaits this outcome any more: mark its exception as seen."""
    if not done.cancelled():
        done.exception()
