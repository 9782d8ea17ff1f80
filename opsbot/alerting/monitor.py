"""The built-in monitor: each target's checks in rounds, with hysteresis, turned into alerts.

Every check of a target is its own alert (fingerprint: monitor, target, check label). A check
fires after ``fail_after`` bad rounds in a row and resolves after ``recover_after`` good rounds
in a row, so one blip pages nobody. Severity follows the same rule while firing: it rises to
critical once the check has failed ``fail_after`` rounds in a row, and eases back to warning
after ``recover_after`` rounds no worse than a warning; each change is a new firing event for
the same fingerprint, which the alert engine updates in place.

The counters live in memory, one ``Monitor`` per opsbot process. That is enough: every replica
watches the same targets and emits the same fingerprints, and the alert engine dedups events
by fingerprint across replicas in the shared store, so a second replica adds no alert. A
restarted opsbot counts afresh (at worst ``fail_after`` rounds later); pass ``firing`` (what
the engine still holds open from this source) so that an alert raised before the restart is
still resolved after it.

Telegram-free: ``scheduler.MonitorScheduler`` runs the rounds (``schedule`` says what and how
often), for the application as for ``scheduler.run_forever``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Monitor as MonitorSettings
from opsbot.config import Settings, Target
from opsbot.errors import UsageError
from opsbot.reach.checks import (
    CheckResult,
    CheckRuntime,
    Gate,
    TargetHealth,
    check_phrase,
    check_target,
)
from opsbot.reach.targets import State
from opsbot.render import plural

log = logging.getLogger(__name__)

SOURCE = "monitor"
Ingest = Callable[[list[AlertEvent]], Awaitable[None]]
#: Told of every round (target, its health, when it ended): the objectives' recorder.
RoundHook = Callable[[str, TargetHealth, float], None]

_SEVERITY = {State.WARN: Severity.warning, State.FAIL: Severity.critical}
_STATE = {Severity.warning: State.WARN, Severity.critical: State.FAIL}


def fingerprint(target: str, check: str) -> str:
    """The alert fingerprint of one check of one target."""
    return AlertEvent.make_fingerprint(SOURCE, target, check)


def on_conflict(token_owner: str, *, resolved: bool = False) -> AlertEvent:
    """The alert for a second ``getUpdates`` poller on opsbot's own token (409 Conflict).

    ``token_owner`` is the bot's username; the application raises this when python-telegram-bot
    reports ``telegram.error.Conflict``, and may resolve it once polling works again.
    """
    username = token_owner.removeprefix("@")
    return AlertEvent(
        source="telegram",
        fingerprint=AlertEvent.make_fingerprint("telegram", "conflict", username),
        status="resolved" if resolved else "firing",
        severity=Severity.critical,
        summary=(
            f"@{username}: polling works again, no other poller"
            if resolved
            else f"another poller is using @{username}'s token (409 Conflict)"
        ),
        starts_at=time.time(),
        labels={"bot": username, "check": "conflict"},
    )


@dataclass(slots=True)
class _Track:
    """One check's recent history: consecutive rounds at least / at most as bad as a state."""

    announced: State = State.OK  # what the last event said: OK = not firing
    at_least: dict[State, int] = field(default_factory=lambda: dict.fromkeys(State, 0))
    at_most: dict[State, int] = field(default_factory=lambda: dict.fromkeys(State, 0))
    since: float | None = None  # when the current bad streak began (wall clock)

    def observe(self, state: State, now: float) -> None:
        for level in State:
            self.at_least[level] = self.at_least[level] + 1 if state >= level else 0
            self.at_most[level] = self.at_most[level] + 1 if state <= level else 0
        if state is not State.OK:
            self.since = self.since or now
        elif self.announced is State.OK:
            self.since = None  # a blip that never fired is forgotten

    def decide(self, policy: MonitorSettings) -> State | None:
        """The state to announce now, or None to stay quiet."""
        worse = [s for s in (State.FAIL, State.WARN) if self.at_least[s] >= policy.fail_after]
        if worse and worse[0] > self.announced:
            return worse[0]
        better = [s for s in (State.OK, State.WARN) if self.at_most[s] >= policy.recover_after]
        if better and better[0] < self.announced:
            return better[0]
        return None


