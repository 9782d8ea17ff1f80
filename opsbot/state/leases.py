"""A leader lease between replicas: who polls Telegram, who runs the background rounds.

One replica at a time holds the lease (a store lock with a time to live) and renews it every
``ttl / 4`` seconds; the others try every ``RETRY_SECONDS`` and take over once it expires. It is
*fenced by time*: the holder counts itself leader only until ``ttl - ttl/4`` after the start
of its last successful renewal, so a holder that cannot reach the store (or is paused) stops
polling and stops its background work before the store could hand the lease to anyone else.
A holder that stops cleanly releases the lease, and a standby takes over within a retry.

Why 3 s and 0.25 s (the defaults): a SIGKILLed poller is replaced within ``ttl + retry``, and a
command typed meanwhile must be answered within 5 s; a standby's try is one small script, so
four a second per standby cost Redis nothing noticeable.

``held`` is what callers check; ``watch()`` wakes whoever reacts to a change (the poller).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from opsbot.metrics import Metrics
from opsbot.state.renewal import Renewal, give_back
from opsbot.state.store import STORE_DOWN, Store

log = logging.getLogger(__name__)

RETRY_SECONDS = 0.25  # how often a standby tries to take the lease


def replica_id() -> str:
    """A name unique to this process: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Lease(Renewal):
    def __init__(
        self,
        store: Store,
        name: str,
        owner: str,
        ttl: float,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.name = name
        self.owner = owner
        self.ttl = ttl
        self.renew_every = ttl / 4
        self.metrics = metrics
        self._valid_until = 0.0  # monotonic; leader while now < this
        self._announced = False
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: str | None = None
        self._stopping = False
        self.term = 0  # how many times this replica took the lease

    @property
    def held(self) -> bool:
        return time.monotonic() < self._valid_until

    def watch(self) -> asyncio.Event:
        """An event set at the next change of ``held`` (take it before reading ``held``)."""
        return self._changed

    def start(self) -> None:
        self._start_renewing(f"lease-{self.name}")

    async def stop(self) -> None:
        """Stop renewing and give the lease back, so a standby takes over at once."""
        if not await self._stop_renewing():
            return
        self._publish()
        if self.term:  # ever taken: give it back (only if still ours: release checks the owner)
            failed = f"could not release the {self.name} lease"
            await give_back(self.store.release(self.name, self.owner), log, failed)

    async def _run(self) -> None:
        while not self._stopping:
            started = time.monotonic()
            await self._attempt(started)
            self._publish()
            pause = self.renew_every if self.held else RETRY_SECONDS
            next_try = started + pause
            # Sleep until the next attempt, but wake at the fence to stop in time.
            while (now := time.monotonic()) < next_try and not self._stopping:
                wake = min(next_try, self._valid_until) if self.held else next_try
                await asyncio.sleep(max(wake - now, 0.001))
                self._publish()

    async def _attempt(self, started: float) -> None:
        try:
            async with asyncio.timeout(self.renew_every):
                holder = await self.store.acquire(self.name, self.owner, self.ttl)
        except Exception as exc:  # store unreachable: the fence ends leadership in time
            error = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
            if self._error is None:
                log.warning("%s lease: the store is unreachable (%s); retrying", self.name, error)
            self._error = error
            return
        if self._error is not None:
            log.info("%s lease: the store answers again", self.name)
            self._error = None
        if holder is None:
            self._valid_until = started + self.ttl - self.renew_every
        else:
            self._valid_until = 0.0

    def _publish(self) -> None:
        held = self.held
        if held == self._announced:
            return
        self._announced = held
        if held:
            self.term += 1
            log.info("%s lease taken by %s: this replica leads", self.name, self.owner)
        else:
            log.info("%s lease lost or given up by %s: standing by", self.name, self.owner)
        if self.metrics is not None:
            self.metrics.leader.set(1 if held else 0)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()


def only_when_leading(
    lease: Lease | None, job: Callable[[object], Awaitable[None]], name: str = "job"
) -> Callable[[object], Coroutine[Any, Any, None]]:
    """A job-queue callback that runs on the lease holder only (always, without a lease).

    A store that cannot be reached is an outage, not a bug: one warning when the job starts
    failing that way and one when it works again, rather than a traceback every round.
    """
    failing: list[str] = []

    async def run(context: object) -> None:
        if lease is not None and not lease.held:
            return
        try:
            await job(context)
        except STORE_DOWN as exc:
            if not failing:
                log.warning("%s: the store is unreachable (%s); retrying", name, exc)
            failing[:] = [type(exc).__name__]
            return
        if failing:
            log.info("%s works again", name)
            failing.clear()

    return run
