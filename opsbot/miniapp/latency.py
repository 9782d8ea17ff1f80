"""Each target's check latency over the last day, for the board's sparklines.

The monitor hands every round's result to ``LatencyRecorder.observe``; at most one sample a
minute per target is appended (the slowest round since the last one), in a list the store keeps
at ``KEEP`` entries, so a day's history is bounded whatever the monitor's interval. One replica
runs the monitor (the lease holder), so samples are not doubled.

Why not the objectives' per-minute blocks (one history of the same rounds): those keep a
histogram of fixed buckets (0.05, 0.1, 0.25 … 30 s), so a sparkline read from them would step
between bucket bounds (a 40 ms and a 90 ms target both drawn at 0.1 s), and they exist only for
targets with an objective. Merging means recording the slowest round's milliseconds per minute
in the block (a column more) and reading the sparkline from it: a change of the block layout,
left for its own step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from opsbot.reach.checks import TargetHealth
from opsbot.state.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "miniapp-latency"
EVERY = 60.0  # seconds between samples of one target
KEEP = 24 * 60  # a day of samples
DAY = 86400.0


@dataclass
class _Pending:
    last: float = 0.0  # when the last sample was appended
    slowest: float = 0.0  # the slowest round (seconds) since


class LatencyRecorder:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._pending: dict[str, _Pending] = {}

    async def observe(self, health: TargetHealth) -> None:
        """One round's result; a store failure loses the sample, never the round."""
        now = self._clock()
        pending = self._pending.setdefault(health.target, _Pending())
        pending.slowest = max(pending.slowest, health.latency)
        if now - pending.last < EVERY:
            return
        sample = {"at": round(now, 1), "ms": round(pending.slowest * 1000, 1)}
        pending.last, pending.slowest = now, 0.0
        try:
            await self._store.append(NAMESPACE, health.target, sample, keep=KEEP)
        except Exception as exc:
            log.warning("latency of %s not recorded: %s", health.target, type(exc).__name__)


async def last_day(store: Store, target: str, now: float) -> list[tuple[float, float]]:
    """(at, milliseconds) samples of the last 24 h, oldest first."""
    entries = await store.tail(NAMESPACE, target, KEEP)
    samples = [
        (float(e["at"]), float(e["ms"]))
        for e in entries
        if isinstance(e, dict) and isinstance(e.get("at"), int | float)
        and isinstance(e.get("ms"), int | float) and e["at"] >= now - DAY
    ]  # fmt: skip
    return sorted(samples)