class Monitor:
    """Check rounds per target with hysteresis; events go to ``ingest`` (the alert engine)."""

    def __init__(
        self,
        settings: Settings,
        runtime: CheckRuntime,
        ingest: Ingest,
        *,
        firing: Mapping[str, Severity] | None = None,
        observe: Callable[[TargetHealth], Awaitable[None]] | None = None,
        on_round: RoundHook | None = None,
    ) -> None:
        self._settings = settings
        self._observe = observe  # every round's result (the board's latency history)
        self._on_round = on_round  # counted for the objectives
        self._runtime = runtime
        self._ingest = ingest
        self._firing = dict(firing or {})  # fingerprint → severity, open before a restart
        self._tracks: dict[str, _Track] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def settings(self) -> Settings:
        return self._settings

    def policy(self, name: str) -> MonitorSettings:
        """The target's own monitor settings, or the default ``alerts.monitor``."""
        target = self._settings.targets.get(name)
        if target is None:
            raise UsageError(f"no target {name!r}")
        return target.monitor or self._settings.alerts.monitor

    def schedule(self) -> list[tuple[str, float]]:
        """(target, interval) for every monitored target that has something to check."""
        return [
            (name, self.policy(name).interval)
            for name, target in self._settings.targets.items()
            if self.policy(name).enabled and _checks_something(target)
        ]

    async def round(self, name: str, *, gate: Gate | None = None) -> list[AlertEvent]:
        """Check one target once; emit (and return) the events its checks' hysteresis allows.

        ``gate`` gives each check its slot (see ``checks.check_target``).
        """
        policy = self.policy(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:  # rounds of one target never overlap, even when a round runs long
            target = self._settings.targets[name]
            health = await check_target(name, target, self._runtime, gate=gate)
            if self._observe is not None:
                await self._observe(health)
            now = time.time()
            if self._on_round is not None:
                self._on_round(name, health, now)
            events, changes = [], []
            for check in _unique(health.checks):
                key = fingerprint(name, check.name)
                track = self._tracks.get(key)
                if track is None:
                    track = self._tracks[key] = _Track()
                    opened = self._firing.pop(key, None)
                    if opened is not None:
                        track.announced = _STATE.get(opened, State.WARN)
                track.observe(check.state, now)
                decided = track.decide(policy)
                if decided is not None:
                    events.append(_event(name, key, check, decided, track))
                    changes.append((track, decided))
            if events:
                # Announced only once ingested: if the engine fails, the next round says it again.
                await self._ingest(events)
            for track, decided in changes:
                track.announced = decided
                if decided is State.OK:
                    track.since = None
            return events


def _unique(checks: tuple[CheckResult, ...]) -> list[CheckResult]:
    """Results with distinct names: a second check with the same label becomes "label #2"."""
    seen: dict[str, int] = {}
    unique = []
    for check in checks:
        seen[check.name] = count = seen.get(check.name, 0) + 1
        name = check.name if count == 1 else f"{check.name} #{count}"
        unique.append(CheckResult(name, check.state, check.detail, check.latency))
    return unique


def _checks_something(target: Target) -> bool:
    """As ``check_target`` decides: any checks, or a process status it can ask for."""
    has_status = target.kind != "command" or target.actions.status is not None
    return bool(target.checks) or (target.status_check and has_status)


def _event(name: str, key: str, check: CheckResult, state: State, track: _Track) -> AlertEvent:
    status: Literal["firing", "resolved"]
    if state is State.OK:
        status, severity = "resolved", _SEVERITY[track.announced]
        why = f"recovered, {plural(track.at_most[State.OK], 'check')} in a row"
    else:
        status, severity = "firing", _SEVERITY[state]
        why = f"{plural(track.at_least[state], 'check')} in a row"
    return AlertEvent(
        source=SOURCE,
        fingerprint=key,
        status=status,
        severity=severity,
        summary=f"{name}: {check_phrase(check.name)}: {check.detail} ({why})",
        target=name,
        starts_at=track.since,
        labels={"check": check.name},
    )
