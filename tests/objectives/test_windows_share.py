"""The burn-rate windows at fleet size: a clean target holds no counts, a troubled one a few
kilobytes; and each replica keeps the windows of the targets whose rounds it runs, handing a
target over through the store (SQLite and a real Redis) without doubling or losing its alert."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest

from opsbot.config import Settings
from opsbot.objectives import burn, clock
from opsbot.objectives.alerts import BurnAlerts, fingerprint
from opsbot.objectives.recording import Recorder
from opsbot.objectives.series import DAY, HOUR, Block, window_begin
from opsbot.objectives.windows import Windows
from tests.factories import FiringAlerts
from tests.state.test_store import OpenStore, open_another

__all__ = ["open_another"]
CHECK = [{"type": "tcp", "host": "127.0.0.1", "port": 1}]
NOW = 20_030 * DAY + 10 * HOUR + 1
RULES = list(Settings().objectives.burn_rules)


def clean_day() -> Block:
    block = Block()
    for minute in range(1440):
        block.add(minute, True, 0.1)
    return block


def test_a_clean_fleet_holds_no_counts_and_a_troubled_target_a_few_kilobytes() -> None:
    windows = Windows(burn.longest(RULES))
    day = int(NOW // DAY)
    history = {d: clean_day() for d in range(day - 3, day + 1)}
    for n in range(1000):
        windows.seed(f"t{n}", history, NOW)
    assert windows.holding() == 0
    assert all(windows.known(f"t{n}") for n in range(1000))
    minute = int(NOW // 60)
    windows.add("t7", minute, 1, 1, 1, 0)  # a failed round: seeded again at the next tick
    assert not windows.known("t7")
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(100):  # a hundred troubled targets
        windows.seed(f"t{n}", history, NOW, unflushed=[(minute, 1, 1, 1, 0)])
    per_target = (tracemalloc.get_traced_memory()[0] - before) / 100
    tracemalloc.stop()
    assert windows.holding() == 100
    assert per_target < 6_000, per_target  # was 138.8 KB: 4 int64 rings of 4,322 minutes
    for seconds in (300, 3600, DAY, 3 * DAY):  # the one failed round, in every window
        assert windows.spoiled("t7", seconds, NOW + 30) == (1, 0)
    assert windows.counts("t7", 3600, NOW + 30).total == 62  # 60 clean, then its own two
    # three days and a half later, clean all along: its counts are dropped
    later = NOW + 3.5 * DAY
    windows.settle("t7", later)
    assert windows.holding() == 99 and windows.known("t7")
    assert windows.spoiled("t7", 3 * DAY, later) == (0, 0)


def test_a_long_window_begins_on_the_nearest_hour() -> None:
    at = 20_000 * DAY + 10 * HOUR + 20 * 60  # 10:20
    assert window_begin(6 * HOUR, at) == at - 6 * HOUR  # up to 6 h: exact
    assert window_begin(DAY, at) == at - DAY - 20 * 60  # 10:00 the day before
    assert window_begin(DAY, at + 20 * 60) == at - DAY + 40 * 60  # 10:40 → 11:00


async def test_each_replica_rules_over_its_share_and_a_handover_neither_doubles_nor_drops(
    open_another: OpenStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Replica A runs quizbot's rounds, B runs billing's. quizbot fails: A pages, B says
    nothing of it. A stops; B takes quizbot over, seeds its windows from the store, sees the
    page already open (no second one), and resolves it once quizbot recovers."""
    config = Settings(
        targets={name: {"kind": "command", "checks": CHECK} for name in ("quizbot", "billing")},
        objectives={"burn_rules": [{"severity": "page", "long": "1h", "short": "5m",
                                    "factor": 14.4}]},
    )  # fmt: skip
    now = [NOW]
    monkeypatch.setattr(clock, "now", lambda: now[0])
    alerts = FiringAlerts()  # what the alert engine holds firing, shared by the replicas

    def replica(owns: Callable[[str], bool]) -> tuple[Recorder, BurnAlerts]:
        recorder = Recorder(open_another(), config, clock=lambda: now[0])
        return recorder, BurnAlerts(
            open_another(), config, alerts.ingest, alerts.firing, recorder, owns
        )

    share = {"quizbot": "a", "billing": "b"}
    rec_a, alerts_a = replica(lambda t: share[t] == "a")
    rec_b, alerts_b = replica(lambda t: share[t] == "b")
    assert await alerts_a.tick() == [] and await alerts_b.tick() == []  # seeded: clean
    for minute in range(10):  # ten rounds each; quizbot's last six fail
        at = NOW + minute * 60
        rec_a.observe("quizbot", minute < 4, 0.1, at)
        rec_b.observe("billing", True, 0.1, at)
    now[0] = NOW + 600
    [page] = await alerts_a.tick()
    assert (page.target, page.status, page.fingerprint) == (
        "quizbot", "firing", fingerprint("quizbot", "page"),
    )
    assert await alerts_b.tick() == []  # not its target: it neither pages nor resolves it
    await rec_a.flush(final=True)  # A stops (SIGTERM): what it counted is in the store
    await rec_b.flush()
    share["quizbot"] = "b"
    assert await alerts_a.tick() == []  # A's windows let quizbot go
    assert alerts_a.windows.holding() == 0
    assert await alerts_b.tick() == []  # B sees it still burning, already paged: no double
    assert alerts_b.windows.holding() == 1
    for minute in range(10, 16):  # quizbot recovers, its rounds now B's
        rec_b.observe("quizbot", True, 0.1, NOW + minute * 60)
    now[0] = NOW + 960
    [resolved] = await alerts_b.tick()
    assert (resolved.target, resolved.status, resolved.fingerprint) == (
        "quizbot", "resolved", page.fingerprint,
    )
    told = [(e.target, e.status) for e in alerts.seen]
    assert told == [("quizbot", "firing"), ("quizbot", "resolved")]


@pytest.mark.parametrize(("rounds", "paged"), [(9, False), (10, True)])
async def test_a_rule_needs_min_rounds_in_its_long_window(
    open_another: OpenStore, monkeypatch: pytest.MonkeyPatch, rounds: int, paged: bool
) -> None:
    """A fleet's first minutes: every round of a freshly started target slow (cold
    connections). Nine rounds in the last hour page nobody; the tenth is a budget burning
    (objectives.min_rounds, 10 by default)."""
    config = Settings(targets={"quizbot": {"kind": "command", "checks": CHECK}})
    now = [NOW]
    monkeypatch.setattr(clock, "now", lambda: now[0])
    alerts = FiringAlerts()
    recorder = Recorder(open_another(), config, clock=lambda: now[0])
    burn_alerts = BurnAlerts(open_another(), config, alerts.ingest, alerts.firing, recorder)
    assert await burn_alerts.tick() == []  # seeded: nothing yet
    for minute in range(rounds):
        recorder.observe("quizbot", True, 3.0, NOW + minute * 60)  # over the 2 s objective
    now[0] = NOW + rounds * 60
    found = await burn_alerts.tick()
    checks = {e.labels["check"] for e in found}
    assert ("latency budget (page)" in checks) is paged, checks
    assert not paged or fingerprint("quizbot", "page", "latency") in alerts.open
