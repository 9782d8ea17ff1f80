"""Burn-rate alerts: a budget burning too fast becomes an alert of the alert engine.

Every ``TICK_SECONDS`` on the lease holder (where the rounds are counted), each target's
rules are evaluated (``burn.firing``) over the windows kept in memory (``windows.Windows``:
seeded once from the store and the recorder's unflushed counts, then told of every round),
so a tick reads the store only for a target whose alert changes. A page is a critical
alert, a ticket a warning, one per target and severity (fingerprint: ``slo``, target,
severity), so the engine dedups, silences, paces and buttons them like any other alert. What
the engine still holds firing is read at each tick: a replica taking the lease over, or a
restarted opsbot, resolves what another raised. Only changes are sent: a firing rule once
when it starts, its resolution once its short window recovers.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Settings
from opsbot.objectives import burn, clock, sli
from opsbot.objectives.recording import Recorder, blocks
from opsbot.objectives.series import DAY
from opsbot.objectives.windows import Windows
from opsbot.state.store import Store

log = logging.getLogger(__name__)

SOURCE = "slo"
TICK_SECONDS = 60.0
SEVERITY = {"page": Severity.critical, "ticket": Severity.warning}

Ingest = Callable[[Sequence[AlertEvent]], Awaitable[None]]
Firing = Callable[[], Awaitable[set[str]]]  # fingerprints of this source the engine holds open


def fingerprint(target: str, severity: str) -> str:
    return AlertEvent.make_fingerprint(SOURCE, target, severity)


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


class BurnAlerts:
    """One tick: flush the recorder, evaluate every target's rules, send what changed."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        ingest: Ingest,
        firing: Firing,
        recorder: Recorder | None = None,
    ) -> None:
        self.store = store
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
        for target in sorted(self.settings.targets):
            objective = self.settings.objective(target)
            if objective is None:
                continue
            if not self.windows.known(target):  # once per target and lease: from the store
                first = int((now - longest) // DAY)
                self.windows.seed(target, await blocks(self.store, target, first, last_day), now)
                for minute, total, bad in self.recorder.unflushed(target) if self.recorder else ():
                    self.windows.add(target, minute, total, bad)
            found = burn.firing(rules, objective, partial(self.windows.counts, target, now=now))
            changed = [
                (severity, level, found.get(severity))
                for severity, level in SEVERITY.items()
                if (severity in found) != (fingerprint(target, severity) in open_now)
            ]
            if not changed:
                continue
            # the budget's words only when something changed: the whole window is read then
            first, last = sli.days_needed(objective, now)
            window = await blocks(self.store, target, first, last)
            budget = sli.budget(target, objective, window, now)
            for severity, level, burning in changed:
                key = fingerprint(target, severity)
                if burning is not None:
                    text = firing_text(target, burning, budget)
                    events.append(_event(target, key, "firing", level, text, now, severity))
                else:
                    text = resolved_text(target, budget)
                    events.append(_event(target, key, "resolved", level, text, now, severity))
        if events:
            await self.ingest(events)
        return events


def _event(
    target: str, key: str, status: str, level: Severity, text: str, at: float, severity: str
) -> AlertEvent:
    return AlertEvent(
        source=SOURCE,
        fingerprint=key,
        status="firing" if status == "firing" else "resolved",
        severity=level,
        summary=text,
        target=target,
        starts_at=at,
        labels={"check": f"error budget ({severity})"},
    )
