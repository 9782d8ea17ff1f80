"""The SLI, the budget and every burn-rate threshold at its edges, over 30 simulated days: one
round a minute recorded through the store with an injected clock, then read back."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from opsbot.alerting.event import Severity
from opsbot.config import BurnRule, Objective, Settings
from opsbot.objectives import burn, clock, sli
from opsbot.objectives.alerts import BurnAlerts, fingerprint
from opsbot.objectives.recording import Recorder, blocks
from opsbot.objectives.series import DAY, Block, Counts, bucket
from opsbot.objectives.windows import Windows
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import FiringAlerts

CHECK = [{"type": "tcp", "host": "127.0.0.1", "port": 1}]
START = 20_000 * DAY
END = START + 30 * DAY  # "now": after 30 days of rounds
MINUTES = 30 * 1440
OBJECTIVE = Objective(availability=99.0)  # 1 % of rounds may fail: 432 in 30 days
CONFIG = Settings(targets={"quizbot": {"kind": "command", "checks": CHECK}})


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


async def history(store: SQLiteStore, bad: Iterable[int]) -> dict[int, Block]:
    """30 days of one round a minute; ``bad``: minutes before END whose round failed
    (1 = the last minute)."""
    failed = {MINUTES - m for m in bad}
    clock = Clock()
    recorder = Recorder(store, CONFIG, clock=clock)
    for minute in range(MINUTES):
        at = START + minute * 60 + 1
        recorder.observe("quizbot", minute not in failed, 0.3 if minute % 10 else 3.0, at)
        if minute % 1440 == 1439:
            clock.now = at
            await recorder.flush()
    return await blocks(store, "quizbot", 20_000 - 1, 20_030)


def spread(count: int, within: int, avoiding: int = 0) -> list[int]:
    """``count`` minutes spread over the last ``within``, none in the last ``avoiding``."""
    span = within - avoiding
    return [avoiding + 1 + (i * span) // count for i in range(count)]


async def test_the_verdict_line_over_thirty_days(sqlite_store: SQLiteStore) -> None:
    days = await history(sqlite_store, [*spread(300, MINUTES, avoiding=60), 5, 40])
    budget = sli.budget("quizbot", OBJECTIVE, days, END)
    assert (budget.window.total, budget.window.bad) == (43_200, 302)
    assert sli.verdict(budget) == (
        "quizbot: 99.3 % of 99 %, 30 % of the budget left, burning 3.3× — gone in 3 days at "
        "this rate"
    )
    assert sli.details(budget) == [
        "budget: 130 of 432 min left (30 d, 302 of 43200 rounds failed)",
        "burn rate: 1 h 3.3×, 6 h 1.4×",  # 5 of 360 rounds
        "latency: 90 % of rounds ≤ 2 s (objective 95 %), p95 ≤ 5 s",
    ]


@pytest.mark.parametrize(("bad", "left"), [(431, "0 % of the budget left"), (433, "budget spent")])
async def test_the_budget_at_its_edge(sqlite_store: SQLiteStore, bad: int, left: str) -> None:
    days = await history(sqlite_store, spread(bad, MINUTES, avoiding=60))
    budget = sli.budget("quizbot", OBJECTIVE, days, END)
    assert budget.left is not None and (budget.left > 0) == (bad < 432)
    assert left in sli.verdict(budget)
    assert sli.verdict(budget).endswith("not burning")


async def test_no_rounds_is_said_plainly(sqlite_store: SQLiteStore) -> None:
    budget = sli.budget("quizbot", OBJECTIVE, {}, END)
    assert sli.verdict(budget) == "quizbot: no rounds recorded yet (objective 99 %)"


RULES = list(CONFIG.objectives.burn_rules)


def fired(days: dict[int, Block], rules: list[BurnRule] = RULES) -> dict[str, str]:
    found = burn.firing(rules, OBJECTIVE, burn.over(days, END))
    # the lease holder's in-memory windows, seeded from the same blocks, say the same
    windows = Windows(burn.longest(rules))
    windows.seed("quizbot", days, END)
    assert burn.firing(rules, OBJECTIVE, lambda s: windows.counts("quizbot", s, END)) == found
    return {s: f"{b.rule.factor:g}x {b.rule.long:g}/{b.rule.short:g}" for s, b in found.items()}


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        # 14.4× over 1 h (60 rounds: 8.64 bad) and 5 min
        (spread(8, 60), {}),
        (spread(9, 60), {"page": "14.4x 3600/300"}),
        (spread(9, 60, avoiding=5), {}),  # the short window recovered: resolved
        # 6× over 6 h (21.6 bad) and 30 min, the last hour below 14.4×
        ([*spread(19, 360, avoiding=60), 10, 20], {}),
        ([*spread(20, 360, avoiding=60), 10, 20], {"page": "6x 21600/1800"}),
        ([*spread(20, 360, avoiding=60), 40, 50], {}),  # nothing in the last 30 min
        # 3× over 1 day (43.2 bad) and 2 h, 6 h below 6×
        (spread(39, 1440, avoiding=120) + spread(4, 120), {}),
        (spread(40, 1440, avoiding=120) + spread(4, 120), {"ticket": "3x 86400/7200"}),
        # 1× over 3 days (43.2 bad) and 6 h, 1 day below 3×
        (spread(39, 4320, avoiding=360) + spread(4, 360), {}),
        (spread(40, 4320, avoiding=360) + spread(4, 360), {"ticket": "1x 259200/21600"}),
        (spread(44, 4320, avoiding=360), {}),  # the last 6 h clean
    ],
)
async def test_each_burn_rate_rule_at_its_edge(
    sqlite_store: SQLiteStore, bad: list[int], expected: dict[str, str]
) -> None:
    assert fired(await history(sqlite_store, bad)) == expected


async def test_a_configured_rule_fires_only_above_its_factor(sqlite_store: SQLiteStore) -> None:
    rule = BurnRule(severity="page", long=3600, short=600, factor=10)
    exactly = await history(sqlite_store, spread(6, 60))  # 6 of 60 rounds: exactly 10×
    assert fired(exactly, [rule]) == {}
    assert burn.firing([rule], OBJECTIVE, burn.over(exactly, END)) == {}


async def test_above_a_configured_factor_it_fires(sqlite_store: SQLiteStore) -> None:
    rule = BurnRule(severity="page", long=3600, short=600, factor=10)
    days = await history(sqlite_store, spread(7, 60))
    assert fired(days, [rule]) == {"page": "10x 3600/600"}


async def test_windows_fed_round_by_round_count_as_the_stored_blocks(
    sqlite_store: SQLiteStore,
) -> None:
    """The windows, seeded with one failed round (a clean target holds no counts) and told
    of each round (some late, across midnight), hold the same counts as the blocks the
    recorder stored, asked as time passes."""
    bad = set(spread(50, 4320))
    windows = Windows(burn.longest(RULES))
    begin = END - 3 * DAY - 60
    windows.seed("quizbot", {}, begin, unflushed=[(int(begin // 60), 1, 1, 1, 0)])
    recorder = Recorder(sqlite_store, CONFIG, clock=lambda: END)
    recorder.observe("quizbot", False, 0.1, begin)
    checkpoints = {END - 7200 + 30, END - 90, END - 3 * 3600 - 1800, END}
    said: dict[tuple[float, float], Counts] = {}
    for minute in range(MINUTES - 3 * 1440, MINUTES):
        at = START + minute * 60 + 1
        good = MINUTES - minute not in bad
        recorder.observe("quizbot", good, 0.1, at)
        windows.add("quizbot", int(at // 60), 1, int(not good))
        if minute % 97 == 0:  # a round of the minute before, counted late
            recorder.observe("quizbot", True, 0.1, at - 60)
            windows.add("quizbot", int(at // 60) - 1, 1, 0)
        for moment in [m for m in checkpoints if at <= m < at + 60]:  # asked as time passes
            for seconds in (300, 1800, 3600, 7200, 6 * 3600, DAY, 3 * DAY):
                said[moment, seconds] = windows.counts("quizbot", seconds, moment)
    await recorder.flush()
    days = await blocks(sqlite_store, "quizbot", 20_026, 20_030)
    assert len(said) == len(checkpoints) * 7
    for (moment, seconds), counts in said.items():
        assert counts == burn.over(days, moment)(seconds), (seconds, moment)


# --------------------------------------------------------------------------- latency budget


async def slow_history(store: SQLiteStore, slow: Iterable[int]) -> dict[int, Block]:
    """30 days of one good round a minute, 0.3 s; ``slow``: minutes before END (1 = the
    last) whose round took 3 s, over the objective's 2 s."""
    over = {MINUTES - m for m in slow}
    clock = Clock()
    recorder = Recorder(store, CONFIG, clock=clock)
    for minute in range(MINUTES):
        at = START + minute * 60 + 1
        recorder.observe("quizbot", True, 3.0 if minute in over else 0.3, at)
        if minute % 1440 == 1439:
            clock.now = at
            await recorder.flush()
    return await blocks(store, "quizbot", 20_000 - 1, 20_030)


