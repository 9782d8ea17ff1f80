"""Webhook intake: an alert is answered once stored; delivering it follows, batched.

A webhook sender waits only for ``AlertEngine.record`` (one commit to the store). What
follows a record (posting, editing, the storm digest, incident notes) runs in one background
task over everything recorded since its last pass, so a burst of single-alert posts costs a
few deliveries instead of one each (passes are ``PACE`` apart; the first alert after a quiet
spell goes at once), and none of it sits between a sender and its answer.

Nothing is lost if the process dies in between: the alerts are stored, and the engine's
``tick`` (on whichever replica holds the lease) posts, edits and recovers what is due. Only the
incident notes and the storm digest's counts of those alerts are not made up for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from opsbot.alerting.engine import AlertEngine, Recorded
from opsbot.alerting.event import AlertEvent

log = logging.getLogger(__name__)

Then = Callable[[Sequence[AlertEvent]], Awaitable[None]]

PACE = 0.1  # seconds between delivery passes: what arrives meanwhile is delivered together


class Intake:
    """``await intake(events)`` returns once the events are stored; delivery follows."""

    def __init__(self, engine: AlertEngine, then: Then | None = None) -> None:
        self._engine = engine
        self._then = then
        self._pending: list[Recorded] = []
        self._follow: asyncio.Task[None] | None = None
        self._closed = False

    async def __call__(self, events: Sequence[AlertEvent]) -> None:
        recorded = await self._engine.record(events)
        self._pending.append(recorded)
        if self._follow is None and not self._closed:
            self._follow = asyncio.create_task(self._follow_up(), name="alert-intake")

    async def _follow_up(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                recorded = Recorded.merge(batch)
                try:
                    await self._engine.deliver(recorded)
                except Exception:  # the alerts are stored: tick retries what is due
                    log.exception("alerts: delivery of %d events failed", len(recorded.events))
                if self._then is not None:
                    try:
                        await self._then(recorded.events)
                    except Exception:
                        log.exception("alerts: what follows delivery failed")
                if not self._closed:
                    await asyncio.sleep(PACE)
        finally:
            self._follow = None

    async def close(self) -> None:
        """Finish delivering what was recorded (call after the web server stopped)."""
        self._closed = True
        if self._follow is not None:
            await asyncio.shield(self._follow)
        if self._pending:  # recorded after that pass had finished
            await self._follow_up()
