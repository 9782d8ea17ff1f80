"""The live replicas of one store, and which of them owns a piece of shared work.

Each replica writes a liveness document (``members-<group>/<owner>``: when it joined, until
when it counts) every ``ttl / 4`` seconds and reads the others' in the same step. Work is
shared by rendezvous hashing over the *active* replicas: a key belongs to the replica whose
hash of (replica, key) is highest, so a replica that joins or leaves moves only its own share.

Every replica decides from the same documents and the same clock rule, so two never both
count themselves owner of a key (each round runs once):

* A newcomer counts from ``since + ttl/2``: by then every live replica has read its document
  (they read every ``ttl / 4``), and it has read theirs.
* A replica counts itself only until ``ttl - ttl/4`` after the start of its last successful
  write (fenced by time, as ``leases.Lease``); the others count it until ``ttl`` after that
  start. A replica that cannot reach the store, or died, stops before anyone takes its share;
  the share moves at most ``ttl`` after its last write, well within a monitor interval.
* A replica that stops cleanly deletes its document; the others take its share at their
  next read (``ttl / 4``).

Wall-clock times go into the documents, so replicas on different hosts need clocks in sync
to well under ``ttl / 4`` (NTP is enough).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable

from opsbot.state.renewal import Renewal, give_back
from opsbot.state.store import STORE_DOWN, Store

log = logging.getLogger(__name__)


def weight(member: str, key: str) -> int:
    """The rendezvous weight of ``key`` on ``member`` (the same in every process)."""
    digest = hashlib.blake2b(f"{member}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Members(Renewal):
    """This replica's membership of ``group``: ``start()``, then ``owns(key)``; ``stop()``."""

    def __init__(
        self,
        store: Store,
        group: str,
        owner: str,
        ttl: float,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.namespace = f"members-{group}"
        self.owner = owner
        self.ttl = ttl
        self.renew_every = ttl / 4
        self.join_after = ttl / 2
        self._clock = clock
        self._since = 0.0  # wall clock: when this replica first wrote its document
        self._valid_until = 0.0  # monotonic: this replica counts itself while now < this
        self._others: dict[str, tuple[float, float]] = {}  # owner → (since, until), wall clock
        self._active: tuple[str, ...] = ()
        self._owners: dict[str, str | None] = {}  # key → owner, for ``_active``
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._error: str | None = None

    def start(self) -> None:
        self._start_renewing(f"members-{self.namespace}")

    async def stop(self, *, release: bool = True) -> None:
        """Stop counting; delete the document so the others take the share at once.

        ``release=False`` leaves the document to expire, as a replica that crashed does.
        """
        if await self._stop_renewing() and release and self._since:
            failed = f"could not leave {self.namespace}"
            await give_back(self.store.delete(self.namespace, self.owner), log, failed)

    def active(self) -> tuple[str, ...]:
        """The replicas that count now, in a stable order (this one included when it counts)."""
        now = self._clock()
        members = [
            owner
            for owner, (since, until) in self._others.items()
            if since + self.join_after <= now < until
        ]
        if time.monotonic() < self._valid_until and self._since + self.join_after <= now:
            members.append(self.owner)
        active = tuple(sorted(members))
        if active != self._active:
            self._active, self._owners = active, {}
        return active

    def owner_of(self, key: str) -> str | None:
        """The active replica that owns ``key``; None while no replica counts."""
        active = self.active()
        if key in self._owners:
            return self._owners[key]
        owner = max(active, key=lambda m: weight(m, key)) if active else None
        self._owners[key] = owner
        return owner

    def owns(self, key: str) -> bool:
        return self.owner_of(key) == self.owner

    async def _run(self) -> None:
        while not self._stopping:  # not only the cancel: asyncio.timeout may swallow it (3.11)
            started = time.monotonic()
            try:
                await self._beat(started)
            except Exception:  # a bug: said loudly, and the fence ends this share in time
                log.exception("%s: the liveness write failed", self.namespace)
            await asyncio.sleep(max(0.0, started + self.renew_every - time.monotonic()))

    async def _beat(self, started: float) -> None:
        now = self._clock()
        since = self._since or now
        try:
            async with asyncio.timeout(self.renew_every):
                doc = {"since": since, "until": now + self.ttl}
                await self.store.put(self.namespace, self.owner, doc, ttl=self.ttl)
                found = await self.store.scan(self.namespace)
        except (*STORE_DOWN, TimeoutError) as exc:  # the fence ends this share in time
            error = f"{type(exc).__name__}: {exc}"[:200]
            if self._error is None:
                log.warning("%s: the store is unreachable (%s); retrying", self.namespace, error)
            self._error = error
            return
        if self._error is not None:
            log.info("%s: the store answers again", self.namespace)
            self._error = None
        self._since = since
        self._valid_until = started + self.ttl - self.renew_every
        self._others = {
            owner: (float(doc.value.get("since", 0.0)), float(doc.value.get("until", 0.0)))
            for owner, doc in found.items()
            if owner != self.owner
        }
