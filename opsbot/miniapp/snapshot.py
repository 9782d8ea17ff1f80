"""What the board shows, read from opsbot's own state: one JSON document per poll.

Targets come worst first (the monitor's announced state, ``status_history``), each with its
last day of latency (``latency``), uptime over 24 h / 7 d / 30 d and objective (SLI, budget
left, burn, by ``objectives.reading`` as /slo); then firing alerts, open
incidents with their timeline, pending requests, and backups against their RPO. What a person
may do is said per item (``can``), by the same role rules the chat applies; the server checks
them again on every action.
"""

from __future__ import annotations

from typing import Any

from opsbot.actions.approvals import APPROVALS, Status
from opsbot.actions.backups.records import list_backups, source_of
from opsbot.alerting import status_history
from opsbot.alerting.buttons import can_restart
from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.config import Person, Role
from opsbot.incidents.state import INCIDENTS
from opsbot.miniapp import latency
from opsbot.objectives import reading, sli
from opsbot.services import Services

SPARK_POINTS = 96  # a day in 15-minute buckets (each the slowest sample in it)
TIMELINE = 8  # an incident's newest entries shown
ACTIONS = ("restart", "rollback", "backup")  # the board's requests, by their verbs


def spark(samples: list[tuple[float, float]], now: float) -> list[float | None]:
    """``SPARK_POINTS`` buckets over the last day, oldest first; None where nothing was seen."""
    width = latency.DAY / SPARK_POINTS
    points: list[float | None] = [None] * SPARK_POINTS
    for at, ms in samples:
        index = int((at - (now - latency.DAY)) // width)
        if 0 <= index < SPARK_POINTS:
            held = points[index]
            points[index] = ms if held is None else max(held, ms)
    return points


async def _targets(services: Services, person: Person, now: float) -> list[dict[str, Any]]:
    operator = person.role.allows(Role.operator)
    rows = []
    for name, target in services.settings.targets.items():
        history = await status_history.get(services.store, name)
        samples = await latency.last_day(services.store, name, now)
        since = history.changes[-1][0] if history.changes else None
        actions = []
        if operator:
            if can_restart(target):
                actions.append("restart")
            actions.append("rollback")
            if target.backups:
                actions.append("backup")
        rows.append({
            "name": name,
            "kind": target.kind,
            "state": history.state,
            "since": since,
            "checks": history.checks,
            "latency_ms": samples[-1][1] if samples else None,
            "spark": spark(samples, now),
            "uptime": {
                label: round(status_history.uptime([history], now - seconds, now), 3)
                for label, seconds in status_history.WINDOWS
            },
            "objective": await _objective(services, name, now),
            "actions": actions,
        })  # fmt: skip
    rank = status_history.RANK
    rows.sort(key=lambda r: (-rank.get(str(r["state"]), 0), str(r["name"])))
    return rows


async def _objective(services: Services, name: str, now: float) -> dict[str, Any] | None:
    """The target's objective, SLI, budget left and burn, from the objectives' own arithmetic
    (the figures /slo says; None: no objective)."""
    found = await reading.budget(services.store, services.settings, name, now)
    if found is None:
        return None
    left, rate = found.left, found.burn(found.last_1h)
    return {
        "objective": found.objective.availability,
        "sli": None if found.sli is None else round(found.sli, 3),
        "budget_left": None if left is None else round(100 * left, 1),
        "burn_1h": None if rate is None else round(rate, 2),
        "verdict": sli.verdict(found),
    }


async def _alerts(services: Services, person: Person) -> list[dict[str, Any]]:
    engine = ALERT_ENGINE.bound(services)
    if engine is None:
        return []
    operator = person.role.allows(Role.operator)
    return [
        {
            "id": a.id,
            "severity": a.severity.value,
            "summary": a.summary,
            "target": a.target,
            "since": a.first_seen,
            "count": a.count,
            "acked_by": a.acked_by,
            "silenced": a.silenced or a.silence_id is not None,
            "can": {
                "ack": operator and not a.acked_by,
                "silence": operator and a.silence_id is None and not a.silenced,
            },
        }
        for a in await engine.list(firing_only=True, limit=50)
        if a.firing
    ]


async def _incidents(services: Services, person: Person) -> list[dict[str, Any]]:
    incidents = INCIDENTS.bound(services)
    if incidents is None:
        return []
    operator = person.role.allows(Role.operator)
    return [
        {
            "id": i.id,
            "severity": i.severity,
            "title": i.title,
            "state": i.state,
            "commander": i.commander,
            "since": i.created,
            "targets": list(i.targets),
            "timeline": [
                {"at": e.at, "actor": e.actor, "kind": e.kind, "text": e.text}
                for e in reversed(i.timeline[-TIMELINE:])
            ],
            "can": {"update": operator},
        }
        for i in await incidents.list(open_first=True, limit=20)
        if not i.resolved
    ]


async def _requests(services: Services, person: Person) -> list[dict[str, Any]]:
    admin = person.role.allows(Role.admin)
    found = sorted(await APPROVALS.of(services).open_requests(), key=lambda r: r.requester.at)
    return [
        {
            "id": r.id,
            "action": r.action,
            "target": r.target,
            "requester": r.requester.name,
            "status": r.status.value,
            "expires": r.expires,
            "can": {
                "approve": admin and r.status is Status.pending and r.requester.id != person.id,
                "deny": r.status is Status.pending and (admin or r.requester.id == person.id),
            },
        }
        for r in found
    ]


async def _backups(services: Services, now: float) -> list[dict[str, Any]]:
    rows = []
    for name, target in services.settings.targets.items():
        if not target.backups:
            continue
        records = await list_backups(name, services.store)
        for spec in target.backups:
            source = source_of(spec)
            same = [r for r in records if r.kind == spec.type and r.source == source]
            age = now - same[0].created if same else None
            rpo = target.rpo
            state = "ok" if age is not None and (rpo is None or age <= rpo) else "fail"
            if rpo is None and age is None:
                state = "warn"
            rows.append({
                "target": name, "type": spec.type, "source": source, "age": age, "rpo": rpo,
                "state": state, "name": same[0].name if same else None,
            })  # fmt: skip
    rows.sort(key=lambda r: (-status_history.RANK[str(r["state"])], str(r["target"])))
    return rows


async def board(services: Services, person: Person, now: float) -> dict[str, Any]:
    """The whole board for ``person`` (their role decides the actions offered)."""
    return {
        "generated": now,
        "refresh": services.settings.miniapp.refresh,
        "you": {"name": person.name, "role": person.role.value},
        "targets": await _targets(services, person, now),
        "alerts": await _alerts(services, person),
        "incidents": await _incidents(services, person),
        "requests": await _requests(services, person),
        "backups": await _backups(services, now),
    }
