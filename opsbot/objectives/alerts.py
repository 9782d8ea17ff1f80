"""Burn-rate alerts: a budget burning too fast becomes an alert of the alert engine.

Every ``TICK_SECONDS`` on each replica, for the targets whose rounds it runs (``owns``: the
monitor's share; all of them on a lone replica), each target's rules are evaluated
(``burn.firing``) on its availability budget and on its latency budget (rounds over the
objective's latency are bad) over the windows kept in memory (``windows.Windows``: seeded
from the store and the recorder's unflushed counts, then told of every round), so a tick
reads the store only for a target first seen, newly troubled, or whose alert changes. A
page is a critical alert, a ticket a warning, one per target, budget and severity
(fingerprint: ``slo``, target, severity; ``slo``, target, ``latency``, severity), so the
engine dedups, silences, paces and buttons them like any other alert. What the engine
still holds firing is read at each tick: a replica taking the lease over, or a restarted
opsbot, resolves what another raised. Only changes are sent: a firing rule once
when it starts, its resolution once its short window recovers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Settings
from opsbot.objectives import burn, clock, sli
from opsbot.objectives.reading import spans
from opsbot.objectives.recording import Recorder, blocks
from opsbot.objectives.series import DAY, bucket, window_begin
from opsbot.objectives.windows import Windows
from opsbot.state.store import Store

log = logging.getLogger(__name__)

SOURCE = "slo"
TICK_SECONDS = 60.0
#: Targets seeded between two yields to the event loop (a first tick may seed thousands).
SEED_BATCH = 50
SEVERITY = {"page": Severity.critical, "ticket": Severity.warning}

Ingest = Callable[[Sequence[AlertEvent]], Awaitable[None]]
Firing = Callable[[], Awaitable[set[str]]]  # fingerprints of this source the engine holds open


BUDGETS = ("availability", "latency")


def fingerprint(target: str, severity: str, budget: str = "availability") -> str:
    """One alert per target, budget and severity (availability's as it always was)."""
    if budget == "availability":
        return AlertEvent.make_fingerprint(SOURCE, target, severity)
    return AlertEvent.make_fingerprint(SOURCE, target, budget, severity)


def firing_text(target: str, found: burn.Burning, budget: sli.Budget) -> str:
    """"quizbot: error budget burning 20.0× (1 h) and 100× (5 min), over 14.4×; 62 % left,
    gone in 3 h" (the alert's card says since when)."""
    rule = found.rule
    left = budget.left
    said = "no budget left" if left is None or left <= 0 else f"{left * 100:.0f} % left"
    gone = budget.gone_in
    if gone is not None:
        said += f", gone in {sli.duration(gone)}"
    return (
        f"{target}: error budget burning {sli.times(found.long_rate)} "
        f"({sli.span_name(rule.long)}) and {sli.times(found.short_rate)} "
        f"({sli.span_name(rule.short)}), over {sli.times(rule.factor)}; {said}"
    )


def resolved_text(target: str, budget: sli.Budget) -> str:
    left = budget.left
    said = "no budget left" if left is None or left <= 0 else f"{left * 100:.0f} % left"
    return f"{target}: error budget no longer burning fast; {said}"


def latency_firing_text(target: str, found: burn.Burning, budget: sli.Budget) -> str:
    """"quizbot latency: 12 % of rounds over 2 s in the last hour, burning 2.4× (1 h) and
    3.0× (5 min), over 1.0×; 40 % of the latency budget left, gone in 3 days"."""
    rule, objective = found.rule, budget.objective
    share = found.long_rate * (1 - objective.latency_target / 100)
    said = _left(budget.latency_left)
    gone = budget.latency_gone_in
    if gone is not None:
        said += f", gone in {sli.duration(gone)}"
    return (
        f"{target} latency: {sli.percent(share * 100)} of rounds over {objective.latency:g} s "
        f"in the last {_last(rule.long)}, burning {sli.times(found.long_rate)} "
        f"({sli.span_name(rule.long)}) and {sli.times(found.short_rate)} "
        f"({sli.span_name(rule.short)}), over {sli.times(rule.factor)}; {said}"
    )


def latency_resolved_text(target: str, budget: sli.Budget) -> str:
    return f"{target} latency: no longer burning fast; {_left(budget.latency_left)}"


def _left(left: float | None) -> str:
    if left is None or left <= 0:
        return "no latency budget left"
    return f"{left * 100:.0f} % of the latency budget left"


def _last(seconds: float) -> str:
    """"hour", "day", "6 h": the long window after "in the last"."""
    return {3600.0: "hour", DAY: "day"}.get(seconds) or sli.span_name(seconds)


class BurnAlerts:
    """One tick: flush the recorder, evaluate every target's rules, send what changed."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        ingest: Ingest,
        firing: Firing,
        recorder: Recorder | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        self.store = store
        self.owns = owns  # None: every target's rounds run here
        self.settings = settings
        self.ingest = ingest
        self.firing = firing
        self.recorder = recorder
        longest = burn.longest(settings.objectives.burn_rules)
        self.windows = Windows(longest)  # the rules' windows, in memory
        if recorder is not None:
            recorder.windows = self.windows  # told of every round

    @property
    def active(self) -> bool:
        objectives = self.settings.objectives
        return objectives.enabled and objectives.alerts and bool(objectives.burn_rules)

    async def tick(self) -> list[AlertEvent]:
        now = clock.now()
        rules = self.settings.objectives.burn_rules
        longest = burn.longest(rules)
        open_now = await self.firing()
        last_day = int(now // DAY)
        events = []
        seeded = 0
        for target in sorted(self.settings.targets):
            objective = self.settings.objective(target)
            if objective is None:
                continue
            if self.owns is not None and not self.owns(target):
                self.windows.forget(target)  # another replica runs its rounds (and rules)
                continue
            if not self.windows.known(target):  # first seen, or newly troubled: the store
                first = int(window_begin(longest, now) // DAY)
                found = await blocks(self.store, target, first, last_day)
                wanted = range(first, last_day + 1)
                unflushed = self.recorder.unflushed(target, wanted) if self.recorder else ()
                self.windows.seed(target, found, now, bucket(objective.latency), unflushed)
                seeded += 1
                if seeded % SEED_BATCH == 0:
                    await asyncio.sleep(0)  # thousands of targets: the chat keeps answering
            bad, slow = self.windows.spoiled(target, longest, now)  # none: nothing can fire
            if not (bad or slow):
                self.windows.settle(target, now)  # clean over the longest window: no counts
            least = self.settings.objectives.min_rounds
            availability = burn.firing(
                rules, objective, partial(self.windows.counts, target, now=now),
                min_rounds=least,
            ) if bad else {}
            latency = burn.firing(
                rules, objective, partial(self.windows.latency, target, now=now), latency=True,
                min_rounds=least,
            ) if slow else {}  # fmt: skip
            changed = [
                (kind, severity, level, found.get(severity))
                for kind, found in (("availability", availability), ("latency", latency))
                for severity, level in SEVERITY.items()
                if (severity in found) != (fingerprint(target, severity, kind) in open_now)
            ]
            if not changed:
                continue
            # the budget's words only when something changed: the whole window is read then
            window = await spans(self.store, target, objective, now)
            budget = sli.Budget(target, objective, *window)
            for kind, severity, level, burning in changed:
                key = fingerprint(target, severity, kind)
                status = "firing" if burning is not None else "resolved"
                if kind == "latency":
                    text = (latency_firing_text(target, burning, budget) if burning is not None
                            else latency_resolved_text(target, budget))  # fmt: skip
                else:
                    text = (firing_text(target, burning, budget) if burning is not None
                            else resolved_text(target, budget))  # fmt: skip
                check = f"{'latency' if kind == 'latency' else 'error'} budget ({severity})"
                events.append(_event(target, key, status, level, text, now, check))
        if events:
            await self.ingest(events)
        return events


def _event(
    target: str, key: str, status: str, level: Severity, text: str, at: float, check: str
) -> AlertEvent:
    return AlertEvent(
        source=SOURCE,
        fingerprint=key,
        status="firing" if status == "firing" else "resolved",
        severity=level,
        summary=text,
        target=target,
        starts_at=at,
        labels={"check": check},
    )
