"""The monitor's rounds, counted per target and minute into the store.

``Recorder.round_done`` is the monitor's hook: it adds the round to a buffer in memory (a few
integer additions, nothing awaited). ``flush`` (every 5 minutes, and at shutdown) merges the
buffer into two kinds of document, in one ``commit`` (the burn-rate alerts need no flush:
their windows are told of each round as it is counted):

* ``slo-minutes/<target>/<day>``: the day's ``series.Block`` (per minute: rounds, good rounds,
  latency buckets), compressed; it expires by itself ``window`` plus a day after that day ends,
  so the store holds the window plus a day and no more.
* ``slo-days/<target>``: per day the same counts summed, for the last ``KEEP_DAYS`` days (the
  status page's 90 daily bars and the report's per-day chart), written every ``DAYS_EVERY``
  flushes and at shutdown (a crash loses at most those minutes of today's bar).

A flush reads only the day blocks this recorder did not write itself (none after the first
flush, for the targets whose rounds run here), ``CHUNK`` targets per commit, and the daily
sums when it writes them; a compare-and-set that fails (another replica wrote) reads afresh.
Each round is counted once across replicas: a target's rounds run on one replica at a time
(the monitor's share), and a flush adds its counts by compare-and-set, so two replicas
flushing at once (a share's old owner's last minutes after a handover) both land, neither
twice. Memory per target: today's and yesterday's compressed blocks, and what is pending.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal

from opsbot.config import Settings
from opsbot.metrics import SLI_BUCKETS, SLI_GOOD, SLI_ROUNDS, SLI_SUM, Metrics
from opsbot.objectives import clock as objectives_clock
from opsbot.objectives.series import (
    BUCKETS,
    DAY,
    GOOD,
    HIST,
    MINUTES,
    TOTAL,
    WIDTH,
    Block,
    Counts,
    bucket,
    row_of,
)
from opsbot.objectives.windows import Windows
from opsbot.reach.checks import TargetHealth
from opsbot.reach.targets import State
from opsbot.state.store import JSONDoc, Store, Versioned, Write

log = logging.getLogger(__name__)

MINUTES_NS = "slo-minutes"
DAYS_NS = "slo-days"
KEEP_DAYS = 92  # daily sums kept: the status page's 90 bars, and today
# How often the counts in memory are added to the store. Each flush re-encodes today's block
# of every target (most of the recording's CPU); a crash loses at most these minutes of
# rounds (0.01 % of a 30-day window), and a replica that does not hold the lease reads them
# this late (the holder's /slo counts them at once).
FLUSH_SECONDS = 300.0
DAYS_EVERY = 4  # flushes between writes of the daily sums (the day blocks have the detail)
MAX_TRIES = 20  # compare-and-set attempts of one flush
CHUNK = 250  # targets per commit of a flush (what a flush holds in memory at once)

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
        self._known: dict[str, Versioned] = {}  # the day blocks the last flushes wrote
        self._days_pending: dict[str, dict[int, list[int]]] = {}  # daily sums not yet written
        self._flushes = 0
        self._limits: dict[str, int | None] = {}  # target → its latency objective's bucket
        # (None: no objective; settings are frozen)
        self.windows: Windows | None = None  # the burn-rate alerts' windows, told of rounds
        self._metrics = metrics

    def round_done(self, target: str, health: TargetHealth, at: float) -> None:
        """The monitor's hook: one round of ``target`` ended (counted at this clock's now,
        which is ``at`` unless a test moves time)."""
        if self.limit(target) is not None:
            good = health.state is not State.FAIL
            self.observe(target, good, health.latency, self.clock())
            if self._metrics is not None:
                self._export(target, good, health.latency)

    def _export(self, target: str, good: bool, latency: float) -> None:
        """Add the round to the /metrics totals (``metrics.SLITotals`` reads them)."""
        assert self._metrics is not None
        totals = self._metrics.slo_totals.get(target)
        if totals is None:
            totals = self._metrics.slo_totals[target] = [0.0] * (SLI_BUCKETS + BUCKETS)
        totals[SLI_ROUNDS] += 1
        totals[SLI_GOOD] += good
        totals[SLI_SUM] += latency
        totals[SLI_BUCKETS + bucket(latency)] += 1

    def limit(self, target: str) -> int | None:
        """The bucket of the target's latency objective (rounds above it are slow; None:
        the target has no objective)."""
        try:
            return self._limits[target]
        except KeyError:
            objective = self.settings.objective(target)
            found = self._limits[target] = None if objective is None else bucket(objective.latency)
            return found

    def observe(self, target: str, good: bool, latency: float | None, at: float) -> None:
        day, minute = row_of(at)
        rows = self._pending.setdefault((target, day), {})
        row = rows.get(minute)
        if row is None:
            row = rows[minute] = [0] * WIDTH
        row[TOTAL] += 1
        row[GOOD] += good
        column = None if latency is None else bucket(latency)
        if column is not None:
            row[HIST + column] += 1
        if self.windows is not None:
            limit = self.limit(target)
            slow = column is not None and limit is not None and column > limit
            self.windows.add(
                target, day * MINUTES + minute, 1, int(not good), int(column is not None), slow
            )

    def unflushed(
        self, target: str, days: Iterable[int] | None = None
    ) -> Iterator[tuple[int, int, int, int, int]]:
        """(minute since the epoch, rounds, failed rounds, timed rounds, slow rounds) counted
        but not yet flushed (``days``: of those UTC days only, looked up, not searched for)."""
        limit = self.limit(target)
        above = HIST + BUCKETS if limit is None else HIST + limit + 1
        if days is None:
            found = [(day, rows) for (name, day), rows in self._pending.items() if name == target]
        else:
            found = [(day, self._pending[target, day]) for day in days
                     if (target, day) in self._pending]  # fmt: skip
        for day, rows in found:
            for minute, row in rows.items():
                yield (day * MINUTES + minute, row[TOTAL], row[TOTAL] - row[GOOD],
                       sum(row[HIST:]), sum(row[above:]))  # fmt: skip

    @property
    def pending(self) -> int:
        """Minutes of some target waiting for the next flush."""
        return sum(len(rows) for rows in self._pending.values())

    async def flush(self, *, final: bool = False) -> None:
        """Add what was counted since the last flush to the store (kept for the next one if
        the store fails); the daily sums every ``DAYS_EVERY`` flushes, and when ``final``."""
        pending, self._pending = self._pending, {}
        self._flushes += 1
        days = final or self._flushes % DAYS_EVERY == 0
        if not pending and not (days and self._days_pending):
            return
        try:
            await self._write(pending, days=days)
        except BaseException:  # what was not written yet is counted again, for the next flush
            for key, rows in pending.items():
                mine = self._pending.setdefault(key, {})
                for minute, row in rows.items():
                    into = mine.setdefault(minute, [0] * WIDTH)
                    for index, value in enumerate(row):
                        into[index] += value
            raise

    async def _write(self, pending: dict[tuple[str, int], Rows], *, days: bool) -> None:
        """Write ``pending`` (emptied as it is written) ``CHUNK`` targets at a time: at a
        fleet's size one commit of every target would hold all their day blocks at once."""
        by_target: dict[str, list[tuple[str, int]]] = {}
        for key in pending:
            by_target.setdefault(key[0], []).append(key)
        names = sorted(set(by_target) | (set(self._days_pending) if days else set()))
        for at in range(0, len(names), CHUNK):
            chunk = names[at : at + CHUNK]
            rows = {key: pending[key] for t in chunk for key in by_target.get(t, ())}
            await self._write_chunk(chunk, rows, days=days)
            for key in rows:
                del pending[key]
            await asyncio.sleep(0)  # a chunk is ~60 ms of encoding: the chats go in between

    async def _write_chunk(
        self, chunk: Sequence[str], pending: dict[tuple[str, int], Rows], *, days: bool
    ) -> None:
        sums = {t: {d: list(row) for d, row in self._days_pending.get(t, {}).items()}
                for t in chunk}  # fmt: skip
        for (target, day), rows in pending.items():
            into = sums[target].setdefault(day, [0] * WIDTH)
            for row in rows.values():
                for index, value in enumerate(row):
                    into[index] += value
        targets = [t for t in chunk if sums[t]] if days else []
        keys = [minutes_key(target, day) for target, day in pending]
        for _ in range(MAX_TRIES):
            stored = await self._read(keys)
            summaries = await self.store.get_many(DAYS_NS, targets) if targets else {}
            now = self.clock()
            minutes = [self._minutes(t, d, rows, stored, now) for (t, d), rows in pending.items()]
            ops = [op for op in minutes if op is not None]
            ops += [self._days(t, sums[t], summaries, now) for t in targets]
            versions = await self.store.commit(ops) if ops else []
            if versions is not None:
                self._remember(ops, versions, int(now // DAY) - 1)
                for target in chunk:
                    if days or not sums[target]:
                        self._days_pending.pop(target, None)
                    else:
                        self._days_pending[target] = sums[target]
                return
            for key in keys:  # another writer (a replica's last flush): read afresh
                self._known.pop(key, None)
        log.warning("objectives: %d targets' rounds not recorded (the store kept changing)",
                    len(chunk))  # fmt: skip

    async def _read(self, keys: Sequence[str]) -> dict[str, Versioned]:
        """The day blocks as this recorder last wrote them, the others read from the store
        (one round trip, and none for a target whose blocks only this replica writes)."""
        found = {k: self._known[k] for k in keys if k in self._known}
        missing = [k for k in keys if k not in found]
        if missing:
            found.update(await self.store.get_many(MINUTES_NS, missing))
        return found

    def _remember(self, ops: Sequence[Write], versions: Sequence[int], oldest: int) -> None:
        """Keep the blocks written (compressed, a few hundred bytes each), today's and
        yesterday's only: the next flush reads none of them."""
        for op, version in zip(ops, versions, strict=True):
            if op.namespace == MINUTES_NS and int(op.key.rpartition("/")[2]) >= oldest:
                self._known[op.key] = Versioned(op.value, version)
        for key in [k for k in self._known if int(k.rpartition("/")[2]) < oldest]:
            del self._known[key]

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
        block = Block() if before is None else Block.decode(str(before.value["z"]))
        for minute, row in rows.items():
            block.add_row(minute, row)
        return Write(MINUTES_NS, key, {"z": block.encode()}, expect=_expect(before), ttl=ttl)

    def _days(
        self, target: str, sums: dict[int, list[int]], summaries: dict[str, Versioned], now: float
    ) -> Write:
        before = summaries.get(target)
        kept: dict[str, list[int]] = dict(before.value["d"]) if before is not None else {}
        for day, row in sums.items():
            into = kept.get(str(day), [0] * WIDTH)
            kept[str(day)] = [a + b for a, b in zip(into, row, strict=True)]
        oldest = int(now // DAY) - KEEP_DAYS
        kept = {day: row for day, row in kept.items() if int(day) > oldest}
        return Write(DAYS_NS, target, {"d": kept}, expect=_expect(before))


def _expect(before: Versioned | None) -> int | Literal["absent"]:
    return before.version if before is not None else "absent"


# --------------------------------------------------------------------------- reading


async def blocks(store: Store, target: str, first_day: int, last_day: int) -> dict[int, Block]:
    """The target's day blocks from ``first_day`` to ``last_day`` (those recorded)."""
    return await blocks_on(store, target, range(first_day, last_day + 1))


async def blocks_on(store: Store, target: str, days: Iterable[int]) -> dict[int, Block]:
    """The target's day blocks of those days (those recorded)."""
    wanted = {minutes_key(target, day): day for day in days}
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
