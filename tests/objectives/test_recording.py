"""The rounds' counts in the store, on SQLite and a real Redis (one contract): added once per
round whichever replica flushes, kept through a store outage, pruned, and small."""

from __future__ import annotations

import asyncio
import json
import random

import pytest

from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.objectives import recording
from opsbot.objectives.recording import Recorder, blocks, daily
from opsbot.objectives.series import DAY, Counts, span
from opsbot.reach.checks import CheckResult, TargetHealth
from opsbot.reach.targets import State
from opsbot.state.store import Store
from opsbot.state.store.sqlite import SQLiteStore
from tests.state.test_store import PAST_TTL, TTL, OpenStore, open_another

__all__ = ["open_another"]
CHECK = [{"type": "tcp", "host": "127.0.0.1", "port": 1}]
START = 20_000 * DAY  # a UTC midnight (2024-10-04)


def settings(*names: str) -> Settings:
    made = {n: {"kind": "command", "checks": CHECK} for n in names}
    return Settings(targets=made)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_two_replicas_flushing_at_once_each_count_their_rounds_once(
    open_another: OpenStore,
) -> None:
    config = settings("quizbot")
    clock = Clock(START + 3600)
    first = Recorder(open_another(), config, clock=clock)
    second = Recorder(open_another(), config, clock=clock)
    for n in range(30):  # the old lease holder's last rounds, then the new one's
        first.observe("quizbot", n % 10 != 0, 0.07, START + 60 * n)
        second.observe("quizbot", True, 3.0, START + 60 * n + 30)
    await asyncio.gather(first.flush(final=True), second.flush(final=True))
    await first.flush()  # nothing left to add: no round counted twice
    days = await blocks(open_another(), "quizbot", 20_000, 20_000)
    assert span(days, START, START + 1800) == Counts(60, 57, (0, 30, 0, 0, 0, 0, 30, 0, 0, 0))
    assert span(days, START + 60, START + 120) == Counts(2, 2, (0, 1, 0, 0, 0, 0, 1, 0, 0, 0))
    summary = (await daily(open_another(), ["quizbot", "other"]))
    assert summary == {"quizbot": {20_000: span(days, START, START + DAY)}, "other": {}}


async def test_counts_survive_a_failed_flush_and_land_with_the_next(
    open_another: OpenStore,
) -> None:
    store = open_another()
    recorder = Recorder(BrokenOnce(store), settings("quizbot"), clock=Clock(START))
    recorder.observe("quizbot", False, None, START + 5)
    with pytest.raises(ConnectionError):
        await recorder.flush()
    assert recorder.pending == 1
    recorder.observe("quizbot", True, 0.2, START + 10)
    await recorder.flush()
    assert recorder.pending == 0
    days = await blocks(store, "quizbot", 20_000, 20_000)
    assert span(days, START, START + 60) == Counts(2, 1, (0, 0, 1, 0, 0, 0, 0, 0, 0, 0))


async def test_a_day_older_than_the_window_and_a_day_expires(
    open_another: OpenStore,
) -> None:
    store = open_another()
    config = settings("quizbot")
    window = config.objectives.default.window
    # flushed TTL seconds before the day leaves window + 1 day
    clock = Clock(START + DAY + window + DAY - TTL)
    recorder = Recorder(store, config, clock=clock)
    recorder.observe("quizbot", True, 0.01, START + 100)
    await recorder.flush()
    assert await blocks(store, "quizbot", 20_000, 20_000)
    await asyncio.sleep(PAST_TTL)
    assert await blocks(store, "quizbot", 20_000, 20_000) == {}


async def test_daily_sums_keep_the_last_92_days(open_another: OpenStore) -> None:
    store = open_another()
    clock = Clock(START)
    recorder = Recorder(store, settings("quizbot"), clock=clock)
    for day in range(100):
        clock.now = START + day * DAY + 3600
        recorder.observe("quizbot", True, 0.01, clock.now)
        await recorder.flush(final=True)
    kept = (await daily(store, ["quizbot"]))["quizbot"]
    assert sorted(kept) == list(range(20_000 + 99 - 91, 20_000 + 100))


