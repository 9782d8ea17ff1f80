"""Rounds, failed rounds, timed rounds and slow ones (over the latency objective) over the
burn-rate rules' windows, kept in memory where the target's rounds run, so that a tick reads
nothing from the store.

Small, because a fleet has thousands of targets: a target with nothing failed or slow over the
longest window holds no counts at all (no rule can fire on it); a troubled one holds a ring of
per-minute counts as long as the fine windows (up to 6 h: 5 min, 30 min, 1 h, 2 h, 6 h) and a
ring of per-hour counts as long as the longest window (1 d, 3 d), about 4 KB. A window longer
than 6 h therefore begins on the hour nearest its exact start (``series.window_begin``: the
blocks' reading does the same), which burn rates, a ratio of rounds, barely notice.

Filled from what the recorder is told (this replica's rounds), and seeded from the store's day
blocks (what another replica counted before this one took the target over) when a target is
first seen and again when a clean one has its first failed or slow round.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping
from operator import sub

from opsbot.objectives.series import (
    BUCKETS,
    FINE,
    GOOD,
    HIST,
    HOUR,
    MINUTE,
    MINUTES,
    TOTAL,
    Block,
    Counts,
    window_begin,
)

PER_HOUR = int(HOUR // MINUTE)
COLUMNS = 4  # rounds, failed, timed, slow
_MINUTE_MAX, _HOUR_MAX = 0xFFFF, 0xFFFFFFFF
#: (minute since the epoch, rounds, failed rounds, timed rounds, slow rounds)
Minute = tuple[int, int, int, int, int]


class _Ring:
    __slots__ = ("hours", "last", "minutes")

    def __init__(self, fine: int, coarse: int, minute: int) -> None:
        # per minute / per hour: rounds, failed rounds, timed rounds, slow rounds
        self.minutes = [array("H", bytes(2 * fine)) for _ in range(COLUMNS)]
        self.hours = [array("I", bytes(4 * coarse)) for _ in range(COLUMNS)]
        self.last = minute  # the newest minute the ring holds


class Windows:
    """``add`` a minute's counts; ``counts(target, seconds, now)`` (availability) and
    ``latency(target, seconds, now)`` (timed rounds, those within the objective as good)
    over the last ``seconds`` (``now``: at or after the last minute added)."""

    def __init__(self, longest: float) -> None:
        self.longest = longest
        self.fine = int(min(longest, FINE) // MINUTE) + 2  # minute slots
        self.coarse = int(-(-longest // HOUR)) + 2 if longest > FINE else 0  # hour slots
        self._rings: dict[str, _Ring] = {}
        self._clean: set[str] = set()  # seeded, nothing failed or slow: no counts held

    def known(self, target: str) -> bool:
        return target in self._rings or target in self._clean

    def holding(self) -> int:
        """Targets whose counts are held (the troubled ones)."""
        return len(self._rings)

    def forget(self, target: str) -> None:
        """Drop a target (another replica runs its rounds now); seeded again if it returns."""
        self._rings.pop(target, None)
        self._clean.discard(target)

    def seed(
        self,
        target: str,
        blocks: Mapping[int, Block],
        now: float,
        limit: int = BUCKETS - 1,
        unflushed: Iterable[Minute] = (),
    ) -> None:
        """Start the target from the store's blocks, up to the current minute, and what the
        recorder counted but has not flushed yet (``limit``: the latency objective's bucket;
        rounds in the buckets above are slow)."""
        current = int(now // MINUTE)
        first = int(window_begin(self.longest, now) // MINUTE)
        above = HIST + limit + 1
        spans = _day_spans(blocks, first, current)
        pending = list(unflushed)
        if not any(_troubled(raw, lo, hi, above) for _, raw, lo, hi in spans) and not any(
            bad or slow for _, _, bad, _, slow in pending
        ):
            self._rings.pop(target, None)
            self._clean.add(target)
            return
        self._clean.discard(target)
        ring = self._rings[target] = _Ring(self.fine, self.coarse, current)
        oldest = current - self.fine + 1
        for start, raw, lo, hi in spans:
            # whole-minute columns for the minutes the minute ring holds
            at = max(lo, oldest - start)
            if at < hi:
                columns = _per_minute(raw, at, hi, above)  # each count at most 10 × 255
                for slots, values in zip(ring.minutes, columns, strict=True):
                    _ring_put(slots, start + at, values, self.fine)
            if self.coarse:
                for hour, sums in _per_hour(raw, lo, hi, above):
                    slot = (start // PER_HOUR + hour) % self.coarse
                    for slots, value in zip(ring.hours, sums, strict=True):
                        slots[slot] = min(_HOUR_MAX, slots[slot] + value)
        for minute, *counts in pending:
            self.add(target, minute, *counts)

    def add(
        self, target: str, minute: int, total: int, bad: int, timed: int = 0, slow: int = 0
    ) -> None:
        """Add counts to a minute (the current one, or one a little in the past)."""
        ring = self._rings.get(target)
        if ring is None:
            if (bad or slow) and target in self._clean:
                self._clean.discard(target)  # troubled now: seeded again at the next tick
            return  # unknown: seeded from the store at its next tick, which holds these counts
        if minute > ring.last:
            self._advance(ring, minute)
        if minute <= ring.last - self.fine:
            return  # older than the minute ring: the hour ring alone cannot take it exactly
        at, hour = minute % self.fine, (minute // PER_HOUR) % self.coarse if self.coarse else 0
        for column, value in enumerate((total, bad, timed, slow)):
            if value:
                slots = ring.minutes[column]
                before = slots[at]
                slots[at] = min(_MINUTE_MAX, before + value)
                if self.coarse:
                    hours = ring.hours[column]
                    hours[hour] = min(_HOUR_MAX, hours[hour] + slots[at] - before)

    def counts(self, target: str, seconds: float, now: float) -> Counts:
        """The sums over the window of the last ``seconds``, as ``series.span`` counts (a
        clean target's are zero: no rule fires on it)."""
        total, bad, _, _ = self._sums(target, seconds, now)
        return Counts(total, total - bad)

    def latency(self, target: str, seconds: float, now: float) -> Counts:
        """The timed rounds of that window, those within the objective as good."""
        _, _, timed, slow = self._sums(target, seconds, now)
        return Counts(timed, timed - slow)

    def spoiled(self, target: str, seconds: float, now: float) -> tuple[int, int]:
        """(failed rounds, slow rounds) over the last ``seconds``: with none, no rule over a
        window as long or shorter can fire (the tick's shortcut for a healthy target)."""
        _, bad, _, slow = self._sums(target, seconds, now)
        return bad, slow

    def settle(self, target: str, now: float) -> None:
        """Drop the counts of a target that has been clean over the longest window."""
        if target in self._rings and self.spoiled(target, self.longest, now) == (0, 0):
            del self._rings[target]
            self._clean.add(target)

    def _sums(self, target: str, seconds: float, now: float) -> list[int]:
        ring = self._rings.get(target)
        if ring is None:
            return [0] * COLUMNS
        first, last = int(window_begin(seconds, now) // MINUTE), int(-(-now // MINUTE)) - 1
        if last > ring.last:
            self._advance(ring, last)
        oldest = ring.last - self.fine + 1
        if seconds <= FINE or not self.coarse:
            return [_ring_sum(s, max(first, oldest), last, self.fine) for s in ring.minutes]
        # whole hours from the window's (hour-aligned) start, then the current hour's minutes
        hour = last // PER_HOUR
        first_hour = max(first // PER_HOUR, ring.last // PER_HOUR - self.coarse + 1)
        return [
            _ring_sum(hours, first_hour, hour - 1, self.coarse)
            + _ring_sum(minutes, max(hour * PER_HOUR, oldest), last, self.fine)
            for hours, minutes in zip(ring.hours, ring.minutes, strict=True)
        ]

    def _advance(self, ring: _Ring, minute: int) -> None:
        """Extend the ring to ``minute``: the minutes (and hours) in between hold no rounds."""
        for step in range(max(ring.last + 1, minute - self.fine + 1), minute + 1):
            for slots in ring.minutes:
                slots[step % self.fine] = 0
        if self.coarse:
            old, new = ring.last // PER_HOUR, minute // PER_HOUR
            for hour in range(max(old + 1, new - self.coarse + 1), new + 1):
                for slots in ring.hours:
                    slots[hour % self.coarse] = 0
        ring.last = minute


def _ring_sum(slots: array[int], first: int, last: int, size: int) -> int:
    """The sum of slots ``first``..``last`` (absolute indices, at most ``size`` of them)."""
    if first > last:
        return 0
    a, b = first % size, last % size
    if a <= b:
        return sum(slots[a : b + 1])
    return sum(slots[a:]) + sum(slots[: b + 1])


def _ring_put(slots: array[int], first: int, values: list[int], size: int) -> None:
    """Set slots ``first``.. (absolute indices, fewer than ``size``) to ``values``."""
    a = first % size
    head = min(len(values), size - a)
    slots[a : a + head] = array(slots.typecode, values[:head])
    if head < len(values):
        slots[: len(values) - head] = array(slots.typecode, values[head:])


def _day_spans(
    blocks: Mapping[int, Block], first: int, current: int
) -> list[tuple[int, bytes, int, int]]:
    """(the day's first minute, its raw block, [lo, hi) of its minutes within the window)."""
    out = []
    for day in sorted(blocks):
        start = day * MINUTES
        lo, hi = max(first, start) - start, min(current, start + MINUTES - 1) + 1 - start
        if lo < hi:
            out.append((start, bytes(blocks[day].raw), lo, hi))
    return out


def _column(raw: bytes, column: int, lo: int, hi: int) -> bytes:
    return raw[column * MINUTES + lo : column * MINUTES + hi]


def _troubled(raw: bytes, lo: int, hi: int, above: int) -> bool:
    """Any failed round, or any round slower than the objective, in minutes [lo, hi) (byte
    comparisons: a fleet's first tick asks this of every target's three days)."""
    if _column(raw, TOTAL, lo, hi) != _column(raw, GOOD, lo, hi):
        return True
    zeros = bytes(hi - lo)
    return any(_column(raw, c, lo, hi) != zeros for c in range(above, HIST + BUCKETS))


def _per_hour(raw: bytes, lo: int, hi: int, above: int) -> list[tuple[int, list[int]]]:
    """Per hour of the day touching minutes [lo, hi): rounds, failed, timed and slow rounds."""
    out = []
    for hour in range(lo // PER_HOUR, (hi - 1) // PER_HOUR + 1):
        a, b = max(lo, hour * PER_HOUR), min(hi, (hour + 1) * PER_HOUR)
        sums = [sum(raw[c * MINUTES + a : c * MINUTES + b]) for c in range(HIST + BUCKETS)]
        timed = sum(sums[HIST:])
        out.append((hour, [sums[TOTAL], sums[TOTAL] - sums[GOOD], timed, sum(sums[above:])]))
    return out


def _per_minute(raw: bytes, lo: int, hi: int, above: int) -> list[list[int]]:
    """Per minute of [lo, hi): rounds, failed, timed and slow rounds."""
    total, good = _column(raw, TOTAL, lo, hi), _column(raw, GOOD, lo, hi)
    hist = [_column(raw, c, lo, hi) for c in range(HIST, HIST + BUCKETS)]
    timed = [sum(m) for m in zip(*hist, strict=True)]
    slow = [sum(m) for m in zip(*hist[above - HIST :], strict=True)] if above < HIST + BUCKETS \
        else [0] * (hi - lo)
    return [list(total), list(map(sub, total, good)), timed, slow]
