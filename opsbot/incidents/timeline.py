"""The automatic incident timeline: what the audit trail and the alert sources feed into it.

Commands, approvals and action results on an involved target arrive through the audit trail;
alerts and recoveries through the alert ingest path. ``/incident`` commands themselves are
left out: the incident already records them as its own entries.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from opsbot.alerting.event import AlertEvent
from opsbot.incidents.state import Incidents

Ingest = Callable[[Sequence[AlertEvent]], Awaitable[None]]


def entry_from_audit(entry: dict[str, Any]) -> tuple[str, str, str, str] | None:
    """(target, actor, kind, text) for the audit events an incident cares about."""
    target = entry.get("target")
    event = entry.get("event")
    if not isinstance(target, str):
        return None
    actor = str(entry.get("who") or entry.get("user") or "opsbot")
    action = entry.get("action", "")
    if event == "command" and entry.get("verb") not in ("incident", None):
        words = " ".join(str(a) for a in entry.get("args", []))
        return target, actor, "command", f"/{entry['verb']} {words}".strip()
    if event == "requested":
        return target, actor, "approval", f"requested {action} ({entry.get('request')})"
    if event in ("approved", "denied"):
        return target, actor, "approval", f"{event} {action} ({entry.get('request')})"
    if event == "executed":
        result = "ok" if entry.get("ok") else "FAILED"
        return target, actor, "action", f"{action} {result}: {entry.get('summary', '')}"[:300]
    return None


def audit_listener(incidents: Incidents) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def listen(entry: dict[str, Any]) -> None:
        note = entry_from_audit(entry)
        if note is not None:
            await incidents.note(*note)

    return listen


def noting_ingest(incidents: Incidents, ingest: Ingest) -> Ingest:
    """Ingest alerts, then note them on incidents: once per target and status per batch."""

    async def run(events: Sequence[AlertEvent]) -> None:
        await ingest(events)
        await note_alerts(incidents, events)

    return run


async def note_alerts(incidents: Incidents, events: Sequence[AlertEvent]) -> None:
    """Note alerts on the incidents of their targets: one entry per target and status per
    batch, naming every alert of it (two checks recovering together are both said)."""
    grouped: dict[tuple[str, str], list[str]] = {}
    for event in events:
        if event.target is None:
            continue
        said = grouped.setdefault((event.target, event.status), [])
        # a recovery is no longer critical: "web: http /health: HTTP 200 (recovered, …)"
        resolved = event.status == "resolved"
        line = event.summary if resolved else f"{event.severity.value}: {event.summary}"
        if line not in said:
            said.append(line)
    for (target, status), lines in grouped.items():
        kind = "alert" if status == "firing" else "recovery"
        source = next(e.source for e in events if e.target == target and e.status == status)
        await incidents.note(target, source, kind, "; ".join(lines)[:300])
