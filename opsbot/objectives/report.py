"""The objectives report: a short message per target and a PNG chart, for 7 or 30 days.

Per target: availability over the period against its objective, the budget left (over the
objective's own window), p95 latency, incidents with mean time to acknowledge and to
resolve, alerts, restarts and rollbacks, and each backup's age against the RPO. Read from
what opsbot already keeps: the recorded rounds, the incidents, the alerts, the audit trail
and the backups index.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opsbot.actions.backups import schedule as backup_schedule
from opsbot.actions.backups.records import list_backups
from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.incidents.state import INCIDENTS
from opsbot.objectives import charts, clock, reading, sli
from opsbot.objectives.recording import daily
from opsbot.objectives.series import DAY, Counts
from opsbot.render import Document, Reply

if TYPE_CHECKING:
    from opsbot.services import Services

PERIODS = {"7d": 7, "30d": 30}
CAPTION = 1024  # Telegram's limit on a document's caption
AUDIT_READ = 5000


@dataclass
class TargetReport:
    name: str
    budget: sli.Budget
    period: Counts
    per_day: dict[int, Counts]
    incidents: int = 0
    ack_seconds: list[float] = field(default_factory=list)
    resolve_seconds: list[float] = field(default_factory=list)
    alerts: int = 0
    restarts: int = 0
    rollbacks: int = 0
    backups: list[str] = field(default_factory=list)  # "postgres 3 h old (RPO 6 h) ✓"

    def line(self) -> str:
        goal = sli.percent(self.budget.objective.availability)
        shown = sli.availability(self.period)
        head = f"{self.name}: " + (f"{sli.percent(shown)} of {goal}" if shown is not None
                                   else f"no rounds (objective {goal})")  # fmt: skip
        left = self.budget.left
        if left is not None:
            head += " · budget spent" if left <= 0 else f" · {left * 100:.0f} % budget left"
        p95 = self.period.quantile(0.95)
        if p95 is not None:
            head += " · p95 > 30 s" if p95 == float("inf") else f" · p95 ≤ {p95:g} s"
        facts = []
        if self.incidents:
            said = f"{self.incidents} incident{'s' if self.incidents > 1 else ''}"
            times = [f"ack {_mean(self.ack_seconds)}" if self.ack_seconds else "",
                     f"resolve {_mean(self.resolve_seconds)}" if self.resolve_seconds else ""]
            kept = [t for t in times if t]
            facts.append(said + (f" ({', '.join(kept)} on average)" if kept else ""))
        if self.alerts:
            facts.append(f"{self.alerts} alert{'s' if self.alerts > 1 else ''}")
        if self.restarts or self.rollbacks:
            facts.append(f"{self.restarts} restarts, {self.rollbacks} rollbacks")
        facts += self.backups
        return head + ("\n  " + " · ".join(facts) if facts else "")


def _mean(values: Sequence[float]) -> str:
    return sli.duration(sum(values) / len(values))


def parse_period(args: Sequence[str]) -> str:
    if len(args) > 1 or (args and args[0].lower() not in PERIODS):
        raise ValueError("usage: /report [7d|30d]")
    return args[0].lower() if args else "7d"


async def gather(services: Services, period: str, at: float) -> list[TargetReport]:
    """Every target with an objective, the least available over the period first."""
    settings = services.settings
    days = PERIODS[period]
    since = at - days * DAY
    budgets = await reading.budgets(services.store, settings, at)
    names = [b.target for b in budgets]
    sums = await daily(services.store, names)
    today = int(at // DAY)
    wanted = range(today - days + 1, today + 1)
    reports = []
    for b in budgets:
        per_day = {d: sums[b.target].get(d, Counts()) for d in wanted}
        reports.append(TargetReport(b.target, b, sum(per_day.values(), Counts()), per_day))
    await asyncio.gather(
        _incidents(services, reports, since),
        _alerts(services, reports, since),
        *(_actions(services, r, since) for r in reports),
        *(_backups(services, r, at) for r in reports),
    )
    reports.sort(key=lambda r: (sli.availability(r.period) or 101.0, r.name))
    return reports


async def _incidents(services: Services, reports: list[TargetReport], since: float) -> None:
    incidents = INCIDENTS.bound(services)
    if incidents is None:
        return
    by_name = {r.name: r for r in reports}
    for incident in await incidents.all():
        if incident.created < since:
            continue
        for name in incident.targets:
            report = by_name.get(name)
            if report is None:
                continue
            report.incidents += 1
            if incident.acked_at is not None:
                report.ack_seconds.append(incident.acked_at - incident.created)
            if incident.resolved_at is not None:
                report.resolve_seconds.append(incident.resolved_at - incident.created)


async def _alerts(services: Services, reports: list[TargetReport], since: float) -> None:
    engine = ALERT_ENGINE.bound(services)
    if engine is None:
        return
    by_name = {r.name: r for r in reports}
    # a page at a time, only this report's targets' alerts since then: not a storm's others
    for alert in await engine.records.matching(
        lambda doc: doc.get("target") in by_name and float(doc.get("first_seen") or 0) >= since
    ):
        by_name[alert.target or ""].alerts += 1


async def _actions(services: Services, report: TargetReport, since: float) -> None:
    for entry in await services.audit.entries(report.name, AUDIT_READ):
        if float(entry.get("ts", 0)) < since:
            break  # newest first
        if entry.get("event") == "executed":
            if entry.get("action") == "restart":
                report.restarts += 1
            elif entry.get("action") == "rollback":
                report.rollbacks += 1


async def _backups(services: Services, report: TargetReport, at: float) -> None:
    target = services.settings.targets[report.name]
    if not target.backups:
        return
    records = await list_backups(report.name, services.store)
    for spec in target.backups:
        newest = backup_schedule.newest(records, spec)
        if newest is None:
            report.backups.append(f"{spec.type} backup: none yet")
            continue
        age = at - newest.created
        said = f"{spec.type} backup {sli.duration(age)} old"
        if target.rpo is not None:
            met = "✓" if age <= target.rpo else "✗ over"
            said += f" (RPO {sli.duration(target.rpo)}) {met}"
        report.backups.append(said)


def text(reports: Sequence[TargetReport], period: str, at: float) -> str:
    first = datetime.fromtimestamp(at - (PERIODS[period] - 1) * DAY, UTC).strftime("%b %d")
    last = datetime.fromtimestamp(at, UTC).strftime("%b %d")
    missed = sum(
        1 for r in reports
        if (a := sli.availability(r.period)) is not None and a < r.budget.objective.availability
    )  # fmt: skip
    head = f"Objectives, last {PERIODS[period]} days ({first} – {last} UTC): "
    head += f"{len(reports)} targets, {missed} below their objective"
    lines = [head, *(r.line() for r in reports)]
    out = lines[0]
    for index, line in enumerate(lines[1:], 1):
        rest = f"\n… {len(lines) - index} more: /slo"
        if len(out) + 1 + len(line) + len(rest) > CAPTION:
            return out + rest
        out += "\n" + line
    return out


def chart(reports: Sequence[TargetReport], period: str) -> bytes:
    days = sorted(reports[0].per_day) if reports else []
    availability = {r.name: [sli.availability(r.per_day[d]) for d in days] for r in reports}
    p95 = {r.name: [_finite(r.per_day[d].quantile(0.95)) for d in days] for r in reports}
    objectives = {r.budget.objective.availability for r in reports}
    objective = objectives.pop() if len(objectives) == 1 else None
    title = f"Availability and p95 latency per day, last {PERIODS[period]} days"
    return charts.report(days, availability, p95, objective, title)


def _finite(value: float | None) -> float | None:
    return 60.0 if value == float("inf") else value


async def build(services: Services, period: str) -> Reply:
    """The report as a reply: the text as the caption of the PNG chart."""
    at = clock.now()
    reports = await gather(services, period, at)
    if not reports:
        return Reply(text="No target has an objective: nothing to report.")
    png = await asyncio.to_thread(chart, reports, period)
    name = f"objectives-{period}-{datetime.fromtimestamp(at, UTC):%Y%m%d}.png"
    return Reply(text=text(reports, period, at), document=Document(name, png, raw=True))
