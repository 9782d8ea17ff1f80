"""The status card: one message per incident, edited in place; a pure function of the document."""

from __future__ import annotations

from dataclasses import replace

from opsbot.incidents.records import (
    CARD_ENTRIES,
    ICONS,
    MAX_TITLE,
    Entry,
    Incident,
    short,
)
from opsbot.render import Button, Reply, hhmm, span_minutes

#: What a step says when nobody gave a reason: its kind says it already ("resolved — resolved").
_BARE = ("", "acknowledged", "mitigated", "resolved", "reopened")


def entry_line(entry: Entry, limit: int = 160) -> str:
    text = f" — {short(entry.text, limit)}" if entry.text not in _BARE else ""
    return f"{hhmm(entry.at, zone=False)} {entry.actor} · {entry.kind}{text}"


_STATE_LINE = {
    "open": "🔥 open, unacknowledged",
    "acknowledged": "👀 acknowledged",
    "mitigated": "🩹 mitigated",
    "resolved": "✅ resolved",
}


def card_text(incident: Incident, now: float) -> str:
    """The status card; depends only on the document and ``now``, so replicas render alike."""
    icon = "✅" if incident.resolved else ICONS.get(incident.severity, "⚪")
    took = span_minutes(incident.duration(now))
    when = f"after {took}" if incident.resolved else f"for {took}"
    lines = [
        f"{icon} {incident.id} · {incident.severity} · {short(incident.title, MAX_TITLE)}",
        f"State: {_STATE_LINE[incident.state]} {when} (since {hhmm(incident.created)})",
        f"Commander: {incident.commander} · declared by {incident.declared_by}",
        "Targets: " + (", ".join(incident.targets) or "none named"),
    ]
    if incident.health and not incident.resolved:
        lines.append(f"Health: {short(incident.health, 300)}")
    if incident.last_update:
        lines.append(f"Last update: {short(incident.last_update, 300)}")
    if incident.resolved and incident.summary:
        lines.append(f"Summary: {short(incident.summary, 300)}")
    shown = incident.timeline[-CARD_ENTRIES:]
    total = len(incident.timeline) + incident.dropped
    lines += ["", f"Timeline (latest {len(shown)} of {total}):"]
    lines += [entry_line(e) for e in shown]
    if incident.resolved:
        lines += ["", f"/incident show {incident.id} · /incident reopen {incident.id}"]
    else:
        lines += ["", f"/incident ack|update|mitigated|resolve {incident.id}"]
    return "\n".join(lines)


#: The next steps from each state, as the card's buttons (data ``i:STEP ID``, run as
#: ``/incident STEP ID``).
_NEXT = {
    "open": (("👀 Ack", "ack"), ("🩹 Mitigated", "mitigated"), ("✅ Resolve", "resolve")),
    "acknowledged": (("🩹 Mitigated", "mitigated"), ("✅ Resolve", "resolve")),
    "mitigated": (("✅ Resolve", "resolve"),),
    "resolved": (("🔥 Reopen", "reopen"),),
}


#: The Update button's data key (``iu:ID``): it asks for the update's text as a reply.
UPDATE_PROMPT = "iu"


def card_buttons(incident: Incident) -> tuple[Button, ...]:
    """The buttons for the incident's next steps (and Update, while it is not resolved)."""
    steps = [Button(label, f"i:{step} {incident.id}") for label, step in _NEXT[incident.state]]
    if not incident.resolved:
        steps.append(Button("✏️ Update", f"{UPDATE_PROMPT}:{incident.id}"))
    return tuple(steps)


def update_prompt(incident_id: str, username: str | None = None) -> Reply:
    """What the Update button posts: a prompt whose reply becomes ``/incident update ID …``.
    Mentioning the tapper (``username``) is what makes a selective prompt open their reply."""
    to = f"@{username} " if username else ""
    return Reply(
        text=f"✏️ {to}Update for {incident_id} — reply to this message with the text.",
        prompt=f"What changed in {incident_id}?",
    )


def card_reply(incident: Incident, text: str) -> Reply:
    """The card as a message: its text and the next steps' buttons."""
    return Reply(text=text, buttons=card_buttons(incident))


def refreshed(incident: Incident, now: float) -> Incident:
    """The incident with the card re-rendered, as shown from now (an explicit change)."""
    return replace(incident, card_text=card_text(incident, now), card_edited_at=now,
                   card_dirty=False)  # fmt: skip