def fired_latency(days: dict[int, Block]) -> dict[str, str]:
    found = burn.firing(RULES, OBJECTIVE, burn.over_latency(days, END, OBJECTIVE), latency=True)
    windows = Windows(burn.longest(RULES))
    windows.seed("quizbot", days, END, bucket(OBJECTIVE.latency))
    told = burn.firing(
        RULES, OBJECTIVE, lambda s: windows.latency("quizbot", s, END), latency=True
    )
    assert told == found
    assert burn.firing(RULES, OBJECTIVE, burn.over(days, END)) == {}  # every round was good
    return {s: f"{b.rule.factor:g}x {b.rule.long:g}/{b.rule.short:g}" for s, b in found.items()}


@pytest.mark.parametrize(
    ("slow", "expected"),
    [
        # 95 % within 2 s: 5 % may be slow. 14.4× over 1 h: 43.2 of 60; over 5 min: 3.6 of 5
        (spread(43, 60), {}),
        (spread(44, 60), {"page": "14.4x 3600/300"}),
        ([*spread(40, 55, avoiding=5), 1, 2, 3], {}),  # 3 of the last 5: the short one holds
        # 3× over 1 day (216 of 1440) and 2 h (18 of 120), 6 h below 6× and 1 h below 14.4×
        (spread(197, 1440, avoiding=120) + spread(19, 120), {}),
        (spread(198, 1440, avoiding=120) + spread(19, 120), {"ticket": "3x 86400/7200"}),
    ],
)
async def test_each_latency_burn_rule_at_its_edge(
    sqlite_store: SQLiteStore, slow: list[int], expected: dict[str, str]
) -> None:
    assert fired_latency(await slow_history(sqlite_store, slow)) == expected


