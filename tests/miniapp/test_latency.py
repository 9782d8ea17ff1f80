"""The board's latency history: one sample a minute per target (the slowest round), a day of
them at most, read back as the sparkline's buckets."""

from __future__ import annotations

from opsbot.miniapp import latency
from opsbot.miniapp.latency import LatencyRecorder
from opsbot.miniapp.snapshot import SPARK_POINTS, spark
from opsbot.reach.checks import TargetHealth
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import Clock


def health(target: str, seconds: float) -> TargetHealth:
    return TargetHealth(target=target, checks=(), latency=seconds)


async def test_one_sample_a_minute_keeps_the_slowest_round(sqlite_store: SQLiteStore) -> None:
    clock = Clock()
    recorder = LatencyRecorder(sqlite_store, clock=clock)
    await recorder.observe(health("quiz", 0.020))  # the first round is kept at once
    for seconds in (0.050, 0.900, 0.030):  # three rounds within the next minute
        clock.advance(15)
        await recorder.observe(health("quiz", seconds))
    clock.advance(20)  # a minute after the first sample: the slowest since is kept
    await recorder.observe(health("quiz", 0.010))
    samples = await latency.last_day(sqlite_store, "quiz", clock())
    assert [ms for _, ms in samples] == [20.0, 900.0]
    assert await latency.last_day(sqlite_store, "other", clock()) == []


async def test_the_history_is_bounded_to_a_day(sqlite_store: SQLiteStore) -> None:
    clock = Clock()
    clock.advance(-2 * 86400)
    recorder = LatencyRecorder(sqlite_store, clock=clock)
    for _ in range(latency.KEEP + 30):  # more than a day of rounds, one a minute
        await recorder.observe(health("quiz", 0.1))
        clock.advance(60)
    entries = await sqlite_store.tail(latency.NAMESPACE, "quiz", 10 * latency.KEEP)
    assert len(entries) == latency.KEEP
    shown = await latency.last_day(sqlite_store, "quiz", clock())
    assert 0 < len(shown) <= latency.KEEP


def test_the_sparkline_has_a_bucket_per_quarter_hour_with_gaps_left_empty() -> None:
    now = 1_000_000.0
    samples = [(now - 86400 + 60, 10.0), (now - 86400 + 120, 30.0), (now - 60, 5.0)]
    points = spark(samples, now)
    assert len(points) == SPARK_POINTS == 96
    assert points[0] == 30.0 and points[-1] == 5.0  # the slowest of each bucket
    assert points[1:-1] == [None] * 94
    assert spark([(now - 2 * 86400, 1.0)], now) == [None] * 96  # older than a day: not shown
