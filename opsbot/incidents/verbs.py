"""The /incident verb (Telegram-free), bound to ``Incidents`` like the alert verbs.

``incident`` finds the ``Incidents`` in ``Services`` (only ``opsbot run`` has them) and is
registered in ``opsbot.verbs.registry`` below.

Declaring: ``/incident P1 payments failing paybot quizbot`` — the words after the severity
are the title, except trailing words that are configured target names: those are the
incident's targets (``/incident P1 paybot`` alone makes ``paybot`` both title and target).

Inside an incident's forum topic the ID may be left out. An ID is ``INC-7`` or ``#7`` (a bare
``7`` too, outside incident topics, where it could be the start of an update's text).
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING

from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.incidents import public as status_updates
from opsbot.incidents.card import UPDATE_PROMPT, card_text, entry_line
from opsbot.incidents.postmortem import postmortem_document
from opsbot.incidents.public import PHASES, parse_phase
from opsbot.incidents.records import (
    ICONS,
    SEVERITIES,
    Incident,
    normalize_id,
    normalize_severity,
)
from opsbot.incidents.state import INCIDENTS, Incidents
from opsbot.render import Document, Reply, plural, span_minutes
from opsbot.verbs.registry import ButtonSpec, Caller, Verb, listing, register, register_buttons

if TYPE_CHECKING:
    from opsbot.services import Services

USAGE = (
    "/incident P0..P3 TITLE [TARGET…] | list | show|ack|mitigated|reopen [ID]"
    " | update [ID] [--public] TEXT | public [ID] [PHASE] [TEXT]"
    " | severity [ID] P0..P3 | assign [ID] @user | resolve [ID] [SUMMARY]"
)
SUMMARY = "declare and run incidents: pinned status card, timeline, post-mortem draft"
READ_ONLY = ("list", "show")
CHANGES = ("ack", "update", "public", "severity", "assign", "mitigated", "resolve", "reopen")
_USER = re.compile(r"^@?[A-Za-z0-9_.-]{1,64}$")
_EXPLICIT_ID = re.compile(r"^(?:INC-?|#)\d{1,9}$", re.IGNORECASE)
LISTED = 20


def incident_line(incident: Incident, now: float) -> str:
    icon = "✅" if incident.resolved else ICONS.get(incident.severity, "⚪")
    took = span_minutes(incident.duration(now))
    title = incident.title if len(incident.title) <= 60 else incident.title[:59] + "…"
    return (
        f"{icon} {incident.id} {incident.severity} {incident.state} {took}"
        f" [{incident.commander}] — {title}"
    )


async def incident_verb(
    incidents: Incidents, services: Services, caller: Caller, args: list[str]
) -> Reply:
    """/incident: see ``USAGE``."""
    if not args:
        raise UsageError(f"usage: {USAGE}")
    sub = args[0].lower()
    declaring = normalize_severity(sub) is not None
    if not declaring and sub not in (*READ_ONLY, *CHANGES):
        raise UsageError(f"usage: {USAGE}")
    if sub not in READ_ONLY and not caller.role.allows(Role.operator):
        raise UsageError("changing incidents needs the operator role")
    if declaring:
        return await _declare(incidents, services, caller, args)
    if sub == "list":
        return await _list(incidents, services, args[1:])
    incident_id, rest = await _which(incidents, caller, sub, args[1:])
    person = caller.person
    if sub == "show":
        return await _show(incidents, services, incident_id, rest)
    if sub == "ack":
        _no_more(rest, sub)
        done = await incidents.ack(incident_id, person)
        return Reply(text=f"👀 {done.id} acknowledged by {person.name}: reminders stop.")
    if sub == "update" and rest and rest[0].lower() == "--public":
        sub, rest = "public", rest[1:]
    if sub == "update":
        if not rest:
            raise UsageError("usage: /incident update [ID] TEXT")
        done = await incidents.update(incident_id, person, " ".join(rest))
        return Reply(text=f"📝 {done.id} updated.")
    if sub == "public":
        return await _public(incidents, services, incident_id, caller, rest)
    if sub == "severity":
        if len(rest) != 1 or normalize_severity(rest[0]) is None:
            raise UsageError(f"usage: /incident severity [ID] {'|'.join(SEVERITIES)}")
        done = await incidents.set_severity(incident_id, person, rest[0])
        return Reply(text=f"{ICONS[done.severity]} {done.id} is now {done.severity}.")
    if sub == "assign":
        if len(rest) != 1 or not _USER.match(rest[0]):
            raise UsageError("usage: /incident assign [ID] @user")
        done = await incidents.assign(incident_id, person, _person_name(services, rest[0]))
        return Reply(text=f"🧑‍✈️ {done.commander} is the commander of {done.id}.")
    if sub == "mitigated":
        done = await incidents.mitigated(incident_id, person, " ".join(rest))
        return Reply(text=f"🩹 {done.id} mitigated; /incident resolve {done.id} when it is over.")
    if sub == "resolve":
        done = await incidents.resolve(incident_id, person, " ".join(rest))
        took = span_minutes(done.duration(incidents.clock()))
        return Reply(
            text=(
                f"✅ {done.id} resolved after {took}. Post-mortem draft attached:"
                " fill in the _TODO_ parts."
            ),
            document=postmortem_document(done, services.settings),
        )
    # reopen
    done = await incidents.reopen(incident_id, person, " ".join(rest))
    return Reply(text=f"🔥 {done.id} reopened: open again, unacknowledged.")


async def _public(
    incidents: Incidents, services: Services, incident_id: str, caller: Caller, rest: list[str]
) -> Reply:
    """A status page update: ``[PHASE] [TEXT]``; the phase defaults to the latest one."""
    phase = parse_phase(rest[0]) if rest else None
    words = rest[1:] if phase is not None else rest
    if phase is None:
        latest = await status_updates.get(incidents.store, incident_id)
        phase = latest.phase if latest is not None else "investigating"
        if not words:
            raise UsageError(
                f"usage: /incident public [ID] [{'|'.join(PHASES)}] [TEXT] — text for the"
                " public status page; never internal details"
            )
    text = services.redactor.redact(" ".join(words))  # a pasted secret never goes public
    done, record = await incidents.publish(incident_id, caller.person, phase, text)
    where = ", ".join(record.components) or "no component"
    return Reply(
        text=f"📣 {done.id} on the status page ({where}): {phase.title()}",
        block=record.updates[-1].text,
    )


async def _declare(
    incidents: Incidents, services: Services, caller: Caller, args: list[str]
) -> Reply:
    severity = normalize_severity(args[0])
    assert severity is not None
    words = args[1:]
    if not words:
        raise UsageError(f"usage: /incident {severity} TITLE [TARGET…]")
    known = services.settings.targets
    split = len(words)
    while split > 0 and words[split - 1].lower() in known:
        split -= 1
    targets = [w.lower() for w in words[split:]]
    title = " ".join(words[:split] or words)
    configured = incidents.chat_id
    chat = None if configured is not None else caller.chat_id
    incident = await incidents.declare(severity, title, targets, caller.person, chat_id=chat)
    where = "no chat configured: no status card"
    if incident.card_message_id is not None:
        where = "status card pinned" + (" in its own topic" if incident.thread_id else "")
    elif incident.chat_id is not None:
        where = "the status card could not be posted yet (retrying)"
    named = f" · targets {', '.join(incident.targets)}" if incident.targets else ""
    return Reply(
        text=(
            f"{ICONS[incident.severity]} {incident.id} declared ({incident.severity}):"
            f" {incident.title}{named} · {where}"
        )
    )


async def _which(
    incidents: Incidents, caller: Caller, sub: str, rest: list[str]
) -> tuple[str, list[str]]:
    """The incident a subcommand is about, and the remaining words."""
    here = await incidents.by_thread(caller.chat_id, caller.thread_id)
    if rest:
        word = rest[0]
        explicit = _EXPLICIT_ID.match(word) or (here is None and normalize_id(word) is not None)
        if explicit:
            key = normalize_id(word)
            assert key is not None
            return key, rest[1:]
    if here is not None:
        return here.id, rest
    opened = [i.id for i in await incidents.list(open_first=True, limit=LISTED) if not i.resolved]
    example = opened[0] if opened else "INC-1"
    now = f"{listing(opened)} open" if opened else "none is open"
    raise UsageError(
        f"which incident? /incident {sub} {example} … ({now}; or type it in the incident's topic)"
    )


def _no_more(rest: list[str], sub: str) -> None:
    if rest:
        raise UsageError(f"usage: /incident {sub} [ID]")


def _person_name(services: Services, word: str) -> str:
    name = word.lstrip("@")
    for person in services.settings.people:
        if person.name.lower() == name.lower():
            return person.name
    return name


async def _list(incidents: Incidents, services: Services, rest: list[str]) -> Reply:
    if rest:
        raise UsageError("usage: /incident list")
    found = await incidents.list(open_first=True, limit=LISTED)
    if not found:
        return Reply(text="No incidents recorded. Declare one: /incident P1 TITLE [TARGET…]")
    now = incidents.clock()
    unresolved = sum(1 for i in found if not i.resolved)
    head = f"🚨 {plural(unresolved, 'open incident')}" if unresolved else "✅ no open incidents"
    return Reply(
        text=f"{head} · latest {len(found)}\n/incident show ID",
        block="\n".join(incident_line(i, now) for i in found),
    )


async def _show(
    incidents: Incidents, services: Services, incident_id: str, rest: list[str]
) -> Reply:
    _no_more(rest, "show")
    incident = await incidents.get(incident_id)
    if incident is None:
        raise UsageError(f"no incident {incident_id}; see /incident list")
    now = incidents.clock()
    body = "\n".join(entry_line(e, limit=400) for e in incident.timeline)
    head = card_text(incident, now).split("\n\n", 1)[0]
    limit = services.settings.limits.inline_chars - len(head) - 32
    if len(body) <= limit:
        return Reply(text=head, block=body)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Reply(
        text=f"{head}\nTimeline attached ({len(incident.timeline)} entries).",
        document=Document(f"{incident.id}-timeline-{stamp}.txt", body.encode()),
    )


# (name, least role, usage, summary, verb): registered below, bound to the Incidents.
VERB_SPEC = ("incident", Role.viewer, USAGE, SUMMARY, incident_verb)


async def incident(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/incident …"""
    incidents = INCIDENTS.bound(services)
    if incidents is None:
        raise UsageError("incidents are handled by the running bot (opsbot run), not here")
    return await incident_verb(incidents, services, caller, args)


register(Verb(*VERB_SPEC[:4], incident))
register_buttons(
    ButtonSpec("is", Role.operator, "declare an incident from an alert, at a severity (is:ID:P1)"),
    ButtonSpec("i", Role.operator, "an incident's next step (i:ack INC-7)", verb="incident"),
    ButtonSpec(UPDATE_PROMPT, Role.operator, "ask for an incident's update as a reply (iu:INC-7)",
        audits_itself=True),
)
