"""Rounds, failed rounds, timed rounds and slow ones (over the latency objective) over the
burn-rate rules' windows, kept in memory on the lease holder so that a tick reads nothing
from the store.

Per target, a ring of cumulative counts, one slot per minute, as long as the longest window:
the sums over the last W minutes are two subtractions. Filled from what the recorder flushes
(this replica's rounds), and seeded once per target from the store's day blocks, which also
hold what another replica counted before this one took the lease.
"""

from __future__ import annotations

from array import array
from collections.abc import Mapping
from itertools import accumulate
from operator import sub

from opsbot.objectives.series import (
    BUCKETS,
    GOOD,
    HIST,
    MINUTE,
    MINUTES,
    TOTAL,
    WIDTH,
    Block,
    Counts,
)


class _Ring:
    __slots__ = ("bad", "last", "slow", "timed", "total")

    def __init__(self, size: int, minute: int) -> None:
        self.total = array("q", [0]) * size  # cumulative rounds up to and with each minute
        self.bad = array("q", [0]) * size
        self.timed = array("q", [0]) * size  # rounds with a latency
        self.slow = array("q", [0]) * size  # of those, over the latency objective
        self.last = minute  # the newest minute the ring holds

    def columns(self) -> tuple[array[int], array[int], array[int], array[int]]:
        return self.total, self.bad, self.timed, self.slow


class Windows:
    """``add`` a minute's counts; ``counts(target, seconds, now)`` (availability) and
    ``latency(target, seconds, now)`` (timed rounds, those within the objective as good)
    over the last ``seconds``."""

    def __init__(self, longest: float) -> None:
        self.size = int(longest // MINUTE) + 2
        self._rings: dict[str, _Ring] = {}

    def known(self, target: str) -> bool:
        return target in self._rings

    def seed(
        self, target: str, blocks: Mapping[int, Block], now: float, limit: int = BUCKETS - 1
    ) -> None:
        """Start the target's ring from the store's blocks, up to the current minute
        (``limit``: the latency objective's bucket; rounds in the buckets above are slow)."""
        current = int(now // MINUTE)
        first = current - self.size + 1
        # per minute from ``first``: total, bad, timed, slow
        per_minute: list[list[int]] = [[0] * self.size for _ in range(4)]
        for day, block in blocks.items():
            start = day * MINUTES
            lo, hi = max(first, start) - start, min(current, start + MINUTES - 1) + 1 - start
            if lo >= hi:
                continue
            raw = bytes(block.raw)
            column = [raw[c * MINUTES + lo : c * MINUTES + hi] for c in range(WIDTH)]
            at = start + lo - first
            per_minute[0][at : at + hi - lo] = list(column[TOTAL])
            per_minute[1][at : at + hi - lo] = map(sub, column[TOTAL], column[GOOD])
            per_minute[2][at : at + hi - lo] = map(sum, zip(*column[HIST:], strict=True))
            per_minute[3][at : at + hi - lo] = (
                map(sum, zip(*column[HIST + limit + 1 :], strict=True))
                if limit + 1 < BUCKETS
                else [0] * (hi - lo)
            )
        ring = self._rings[target] = _Ring(self.size, current)
        for cumulative, counts in zip(ring.columns(), per_minute, strict=True):
            for offset, value in enumerate(accumulate(counts)):
                cumulative[(first + offset) % self.size] = value

    def add(
        self, target: str, minute: int, total: int, bad: int, timed: int = 0, slow: int = 0
    ) -> None:
        """Add counts to a minute (the current one, or one a little in the past)."""
        ring = self._rings.get(target)
        if ring is None:
            return  # seeded from the store at its first tick, which holds these counts
        if minute > ring.last:
            self._advance(ring, minute)
        if minute <= ring.last - self.size + 1:
            return  # older than the ring
        size = self.size
        if minute == ring.last:  # the common case, each round: one cell per column
            at = minute % size
            ring.total[at] += total
            ring.bad[at] += bad
            ring.timed[at] += timed
            ring.slow[at] += slow
            return
        for column, value in zip(ring.columns(), (total, bad, timed, slow), strict=True):
            if value:
                for step in range(minute, ring.last + 1):
                    column[step % size] += value

    def counts(self, target: str, seconds: float, now: float) -> Counts:
        """The sums over the minutes of [now - seconds, now), as ``series.span`` counts."""
        total, bad, _, _ = self._sums(target, seconds, now)
        return Counts(total, total - bad)

    def latency(self, target: str, seconds: float, now: float) -> Counts:
        """The timed rounds over [now - seconds, now), those within the objective as good."""
        _, _, timed, slow = self._sums(target, seconds, now)
        return Counts(timed, timed - slow)

    def spoiled(self, target: str, seconds: float, now: float) -> tuple[int, int]:
        """(failed rounds, slow rounds) over the last ``seconds``: with none, no rule over a
        window as long or shorter can fire (the tick's shortcut for a healthy target)."""
        _, bad, _, slow = self._sums(target, seconds, now)
        return bad, slow

    def _sums(self, target: str, seconds: float, now: float) -> list[int]:
        ring = self._rings[target]
        first, last = int((now - seconds) // MINUTE), int(-(-now // MINUTE)) - 1
        if last > ring.last:
            self._advance(ring, last)
        first = max(first, ring.last - self.size + 2)
        size = self.size
        return [c[last % size] - c[(first - 1) % size] for c in ring.columns()]

    def _advance(self, ring: _Ring, minute: int) -> None:
        """Extend the ring to ``minute``: the minutes in between hold no rounds."""
        size = self.size
        if minute - ring.last >= size:
            ring.last = minute - size
        at = ring.last % size
        for column in ring.columns():
            value = column[at]
            for step in range(ring.last + 1, minute + 1):
                column[step % size] = value
        ring.last = minute
