"""The monitor's rounds, counted per target and minute into the store.

``Recorder.round_done`` is the monitor's hook: it adds the round to a buffer in memory (a few
integer additions, nothing awaited). ``flush`` (every minute, and at shutdown) merges the
buffer into two kinds of document, in one ``commit``:

* ``slo-minutes/<target>/<day>``: the day's ``series.Block`` (per minute: rounds, good rounds,
  latency buckets), compressed; it expires by itself ``window`` plus a day after that day ends,
  so the store holds the window plus a day and no more.
* ``slo-days/<target>``: per day the same counts summed, for the last ``KEEP_DAYS`` days (the
  status page's 90 daily bars and the report's per-day chart).

Each round is counted once across replicas: rounds run only on the lease holder (the monitor's
scheduler), and a flush adds its counts by compare-and-set, so two replicas flushing at once
(the old holder's last minute after a failover) both land, neither twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

from prometheus_client import Counter, Histogram

from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.objectives import clock as objectives_clock
from opsbot.objectives.series import (
    BUCKETS,
    DAY,
    GOOD,
    HIST,
    TOTAL,
    WIDTH,
    Block,
    Counts,
    bucket,
    row_of,
)
from opsbot.reach.checks import TargetHealth
from opsbot.reach.targets import State
from opsbot.state.store import JSONDoc, Store, Versioned, Write

log = logging.getLogger(__name__)

MINUTES_NS = "slo-minutes"
DAYS_NS = "slo-days"
KEEP_DAYS = 92  # daily sums kept: the status page's 90 bars, and today
FLUSH_SECONDS = 60.0  # how often the counts in memory are added to the store
MAX_TRIES = 20  # compare-and-set attempts of one flush

Rows = dict[int, list[int]]  # minute of the day → a row of counts


def minutes_key(target: str, day: int) -> str:
    return f"{target}/{day}"


class Recorder:
    """Counts rounds in memory; ``flush`` writes them to the store."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], float] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock or (lambda: objectives_clock.now())
        self._pending: dict[tuple[str, int], Rows] = {}
        self._metrics = metrics
        self._series: dict[str, tuple[Counter, Counter, Histogram]] = {}

    def round_done(self, target: str, health: TargetHealth, at: float) -> None:
        """The monitor's hook: one round of ``target`` ended (counted at this clock's now,
        which is ``at`` unless a test moves time)."""
        if self.settings.objective(target) is not None:
            good = health.state is not State.FAIL
            self.observe(target, good, health.latency, self.clock())
            if self._metrics is not None:
                self._export(target, good, health.latency)

    def _export(self, target: str, good: bool, latency: float) -> None:
        series = self._series.get(target)
        if series is None:
            m = self._metrics
            assert m is not None
            series = self._series[target] = (
                m.slo_rounds_total.labels(target=target),
                m.slo_rounds_good_total.labels(target=target),
                m.slo_round_seconds.labels(target=target),
            )
        rounds, good_rounds, seconds = series
        rounds.inc()
        if good:
            good_rounds.inc()
        seconds.observe(latency)

    def observe(self, target: str, good: bool, latency: float | None, at: float) -> None:
        day, minute = row_of(at)
        rows = self._pending.setdefault((target, day), {})
        row = rows.get(minute)
        if row is None:
            row = rows[minute] = [0] * WIDTH
        row[TOTAL] += 1
        row[GOOD] += good
        if latency is not None:
            row[HIST + bucket(latency)] += 1

    @property
    def pending(self) -> int:
        """Minutes of some target waiting for the next flush."""
        return sum(len(rows) for rows in self._pending.values())

    async def flush(self) -> None:
        """Add what was counted since the last flush to the store (kept for the next one if
        the store fails)."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await self._write(pending)
        except BaseException:
            for key, rows in pending.items():
                mine = self._pending.setdefault(key, {})
                for minute, row in rows.items():
                    into = mine.setdefault(minute, [0] * WIDTH)
                    for index, value in enumerate(row):
                        into[index] += value
            raise

    async def _write(self, pending: dict[tuple[str, int], Rows]) -> None:
        targets = sorted({target for target, _ in pending})
        keys = [minutes_key(target, day) for target, day in pending]
        for _ in range(MAX_TRIES):
            stored = await self.store.get_many(MINUTES_NS, keys)
            summaries = await self.store.get_many(DAYS_NS, targets)
            now = self.clock()
            minutes = [self._minutes(t, d, rows, stored, now) for (t, d), rows in pending.items()]
            ops = [op for op in minutes if op is not None]
            ops += [self._days(t, pending, summaries, now) for t in targets]
            if await self.store.commit(ops) is not None:
                return
        log.warning("objectives: %d targets' rounds not recorded (the store kept changing)",
                    len(targets))  # fmt: skip

    def _minutes(
        self, target: str, day: int, rows: Rows, stored: dict[str, Versioned], now: float
    ) -> Write | None:
        """The day block with these rows added (None: the day is past keeping)."""
        objective = self.settings.objective(target) or self.settings.objectives.default
        ttl = (day + 1) * DAY + objective.window + DAY - now
        if ttl <= 0:
            return None
        key = minutes_key(target, day)
        before = stored.get(key)
        block = Block.decode(str(before.value["z"])) if before is not None else Block()
        raw = block.raw
        for minute, row in rows.items():
            base = minute * WIDTH
            for index, value in enumerate(row):
                if value:
                    raw[base + index] = min(255, raw[base + index] + value)
        return Write(MINUTES_NS, key, {"z": block.encode()}, expect=_expect(before), ttl=ttl)

    def _days(
        self,
        target: str,
        pending: dict[tuple[str, int], Rows],
        summaries: dict[str, Versioned],
        now: float,
    ) -> Write:
        before = summaries.get(target)
        sums: dict[str, list[int]] = dict(before.value["d"]) if before is not None else {}
        for (name, day), rows in pending.items():
            if name != target:
                continue
            into = list(sums.get(str(day), [0] * WIDTH))
            for row in rows.values():
                for index, value in enumerate(row):
                    into[index] += value
            sums[str(day)] = into
        oldest = int(now // DAY) - KEEP_DAYS
        kept = {day: row for day, row in sums.items() if int(day) > oldest}
        return Write(DAYS_NS, target, {"d": kept}, expect=_expect(before))


def _expect(before: Versioned | None) -> int | Literal["absent"]:
    return before.version if before is not None else "absent"


# --------------------------------------------------------------------------- reading


async def blocks(store: Store, target: str, first_day: int, last_day: int) -> dict[int, Block]:
    """The target's day blocks from ``first_day`` to ``last_day`` (those recorded)."""
    wanted = {minutes_key(target, day): day for day in range(first_day, last_day + 1)}
    found = await store.get_many(MINUTES_NS, list(wanted))
    return {wanted[key]: Block.decode(str(doc.value["z"])) for key, doc in found.items()}


async def daily(store: Store, targets: Sequence[str]) -> dict[str, dict[int, Counts]]:
    """Per target, per UTC day (number since the epoch): the day's counts (recorded days)."""
    found = await store.get_many(DAYS_NS, list(targets))
    return {name: _sums(found[name].value) if name in found else {} for name in targets}


def _sums(doc: JSONDoc) -> dict[int, Counts]:
    out = {}
    for day, row in dict(doc.get("d", {})).items():
        out[int(day)] = Counts(int(row[TOTAL]), int(row[GOOD]), tuple(row[HIST : HIST + BUCKETS]))
    return out


def combined(per_target: Iterable[dict[int, Counts]]) -> dict[int, Counts]:
    """Several targets' days summed (a status page component)."""
    out: dict[int, Counts] = {}
    for days in per_target:
        for day, counts in days.items():
            out[day] = out.get(day, Counts()) + counts
    return out
