"""One short liveness lease per replica; the longer leases and claims point at their owner.

Why: a chat's delivery lease (``outbox-chat:<chat>``, 30 s) and an entry's claim (60 s) must
outlast a slow pass or a slow Bot API call, yet a replica that is SIGKILLed mid-pass left the
chat it was sending to blocked for that long. Each replica now keeps a document of its own
(``replicas/<owner>``) with a ``TTL`` of a few seconds, renewed every ``TTL / 4``; a lease or
claim whose owner has no such document is a dead replica's, and is taken over at once. So a
dead owner's leases are reclaimed within ``TTL``, whatever their own length.

Fenced by time, as the leader lease is (:mod:`opsbot.state.leases`): the replica counts
itself alive only until ``TTL - TTL/4`` after the start of its last successful renewal. A
zombie (paused, cut off from the store) stops calling the Bot API before anyone could see
its document lapse; when it wakes, ``held`` is false and its claims are given back unsent.
Each lapse ends an ``epoch``: a claim is acted on only in the epoch it was made in, so a zombie
whose heartbeat resumes does not go on with a call that another replica already took over.
"""

from __future__ import annotations

import asyncio
import logging
import time

from opsbot.state.renewal import Renewal, give_back
from opsbot.state.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "replicas"
TTL = 3.0  # a dead replica's leases are taken over this long after its last renewal


class Liveness(Renewal):
    """This replica's heartbeat document, and the question "is that owner alive?"."""

    def __init__(self, store: Store, owner: str, ttl: float = TTL) -> None:
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self.renew_every = ttl / 4
        self._valid_until = 0.0  # monotonic; alive while now < this
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._failing = False
        self.epoch = 0  # how many times this replica became alive (after start or a lapse)

    @property
    def held(self) -> bool:
        """Whether this replica may still act on its leases and claims (the fence)."""
        return time.monotonic() < self._valid_until

    def holds(self, epoch: int) -> bool:
        """Whether a claim made in ``epoch`` may still be acted on."""
        return self.held and self.epoch == epoch

    def start(self) -> None:
        self._start_renewing(f"liveness-{self.owner}")

    async def stop(self) -> None:
        """Stop renewing and remove the document: this replica's leases are free at once."""
        if await self._stop_renewing():
            failed = f"could not remove the liveness of {self.owner}"
            await give_back(self.store.delete(NAMESPACE, self.owner), log, failed)

    async def beat(self) -> bool:
        """Renew once; True when the store took it."""
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.renew_every):
                await self.store.put(NAMESPACE, self.owner, {"at": time.time()}, ttl=self.ttl)
        except Exception as exc:  # the fence ends this replica's claims in time
            if not self._failing:
                log.warning("liveness of %s: the store is unreachable (%s)", self.owner, exc)
            self._failing = True
            return False
        if self._failing:
            log.info("liveness of %s: the store answers again", self.owner)
        self._failing = False
        if not self.held:
            self.epoch += 1
        self._valid_until = started + self.ttl - self.renew_every
        return True

    async def _run(self) -> None:
        while not self._stopping:  # not only the cancel: asyncio.timeout may swallow it (3.11)
            started = time.monotonic()
            await self.beat()
            await asyncio.sleep(max(started + self.renew_every - time.monotonic(), 0.01))

    async def alive(self, owner: str) -> bool:
        """Whether ``owner``'s liveness lease is current (this replica: its own fence)."""
        if owner == self.owner:
            return self.held
        return await self.store.get(NAMESPACE, owner) is not None
