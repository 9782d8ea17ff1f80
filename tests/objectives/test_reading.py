"""Budgets read from the day blocks' edges and the daily sums between them say what all the
blocks say, on SQLite and a real Redis, and a fleet's budgets are read a batch at a time."""

from __future__ import annotations

import tracemalloc

import pytest

from opsbot.config import Settings
from opsbot.objectives import reading, sli
from opsbot.objectives.recording import Recorder, blocks
from opsbot.objectives.series import DAY
from tests.objectives.test_recording import Clock
from tests.state.test_store import OpenStore, open_another

__all__ = ["open_another"]
CHECK = [{"type": "tcp", "host": "127.0.0.1", "port": 1}]
START = 20_000 * DAY


def fleet(count: int) -> Settings:
    return Settings(targets={f"t{n:03d}": {"kind": "command", "checks": CHECK}
                             for n in range(count)})  # fmt: skip


@pytest.mark.parametrize("hour", [0.5, 13.25])  # just after midnight, and mid-afternoon
async def test_a_budget_from_edges_and_daily_sums_is_the_budget_of_all_blocks(
    open_another: OpenStore, hour: float
) -> None:
    config = fleet(2)
    store = open_another()
    clock = Clock(START)
    recorder = Recorder(store, config, clock=clock)
    end = START + 31 * DAY + hour * 3600
    at = START
    while at < end:  # 31 days of a round every 2 minutes; t001 fails one in 97
        for n, name in enumerate(config.targets):
            recorder.observe(name, n == 0 or int(at / 120) % 97 != 0, 0.3, at)
        at += 120
        if at % (6 * 3600) < 120:  # a flush every 6 h, the daily sums with every 4th
            clock.now = at
            await recorder.flush()
    clock.now = end
    await recorder.flush()
    for name in config.targets:
        objective = config.objective(name)
        assert objective is not None
        first, last = sli.days_needed(objective, end)
        every_block = sli.budget(name, objective, await blocks(store, name, first, last), end)
        read = await reading.budget(store, config, name, end)
        assert read == every_block, name
    assert (await reading.budget(store, config, "t001", end)).window.bad > 0  # type: ignore[union-attr]


async def test_a_fleets_budgets_are_read_a_batch_at_a_time(
    open_another: OpenStore,
) -> None:
    """Two hundred targets with 30 days each: /slo's read holds a few batches' blocks, not
    every target's month (17 KB a day decoded: 100 MB for these two hundred)."""
    config = fleet(200)
    store = open_another()
    clock = Clock(START)
    recorder = Recorder(store, config, clock=clock)
    for day in range(31):
        at = START + day * DAY + 3600
        for name in config.targets:
            for minute in range(0, 1440, 240):  # a few rounds a day: the blocks exist
                recorder.observe(name, minute != 240, 0.3, at + minute * 60 - 3600)
        clock.now = at + DAY - 3600
        await recorder.flush(final=True)
    now = START + 31 * DAY
    tracemalloc.start()
    found = await reading.budgets(store, config, now)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(found) == 200
    assert all(b.window.total == 30 * 6 and b.window.bad == 30 for b in found)
    assert peak < 30_000_000, peak  # every block at once would be over 100 MB