async def test_thirty_days_of_a_flapping_jittery_target_take_under_100_kb(
    open_another: OpenStore,
) -> None:
    store = open_another()
    clock = Clock(START)
    recorder = Recorder(store, settings("quizbot"), clock=clock)
    rng = random.Random(20)
    for half_minute in range(30 * 2880):  # a round every 30 s
        at = START + half_minute * 30
        down = (half_minute // 120) % 50 == 0  # an hour down every 50 hours
        good = not down and rng.random() > 0.01
        recorder.observe("quizbot", good, rng.lognormvariate(-2, 1), at)
        if half_minute % 120 == 119:
            clock.now = at
            await recorder.flush()
    await recorder.flush()
    size = await stored_bytes(store, "quizbot", 20_000, 20_029)
    assert size < 80_000, size  # the aim is 100 KB: a margin for the backends' own overhead
    days = await blocks(store, "quizbot", 20_000, 20_029)
    assert span(days, START, START + 30 * DAY).total == 30 * 2880


async def stored_bytes(store: Store, target: str, first: int, last: int) -> int:
    """The JSON bytes of the target's documents (what either backend stores as its value)."""
    keys = [recording.minutes_key(target, d) for d in range(first, last + 1)]
    docs = [*(await store.get_many(recording.MINUTES_NS, keys)).values()]
    docs += (await store.get_many(recording.DAYS_NS, [target])).values()
    return sum(len(json.dumps(doc.value, separators=(",", ":"))) + 40 for doc in docs)


class BrokenOnce:
    """A store whose ``at``-th commit (the first by default) fails as an unreachable Redis
    would."""

    def __init__(self, inner: Store, at: int = 1) -> None:
        self.inner = inner
        self.commits = 0
        self.at = at

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    async def commit(self, ops: object) -> object:
        self.commits += 1
        if self.commits == self.at:
            raise ConnectionError("store unreachable")
        return await self.inner.commit(ops)  # type: ignore[arg-type]


async def test_a_flush_failing_midway_through_a_fleet_counts_each_round_once(
    open_another: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fleet's flush commits a chunk of targets at a time; the store failing at the second
    chunk: the first chunk's rounds are stored, the rest land with the next flush, none
    twice (nor the daily sums)."""
    monkeypatch.setattr(recording, "CHUNK", 2)
    names = [f"t{n}" for n in range(5)]
    store = open_another()
    recorder = Recorder(BrokenOnce(store, at=2), settings(*names), clock=Clock(START + 600))
    for n, name in enumerate(names):
        for minute in range(n + 1):
            recorder.observe(name, minute % 2 == 0, 0.2, START + 60 * minute + 1)
    with pytest.raises(ConnectionError):
        await recorder.flush(final=True)
    assert recorder.pending == 3 + 4 + 5  # t2, t3, t4: not written yet
    await recorder.flush(final=True)
    assert recorder.pending == 0
    summary = await daily(store, names)
    for n, name in enumerate(names):
        days = await blocks(store, name, 20_000, 20_000)
        rounds = n + 1
        assert span(days, START, START + 600).total == rounds, name
        assert summary[name][20_000].total == rounds, name



async def test_rounds_are_prometheus_metrics_per_target(sqlite_store: SQLiteStore) -> None:
    config = settings("quizbot")
    metrics = Metrics()
    recorder = Recorder(sqlite_store, config, metrics=metrics)
    ok = CheckResult("http /health", State.OK, "HTTP 200", 0.3)
    failed = CheckResult("http /health", State.FAIL, "HTTP 503", 0.02)
    for result in (ok, ok, failed):
        recorder.round_done("quizbot", TargetHealth("quizbot", (result,), result.latency or 0), 0)
    recorder.round_done("unknown", TargetHealth("unknown", (ok,), 0.3), 0)  # no objective
    text = metrics.render().decode()
    assert 'opsbot_slo_rounds_total{target="quizbot"} 3.0' in text
    assert 'opsbot_slo_rounds_good_total{target="quizbot"} 2.0' in text
    assert 'opsbot_slo_round_seconds_bucket{le="0.05",target="quizbot"} 1.0' in text
    assert 'opsbot_slo_round_seconds_bucket{le="0.5",target="quizbot"} 3.0' in text
    assert 'opsbot_slo_round_seconds_count{target="quizbot"} 3.0' in text
    assert "unknown" not in text
    assert recorder.pending == 1  # the three rounds wait for the flush, in one minute


async def test_daily_sums_are_written_every_few_flushes_and_at_the_last(
    open_another: OpenStore,
) -> None:
    store = open_another()
    recorder = Recorder(store, settings("quizbot"), clock=Clock(START))
    for flush in range(1, recording.DAYS_EVERY):
        recorder.observe("quizbot", True, 0.01, START + flush * 60)
        await recorder.flush()
    assert await daily(store, ["quizbot"]) == {"quizbot": {}}  # the day blocks have them
    days = await blocks(store, "quizbot", 20_000, 20_000)
    assert span(days, START, START + DAY).total == recording.DAYS_EVERY - 1
    recorder.observe("quizbot", False, 0.01, START + 3600)
    await recorder.flush()  # the DAYS_EVERY-th
    [counts] = (await daily(store, ["quizbot"]))["quizbot"].values()
    assert (counts.total, counts.good) == (recording.DAYS_EVERY, recording.DAYS_EVERY - 1)
    recorder.observe("quizbot", True, 0.01, START + 3660)
    await recorder.flush(final=True)  # at shutdown
    [counts] = (await daily(store, ["quizbot"]))["quizbot"].values()
    assert counts.total == recording.DAYS_EVERY + 1
