"""Each target's state over time, from the monitor's transitions, for the status page's uptime.

The monitor announces a check only when its hysteresis lets it (fires after ``fail_after`` bad
rounds, recovers after ``recover_after`` good ones); ``recording_ingest`` wraps the alert ingest
path and folds those announcements into one small document per target
(``status-history/<target>``): which checks are firing now, at which severity, and the list of
moments the target's overall state changed (``ok`` < ``warn`` < ``fail``). Nothing is written
for a round that changes nothing, so the cost is a few writes per incident, not one per round.

Change points older than ``KEEP`` are folded into the state the window starts with. Replicas
announce the same transitions; folding one twice changes nothing (compare-and-set, idempotent).

Uptime over a window is the share of it the target (or, for a component, any of its targets)
was not in ``fail``: a warning is degraded, not down. Without any announcement a target counts
as up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.state.store import JSONDoc, Store

log = logging.getLogger(__name__)

NAMESPACE = "status-history"
SOURCE = "monitor"  # monitor.SOURCE (not imported: this module sits below the monitor)
KEEP = 31 * 86400.0  # change points kept: a little more than the longest uptime window
MAX_CHANGES = 5000
MAX_SWAPS = 100
RANK = {"ok": 0, "warn": 1, "fail": 2}
WINDOWS = (("24h", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0))

Ingest = Callable[[Sequence[AlertEvent]], Awaitable[None]]
Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class History:
    """One target: firing checks (check → warn|fail) and (at, state) change points."""

    checks: dict[str, str]
    changes: tuple[tuple[float, str], ...] = ()
    start: str = "ok"  # the state before the first kept change point

    @property
    def state(self) -> str:
        return self.changes[-1][1] if self.changes else self.start

    def to_doc(self) -> dict[str, object]:
        return {
            "checks": dict(self.checks),
            "changes": [list(c) for c in self.changes],
            "start": self.start,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, object]) -> History:
        checks = doc.get("checks")
        changes = doc.get("changes")
        return cls(
            checks=dict(checks) if isinstance(checks, dict) else {},
            changes=tuple((float(at), str(s)) for at, s in changes)
            if isinstance(changes, list)
            else (),
            start=str(doc.get("start", "ok")),
        )

    def fold(self, events: Iterable[AlertEvent], now: float) -> History:
        """The history after these announcements (at ``now``), old change points trimmed."""
        checks = dict(self.checks)
        for event in events:
            check = event.labels.get("check", event.summary)
            if event.status == "firing":
                checks[check] = "fail" if event.severity is Severity.critical else "warn"
            else:
                checks.pop(check, None)
        state = max(checks.values(), key=RANK.__getitem__, default="ok")
        changes = self.changes
        if state != self.state:
            changes = (*changes, (now, state))
        start = self.start
        cut = now - KEEP
        while changes and (changes[0][0] < cut or len(changes) > MAX_CHANGES):
            start = changes[0][1]
            changes = changes[1:]
        return History(checks, changes, start)

    def down(self, begin: float, end: float) -> list[Interval]:
        """The intervals within [begin, end) spent in ``fail``."""
        out: list[Interval] = []
        state, since = self.start, begin
        for at, new in self.changes:
            if at >= end:
                break
            if at > begin and state == "fail":
                out.append((since, at))
            state, since = new, max(at, begin)
        if state == "fail" and since < end:
            out.append((since, end))
        return out


def uptime(histories: Sequence[History], begin: float, end: float) -> float:
    """Percent of [begin, end) in which none of ``histories`` was in ``fail``."""
    spans = sorted(span for h in histories for span in h.down(begin, end))
    down = 0.0
    current: Interval | None = None
    for a, b in spans:
        if current is None or a > current[1]:
            if current is not None:
                down += current[1] - current[0]
            current = (a, b)
        else:
            current = (current[0], max(current[1], b))
    if current is not None:
        down += current[1] - current[0]
    length = end - begin
    return 100.0 if length <= 0 else max(0.0, 100.0 * (1 - down / length))


async def get(store: Store, target: str) -> History:
    stored = await store.get(NAMESPACE, target)
    return History.from_doc(stored.value) if stored is not None else History({})


async def record(store: Store, events: Sequence[AlertEvent], now: float) -> None:
    """Fold the monitor's announcements into each named target's history."""
    by_target: dict[str, list[AlertEvent]] = {}
    for event in events:
        if event.source == SOURCE and event.target is not None:
            by_target.setdefault(event.target, []).append(event)
    for target, announced in by_target.items():

        def fold(doc: JSONDoc | None, announced: list[AlertEvent] = announced) -> JSONDoc | None:
            before = History.from_doc(doc) if doc is not None else None
            after = (before or History({})).fold(announced, now)
            return None if after == before else after.to_doc()

        await store.update(NAMESPACE, target, fold, attempts=MAX_SWAPS)


def recording_ingest(
    store: Store, ingest: Ingest, clock: Callable[[], float] = time.time
) -> Ingest:
    """``ingest``, then the monitor's transitions recorded (a failure there is only logged)."""

    async def run(events: Sequence[AlertEvent]) -> None:
        await ingest(events)
        try:
            await record(store, events, clock())
        except Exception:
            log.exception("status history: transitions not recorded")

    return run