async def test_a_latency_page_says_how_many_rounds_were_slow_and_resolves(
    sqlite_store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The burn-rate tick over the latency budget: a page in words, then its resolution once
    the last 5 minutes are fast again (the availability budget untouched: no alert)."""
    config = CONFIG
    # 80 % of the last hour over 2 s (4 of the last 5 minutes): 48 of the 2,160 slow rounds
    # 30 days allow
    await slow_history(sqlite_store, spread(48, 60))
    now = [END]
    monkeypatch.setattr(clock, "now", lambda: now[0])
    told = FiringAlerts()
    recorder = Recorder(sqlite_store, config, clock=lambda: now[0])
    alerts = BurnAlerts(sqlite_store, config, told.ingest, told.firing, recorder)
    [page] = await alerts.tick()
    assert (page.status, page.severity, page.labels["check"]) == (
        "firing", Severity.critical, "latency budget (page)",
    )
    assert page.fingerprint == fingerprint("quizbot", "page", "latency")
    assert page.summary == (
        "quizbot latency: 80 % of rounds over 2 s in the last hour, burning 16.0× (1 h) and "
        "16.0× (5 min), over 14.4×; 98 % of the latency budget left, gone in 44 h"
    )
    assert await alerts.tick() == []  # still burning: nothing new
    for minute in range(5):  # five fast rounds: the short window recovers
        recorder.observe("quizbot", True, 0.3, END + minute * 60 + 1)
    now[0] = END + 300
    await recorder.flush()
    [resolved] = await alerts.tick()
    assert (resolved.status, resolved.fingerprint) == ("resolved", page.fingerprint)
    assert resolved.summary == (
        "quizbot latency: no longer burning fast; 98 % of the latency budget left"
    )
