"""Rounds and failed rounds over the burn-rate rules' windows, kept in memory on the lease
holder so that a tick reads nothing from the store.

Per target, a ring of cumulative counts, one slot per minute, as long as the longest window:
the sums over the last W minutes are two subtractions. Filled from what the recorder flushes
(this replica's rounds), and seeded once per target from the store's day blocks, which also
hold what another replica counted before this one took the lease.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from itertools import accumulate

from opsbot.objectives.series import GOOD, MINUTE, MINUTES, TOTAL, Block, Counts


class _Ring:
    __slots__ = ("bad", "last", "total")

    def __init__(self, size: int, minute: int) -> None:
        self.total = array("q", [0]) * size  # cumulative rounds up to and with each minute
        self.bad = array("q", [0]) * size
        self.last = minute  # the newest minute the ring holds


class Windows:
    """``add`` a minute's counts; ``counts(target, seconds, now)`` over the last ``seconds``."""

    def __init__(self, longest: float) -> None:
        self.size = int(longest // MINUTE) + 2
        self._rings: dict[str, _Ring] = {}

    def known(self, target: str) -> bool:
        return target in self._rings

    def seed(self, target: str, blocks: Mapping[int, Block], now: float) -> None:
        """Start the target's ring from the store's blocks, up to the current minute."""
        current = int(now // MINUTE)
        first = current - self.size + 1
        totals, bads = [0] * self.size, [0] * self.size  # per minute, from ``first``
        for day, block in blocks.items():
            start = day * MINUTES
            for at in range(max(first, start), min(current, start + MINUTES - 1) + 1):
                total = block.raw[TOTAL * MINUTES + at - start]
                if total:
                    totals[at - first] = total
                    bads[at - first] = total - block.raw[GOOD * MINUTES + at - start]
        ring = self._rings[target] = _Ring(self.size, current)
        for offset, (total, bad) in enumerate(
            zip(accumulate(totals), accumulate(bads), strict=True)
        ):
            ring.total[(first + offset) % self.size] = total
            ring.bad[(first + offset) % self.size] = bad

    def add(self, target: str, minute: int, total: int, bad: int) -> None:
        """Add counts to a minute (the current one, or one a little in the past)."""
        ring = self._rings.get(target)
        if ring is None:
            return  # seeded from the store at its first tick, which holds these counts
        if minute > ring.last:
            self._advance(ring, minute)
        if minute <= ring.last - self.size + 1:
            return  # older than the ring
        self._put(ring, minute, total, bad)

    def counts(self, target: str, seconds: float, now: float) -> Counts:
        """The sums over the minutes of [now - seconds, now), as ``series.span`` counts."""
        ring = self._rings[target]
        first, last = int((now - seconds) // MINUTE), int(-(-now // MINUTE)) - 1
        if last > ring.last:
            self._advance(ring, last)
        first = max(first, ring.last - self.size + 2)
        size = self.size
        total = ring.total[last % size] - ring.total[(first - 1) % size]
        bad = ring.bad[last % size] - ring.bad[(first - 1) % size]
        return Counts(total, total - bad)

    def _advance(self, ring: _Ring, minute: int) -> None:
        """Extend the ring to ``minute``: the minutes in between hold no rounds."""
        size = self.size
        if minute - ring.last >= size:
            ring.last = minute - size
        at = ring.last % size
        total, bad = ring.total[at], ring.bad[at]
        for step in range(ring.last + 1, minute + 1):
            ring.total[step % size] = total
            ring.bad[step % size] = bad
        ring.last = minute

    def _put(self, ring: _Ring, minute: int, total: int, bad: int) -> None:
        size = self.size
        for step in range(minute, ring.last + 1):
            ring.total[step % size] += total
            ring.bad[step % size] += bad
