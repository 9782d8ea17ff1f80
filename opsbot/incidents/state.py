"""Incidents: declare, acknowledge, mitigate, resolve; a live status card and a timeline.

An incident is a document in the store (``incidents/INC-7``); its short, human id comes from
a counter document (``incident-counter/next``) incremented by compare-and-set, so ids are
unique across replicas. States::

    open ──ack──▶ acknowledged ──mitigated──▶ mitigated ──resolve──▶ resolved
      └──────────────mitigated / resolve──────────┘            reopen ──▶ open

Declaring opens a forum topic for the incident when the incident chat is a forum (else the
card goes to the chat itself), posts the status card and pins it. Every change after that
edits the same card in place: one message id for the incident's whole life.

Replicas: every change is a compare-and-set of the incident document, and only the writer
whose change altered the card's text edits the card (``card_keeper.py``, which this builds on).

The automatic timeline (``note``): the audit trail and the alert engine report commands,
approvals, action results, alerts and recoveries per target; each is appended to every
unresolved incident involving that target. Those card edits are throttled to one per
``EDIT_INTERVAL`` seconds per incident; ``tick`` flushes what was held back, refreshes the
card's duration (and the targets' health) at most once a minute, and re-announces
unacknowledged P0/P1 incidents (P1 every ``alerts.reminder_interval``, P0 twice as often),
each reminder claimed by a compare-and-set on ``last_reminder`` so exactly one replica sends
it.

On resolve, ``postmortem.py`` drafts the post-incident report from a Markdown template (the
runbooks' sections, or the team's own), filled with what opsbot knows and ``_TODO: …_``
prompts for the rest. The stored document is ``records.py``; the status card ``card.py``.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import replace

from opsbot.config import Person
from opsbot.errors import UsageError
from opsbot.incidents import public as status_updates
from opsbot.incidents.card import refreshed
from opsbot.incidents.card_keeper import CardKeeper
from opsbot.incidents.public import PublicIncident
from opsbot.incidents.records import (
    CARD_RETRY,
    COUNTER,
    EDIT_INTERVAL,
    MAX_SWAPS,
    MAX_TEXT,
    MAX_TITLE,
    NAMESPACE,
    PREFIX,
    REFRESH_INTERVAL,
    SEVERITIES,
    Entry,
    Incident,
    normalize_id,
    normalize_severity,
    short,
)
from opsbot.render import Reply, hhmm, span_minutes
from opsbot.services import Wing
from opsbot.state.store import JSONDoc

log = logging.getLogger(__name__)
#: Timeline kinds that are the monitor's transitions of a target (see ``timeline.note_alerts``).
TRANSITIONS = ("alert", "recovery")


def _name(person: Person | str) -> str:
    return person.name if isinstance(person, Person) else str(person)


class Incidents(CardKeeper):
    """What people and the monitor do to incidents: declare, acknowledge, …, resolve, the
    automatic timeline, the status page's updates, and ``tick``."""

    # ----------------------------------------------------------------------- declare

    async def declare(
        self,
        severity: str,
        title: str,
        targets: Sequence[str],
        person: Person | str,
        *,
        chat_id: int | None = None,
    ) -> Incident:
        level = normalize_severity(severity)
        if level is None:
            raise UsageError(f"severity must be one of {', '.join(SEVERITIES)}")
        title = short(title, MAX_TITLE)
        if not title:
            raise UsageError("an incident needs a title")
        names = tuple(dict.fromkeys(t.lower() for t in targets))
        who = _name(person)
        chat = chat_id if chat_id is not None else self.chat_id
        now = self.clock()
        health = await self._health(names)
        number = await self._next_number()
        while True:
            incident = Incident(
                id=f"{PREFIX}{number}",
                severity=level,
                title=title,
                targets=names,
                state="open",
                commander=who,
                declared_by=who,
                created=now,
                chat_id=chat,
                first_severity=level,
                health=health,
                health_at=now if health is not None else 0.0,
                last_reminder=now,
            ).add(Entry(now, who, "declared", f"{level} {title}"))
            if await self.store.create(NAMESPACE, incident.id, incident.to_doc()):
                break
            number = await self._next_number()  # the counter was behind (a restored store)
        if chat is None:
            return incident
        return await self._post_card(incident, first=True)

    async def _next_number(self) -> int:
        def count(doc: JSONDoc | None) -> JSONDoc:
            return {"n": int(doc["n"]) + 1 if doc is not None else 1}

        done = await self.store.update(COUNTER, "next", count, attempts=MAX_SWAPS)
        if done is None or done.after is None:
            raise UsageError("too many incidents declared at once; try again")
        return int(done.after["n"])

    async def ack(self, incident_id: str, person: Person | str) -> Incident:
        who = _name(person)

        def change(i: Incident, now: float) -> Incident:
            if i.state != "open":
                raise UsageError(f"{i.id} is already {i.state}")
            return replace(i, state="acknowledged", acked_at=now).add(
                Entry(now, who, "ack", "acknowledged")
            )

        return await self._apply(incident_id, change)

    async def update(self, incident_id: str, person: Person | str, text: str) -> Incident:
        who = _name(person)
        text = short(text, MAX_TEXT)
        if not text:
            raise UsageError("an update needs some text")

        def change(i: Incident, now: float) -> Incident:
            _not_resolved(i, "updated")
            last = f"{hhmm(now)} {who}: {text}"
            return replace(i, last_update=last).add(Entry(now, who, "update", text))

        return await self._apply(incident_id, change)

    async def set_severity(
        self, incident_id: str, person: Person | str, severity: str
    ) -> Incident:
        who = _name(person)
        level = normalize_severity(severity)
        if level is None:
            raise UsageError(f"severity must be one of {', '.join(SEVERITIES)}")

        def change(i: Incident, now: float) -> Incident:
            _not_resolved(i, "changed")
            if i.severity == level:
                raise UsageError(f"{i.id} is already {level}")
            entry = Entry(now, who, "severity", f"{i.severity} → {level}")
            return replace(i, severity=level).add(entry)

        return await self._apply(incident_id, change)

    async def assign(self, incident_id: str, person: Person | str, commander: str) -> Incident:
        who = _name(person)
        commander = commander.strip().lstrip("@")
        if not commander:
            raise UsageError("assign to whom? /incident assign ID @user")

        def change(i: Incident, now: float) -> Incident:
            _not_resolved(i, "assigned")
            if i.commander == commander:
                raise UsageError(f"{commander} is already the commander of {i.id}")
            entry = Entry(now, who, "assign", f"commander {i.commander} → {commander}")
            return replace(i, commander=commander).add(entry)

        return await self._apply(incident_id, change)

    async def mitigated(self, incident_id: str, person: Person | str, text: str = "") -> Incident:
        who = _name(person)
        text = short(text, MAX_TEXT)

        def change(i: Incident, now: float) -> Incident:
            if i.state in ("mitigated", "resolved"):
                raise UsageError(f"{i.id} is already {i.state}")
            acked = i.acked_at if i.acked_at is not None else now
            return replace(i, state="mitigated", mitigated_at=now, acked_at=acked).add(
                Entry(now, who, "mitigated", text or "mitigated")
            )

        return await self._apply(incident_id, change)

    async def resolve(self, incident_id: str, person: Person | str, summary: str = "") -> Incident:
        """Resolve; the post-mortem draft is ``postmortem(incident)`` (or its document)."""
        who = _name(person)
        summary = short(summary, MAX_TEXT)

        def change(i: Incident, now: float) -> Incident:
            if i.resolved:
                raise UsageError(f"{i.id} is already resolved; /incident reopen {i.id} first")
            return replace(
                i,
                state="resolved",
                resolved_at=now,
                acked_at=i.acked_at if i.acked_at is not None else now,
                summary=summary or None,
            ).add(Entry(now, who, "resolved", summary or "resolved"))

        done = await self._apply(incident_id, change)
        await self._pin(done, pinned=False)  # a resolved incident no longer tops the chat
        await self._resolve_publicly(done)
        return done

    async def _pin(self, incident: Incident, *, pinned: bool) -> None:
        if incident.chat_id is None or incident.card_message_id is None:
            return
        try:
            await self.notifier.pin(incident.chat_id, incident.card_message_id, pinned=pinned)
        except Exception:
            log.exception("%s: could not (un)pin the status card", incident.id)

    async def reopen(self, incident_id: str, person: Person | str, reason: str = "") -> Incident:
        who = _name(person)
        reason = short(reason, MAX_TEXT)

        def change(i: Incident, now: float) -> Incident:
            if i.state not in ("mitigated", "resolved"):
                raise UsageError(f"{i.id} is {i.state}, not resolved or mitigated")
            return replace(
                i,
                state="open",
                acked_at=None,
                mitigated_at=None,
                resolved_at=None,
                last_reminder=now,
            ).add(Entry(now, who, "reopened", reason or "reopened"))

        done = await self._apply(incident_id, change)
        await self._pin(done, pinned=True)
        return done

    # ----------------------------------------------------------------------- status page

    def components(self, incident: Incident) -> tuple[str, ...]:
        """The public components (``status_page.components``) behind the incident's targets."""
        return tuple(
            c.name
            for c in self.settings.status_page.components
            if set(c.targets) & set(incident.targets)
        )

    async def publish(
        self, incident_id: str, person: Person | str, phase: str, text: str
    ) -> tuple[Incident, PublicIncident]:
        """Post a public update (status page) and note on the timeline that it was posted.

        Only ``phase``, ``text`` and the affected components' names reach the public record;
        a text naming a target, an endpoint host or a person is refused.
        """
        key = normalize_id(incident_id)
        incident = await self.get(incident_id) if key is not None else None
        if incident is None:
            raise UsageError(f"no incident {key or short(incident_id, 32)}; see /incident list")
        status_updates.check_public(text, status_updates.internal_words(self.settings))
        record = await status_updates.post(
            self.store, incident.id, self.components(incident), phase, text, self.clock()
        )
        update = record.updates[-1]
        who = _name(person)

        def change(i: Incident, now: float) -> Incident:
            return i.add(Entry(now, who, "public", f"[{update.phase.title()}] {update.text}"))

        return await self._apply(incident.id, change), record

    async def _resolve_publicly(self, incident: Incident) -> None:
        """A resolved incident that was on the status page gets the runbook's Resolved note."""
        try:
            record = await status_updates.get(self.store, incident.id)
            if record is not None and not record.resolved:
                await status_updates.post(
                    self.store, incident.id, record.components, "resolved", "", self.clock()
                )
        except Exception:
            log.exception("%s: the status page was not told it is resolved", incident.id)

    async def add_entry(self, incident_id: str, actor: str, kind: str, text: str) -> Incident:
        """Append an automatic entry to one incident (throttled card edit, like ``note``)."""
        return await self._note(incident_id, actor, kind, text)

    # ----------------------------------------------------------------------- automatic timeline

    async def note(self, target: str, actor: str, kind: str, text: str) -> builtins.list[Incident]:
        """Append an automatic entry to every unresolved incident involving ``target``.

        Never raises for a store or Telegram problem (callers are the audit trail and the
        alert engine); returns the incidents it was added to.
        """
        name = target.lower()
        try:
            involved = [i for i in await self.all() if not i.resolved and name in i.targets]
        except Exception:
            log.exception("incidents: timeline note for %s not recorded", name)
            return []
        noted: builtins.list[Incident] = []
        for incident in involved:
            try:
                # An alert or a recovery is a transition of the monitor: the card's health is
                # checked again and shown at once (the outbox paces and merges the edits).
                health = await self._health(incident.targets) if kind in TRANSITIONS else None
                noted.append(await self._note(incident.id, actor, kind, text, health))
            except UsageError:
                continue  # resolved meanwhile
            except Exception:
                log.exception("%s: timeline note not recorded", incident.id)
        return noted

    async def _note(
        self, incident_id: str, actor: str, kind: str, text: str, health: str | None = None
    ) -> Incident:
        now = self.clock()
        entry = Entry(now, short(actor, 64) or "opsbot", kind, short(text, MAX_TEXT))

        def change(i: Incident) -> Incident:
            _not_resolved(i, "noted")
            added = i.add(entry)
            if health is not None:
                return refreshed(replace(added, health=health, health_at=now), now)
            if now - i.card_edited_at < EDIT_INTERVAL:
                return replace(added, card_dirty=True)  # tick shows it
            return refreshed(added, now)

        done = await self._change(incident_id, change)
        await self._show(done.before, done.after)
        return done.after

    # ----------------------------------------------------------------------- tick

    async def tick(self) -> None:
        """Reminders, held-back card edits and the once-a-minute card refresh."""
        for incident in await self.all():
            if incident.resolved or incident.chat_id is None:
                continue
            try:
                await self._remind(incident)
                if incident.card_message_id is None:
                    await self._retry_card(incident)
                else:
                    await self._refresh(incident)
            except Exception:
                log.exception("%s: tick failed", incident.id)

    def reminder_interval(self, severity: str) -> float | None:
        interval = float(self.settings.alerts.reminder_interval)
        return {"P0": interval / 2, "P1": interval}.get(severity)

    async def _remind(self, incident: Incident) -> None:
        interval = self.reminder_interval(incident.severity)
        if interval is None or incident.state != "open" or incident.chat_id is None:
            return
        now = self.clock()
        last = incident.last_reminder if incident.last_reminder is not None else incident.created
        if now - last < interval:
            return

        def claim(doc: JSONDoc | None) -> JSONDoc | None:
            current = Incident.from_doc(doc) if doc is not None else None
            if current is None or current.state != "open":
                return None  # gone or acknowledged
            if current.last_reminder != incident.last_reminder:
                return None  # another replica reminded meanwhile
            return replace(current, last_reminder=now).to_doc()

        done = await self.store.update(NAMESPACE, incident.id, claim, attempts=1)
        if done is None or done.after is None:
            return  # as above, or another writer: it or the next tick decides
        text = (
            f"⏰ {incident.id} {incident.severity} {short(incident.title, 100)}: "
            f"still unacknowledged after {span_minutes(now - incident.created)}"
            f" — /incident ack {incident.id}"
        )
        await self.notifier.send(incident.chat_id, Reply(text=text), thread_id=incident.thread_id)

    async def _retry_card(self, incident: Incident) -> None:
        now = self.clock()
        since = incident.card_retry_at if incident.card_retry_at is not None else incident.created
        if now - since < CARD_RETRY:
            return

        def claim(doc: JSONDoc | None) -> JSONDoc | None:
            current = Incident.from_doc(doc) if doc is not None else None
            if current is None or current.card_message_id is not None:
                return None
            if current.card_retry_at != incident.card_retry_at:
                return None
            return replace(current, card_retry_at=now).to_doc()

        done = await self.store.update(NAMESPACE, incident.id, claim, attempts=1)
        if done is not None and done.after is not None:
            await self._post_card(Incident.from_doc(done.after), first=False)

    async def _refresh(self, incident: Incident) -> None:
        now = self.clock()
        since = now - incident.card_edited_at
        if not (incident.card_dirty and since >= EDIT_INTERVAL) and since < REFRESH_INTERVAL:
            return
        health, health_at = incident.health, incident.health_at
        if self.health is not None and now - health_at >= REFRESH_INTERVAL:
            fresh = await self._health(incident.targets)
            if fresh is not None:
                health, health_at = fresh, now

        def refresh(doc: JSONDoc | None) -> JSONDoc | None:
            current = Incident.from_doc(doc) if doc is not None else None
            if current is None or current.resolved:
                return None
            if current.card_edited_at != incident.card_edited_at:
                return None  # changed meanwhile: that writer showed it
            updated = refreshed(replace(current, health=health, health_at=health_at), now)
            return updated.to_doc() if updated.card_text != current.card_text else None

        done = await self.store.update(NAMESPACE, incident.id, refresh, attempts=1)
        if done is not None and done.before is not None and done.after is not None:
            await self._show(Incident.from_doc(done.before), Incident.from_doc(done.after))

def _not_resolved(incident: Incident, what: str) -> None:
    if incident.resolved:
        raise UsageError(
            f"{incident.id} is resolved and cannot be {what}; /incident reopen {incident.id}"
        )


#: The incidents in ``Services``: bound by the composition root once a notifier exists.
INCIDENTS: Wing[Incidents] = Wing("incidents")
