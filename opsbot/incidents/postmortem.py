"""The post-mortem draft: what opsbot knows of an incident, poured into a Markdown template.

The template ships beside this module (``postmortem.md``, the runbooks' sections). A team
replaces it with ``incidents.postmortem_template: PATH``, a ``string.Template`` whose
placeholders are ``opsbot.config.POSTMORTEM_FIELDS`` (checked when the config loads). It is
read at each resolve, so an edited template shows at the next one without a restart; one
that cannot be read or filled any more is logged and the shipped one is used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from importlib import resources
from string import Template

from opsbot.config import POSTMORTEM_FIELDS, Settings
from opsbot.incidents.records import MAX_TEXT, Incident, short
from opsbot.render import Document, span_minutes

log = logging.getLogger(__name__)

DESCRIBED = {
    "declared": "Incident declared by {actor}",
    "ack": "Acknowledged by {actor}",
    "update": "Update from {actor}",
    "severity": "Severity changed by {actor}",
    "assign": "Commander assigned by {actor}",
    "mitigated": "Mitigated ({actor})",
    "resolved": "Resolved by {actor}",
    "reopened": "Reopened by {actor}",
    "command": "Command by {actor}",
    "approval": "Approval ({actor})",
    "action": "Action ({actor})",
    "alert": "Alert ({actor})",
    "recovery": "Recovery ({actor})",
    "public": "Status page update by {actor}",
    "escalation": "Escalation ({actor})",
}


def stamp(ts: float, day: str) -> str:
    this_day = time.strftime("%Y-%m-%d", time.gmtime(ts))
    fmt = "%H:%M" if this_day == day else "%Y-%m-%d %H:%M"
    return time.strftime(fmt, time.gmtime(ts))


def shipped_template() -> str:
    """The runbooks' sections, shipped as package data."""
    return resources.files(__package__).joinpath("postmortem.md").read_text(encoding="utf-8")


def template_of(settings: Settings) -> str:
    """The team's template when configured and still readable, else the shipped one."""
    path = settings.incidents.postmortem_template
    if path is None:
        return shipped_template()
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("post-mortem template %s unreadable (%s); using the shipped one", path, exc)
        return shipped_template()


def fields(incident: Incident) -> dict[str, str]:
    """The values of ``POSTMORTEM_FIELDS`` for one incident; blocks end with a newline."""
    day = time.strftime("%Y-%m-%d", time.gmtime(incident.created))
    end = incident.resolved_at
    status = "Resolved" if incident.resolved else f"Investigating ({incident.state})"
    duration = (
        f"{span_minutes(end - incident.created)} ({stamp(incident.created, day)}–"
        f"{stamp(end, day)} UTC)"
        if end is not None
        else f"ongoing since {stamp(incident.created, day)} UTC"
    )
    severity = incident.severity
    if incident.first_severity and incident.first_severity != incident.severity:
        severity += f" (declared {incident.first_severity})"

    def since(ts: float | None) -> str | None:
        return span_minutes(ts - incident.created) if ts is not None else None

    timeline = []
    if incident.dropped:
        timeline.append(f"- … {incident.dropped} earlier entries were not kept")
    for entry in incident.timeline:
        what = DESCRIBED.get(entry.kind, entry.kind + " ({actor})").format(actor=entry.actor)
        said = entry.text not in ("", "acknowledged", "mitigated", "resolved", "reopened")
        text = f": {short(entry.text, MAX_TEXT)}" if said else ""
        timeline.append(f"- {stamp(entry.at, day)} - {what}{text}")
    measures = [
        ("Time to acknowledge", since(incident.acked_at)),
        ("Time to mitigate", since(incident.mitigated_at)),
        ("Time to resolve", since(incident.resolved_at)),
    ]
    taken = [e for e in incident.timeline if e.kind in ("action", "approval", "command")]
    actions = ["", "Actions taken (from the timeline):"] if taken else []
    actions += [f"- {stamp(e.at, day)} {e.actor}: {short(e.text, MAX_TEXT)}" for e in taken]
    values = {
        "id": incident.id,
        "title": incident.title,
        "date": day,
        "duration": duration,
        "severity": severity,
        "status": status,
        "commander": incident.commander,
        "declared_by": incident.declared_by,
        "targets": ", ".join(incident.targets) or "_TODO: list the impacted services_",
        "timeline": _block(timeline),
        "measures": _block(f"- {name}: {value}" for name, value in measures if value is not None),
        "resolution": incident.summary or "_TODO: what was done to fix it._",
        "actions_taken": _block(actions),
    }
    assert tuple(values) == POSTMORTEM_FIELDS
    return values


def _block(lines: Iterable[str]) -> str:
    return "".join(f"{line}\n" for line in lines)


def postmortem(incident: Incident, template: str | None = None) -> str:
    """The Markdown post-incident report draft: ``template`` (default: the shipped one) filled."""
    text = shipped_template() if template is None else template
    try:
        return Template(text).substitute(fields(incident))
    except (KeyError, ValueError) as exc:  # edited since the config was checked
        log.warning("post-mortem template cannot be filled (%s); using the shipped one", exc)
        return Template(shipped_template()).substitute(fields(incident))


def postmortem_document(incident: Incident, settings: Settings) -> Document:
    report = postmortem(incident, template_of(settings))
    return Document(f"{incident.id}-postmortem.md", report.encode())
