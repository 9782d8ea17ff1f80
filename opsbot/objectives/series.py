"""A target's rounds per minute, in fixed-size rows: what the SLIs are computed from.

Each UTC day of one target is a block of ``WIDTH`` columns of 1,440 bytes, one per minute:
rounds, good rounds (not failing), then the count of rounds per latency bucket
(``LATENCY_BUCKETS``, then one for slower ones). Counts saturate at 255 (a round a second is
60). Column after column, each alike along the day, so zlib's run-length strategy keeps a
steady target's day in about 60 bytes of base64 and a jittery, flapping one's in about 2 KB
(a 30-day window about 62 KB, under the 100 KB per target the store may take); a fixed layout,
so adding a minute's counts needs no parsing, and a span's sums are contiguous slices.
"""

from __future__ import annotations

import base64
import bisect
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from opsbot.config import LATENCY_BUCKETS

MINUTE = 60.0
HOUR = 3600.0
DAY = 86400.0
#: Windows up to this long count whole minutes; longer ones begin on an hour (``window_begin``).
FINE = 6 * HOUR
MINUTES = 1440
BUCKETS = len(LATENCY_BUCKETS) + 1
WIDTH = 2 + BUCKETS
TOTAL, GOOD, HIST = 0, 1, 2
EMPTY = (0,) * BUCKETS


def bucket(latency: float) -> int:
    """The histogram bucket of a latency: the first bound it does not exceed, else the last."""
    return bisect.bisect_left(LATENCY_BUCKETS, latency)


def window_begin(seconds: float, at: float) -> float:
    """Where the window of the last ``seconds`` before ``at`` begins: ``at - seconds`` up to
    6 h; a longer window (the tickets' 1 d and 3 d) begins on the hour nearest that, so that
    it spans whole hours (a 1 d window 23.5–24.5 h): the in-memory windows keep hours beyond
    6 h (``windows.Windows``), and every reading of a window agrees with them."""
    begin = at - seconds
    if seconds <= FINE:
        return begin
    return (begin // HOUR + (begin % HOUR >= HOUR / 2)) * HOUR


def day_of(at: float) -> int:
    return int(at // DAY)


def row_of(at: float) -> tuple[int, int]:
    """(UTC day, minute of that day) of a moment."""
    minute = int(at // MINUTE)
    return minute // MINUTES, minute % MINUTES


@dataclass(frozen=True, slots=True)
class Counts:
    """Rounds, good rounds and the latency histogram of some span."""

    total: int = 0
    good: int = 0
    hist: tuple[int, ...] = EMPTY

    def __add__(self, other: Counts) -> Counts:
        hist = tuple(a + b for a, b in zip(self.hist, other.hist, strict=True))
        return Counts(self.total + other.total, self.good + other.good, hist)

    @property
    def bad(self) -> int:
        return self.total - self.good

    def fast(self, latency: float) -> int:
        """Rounds that took at most ``latency`` (a bucket bound)."""
        return sum(self.hist[: bucket(latency) + 1])

    def quantile(self, q: float) -> float | None:
        """The bucket bound under which a share ``q`` of the timed rounds fell (None: none;
        inf: beyond the last bound)."""
        timed = sum(self.hist)
        if not timed:
            return None
        seen = 0
        for index, count in enumerate(self.hist):
            seen += count
            if seen >= q * timed:
                return LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else float("inf")
        return float("inf")


class Block:
    """One target's day: 1,440 rows of counts."""

    __slots__ = ("raw",)

    def __init__(self, raw: bytes | bytearray | None = None) -> None:
        self.raw = bytearray(raw) if raw is not None else bytearray(MINUTES * WIDTH)
        if len(self.raw) != MINUTES * WIDTH:
            raise ValueError(f"a day block has {MINUTES * WIDTH} bytes, not {len(self.raw)}")

    def add(self, minute: int, good: bool, latency: float | None) -> None:
        row = [0] * WIDTH
        row[TOTAL] = 1
        row[GOOD] = int(good)
        if latency is not None:
            row[HIST + bucket(latency)] = 1
        self.add_row(minute, row)

    def add_row(self, minute: int, row: list[int]) -> None:
        """Add one minute's counts (a ``WIDTH`` list)."""
        raw = self.raw
        for column, value in enumerate(row):
            if value:
                at = column * MINUTES + minute
                raw[at] = min(255, raw[at] + value)

    def counts(self, first: int = 0, end: int = MINUTES, *, hist: bool = True) -> Counts:
        """The sums over minutes [first, end) of the day (``hist=False``: rounds and good
        rounds only, the histogram left at zero, for burn rates)."""
        first, end = max(0, first), min(MINUTES, end)
        if first >= end:
            return Counts()
        raw = self.raw
        columns = WIDTH if hist else HIST
        column = [sum(raw[c * MINUTES + first : c * MINUTES + end]) for c in range(columns)]
        return Counts(column[TOTAL], column[GOOD], tuple(column[HIST:]) if hist else EMPTY)

    def encode(self) -> str:
        """zlib's run-length strategy: the columns are runs of small counts, where it packs
        a jittery day a quarter smaller than the default's match search, and faster; any
        zlib stream decodes alike, so blocks written before read the same."""
        packer = zlib.compressobj(1, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
        return base64.b64encode(packer.compress(self.raw) + packer.flush()).decode()

    @classmethod
    def decode(cls, text: str) -> Block:
        return cls(zlib.decompress(base64.b64decode(text)))


def span(
    blocks: Mapping[int, Block], begin: float, end: float, *, hist: bool = True
) -> Counts:
    """The sums over the minutes of [begin, end) (whole minutes; missing days count zero)."""
    first, last = int(begin // MINUTE), int(-(-end // MINUTE))
    total, good, histogram = 0, 0, EMPTY
    for day in range(first // MINUTES, (last - 1) // MINUTES + 1):
        block = blocks.get(day)
        if block is not None:
            start = day * MINUTES
            part = block.counts(first - start, last - start, hist=hist)
            total, good = total + part.total, good + part.good
            if hist:
                histogram = tuple(a + b for a, b in zip(histogram, part.hist, strict=True))
    return Counts(total, good, histogram)


def days(blocks: Mapping[int, Block], wanted: Iterable[int]) -> dict[int, Counts]:
    return {day: blocks[day].counts() if day in blocks else Counts() for day in wanted}
