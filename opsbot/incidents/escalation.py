"""Escalation: unacknowledged P0/P1 incidents and critical alerts page people, step by step.

Per ``oncall.escalation`` (P0, P1, critical): after ``primary`` minutes without an ack the
primary on call gets a private message, after ``secondary`` the secondary, after
``contacts`` the escalation contacts. An incident that is still not resolved
``resolve_within`` minutes after it was declared pages the contacts too, acked or not (the
runbook's "P1 not resolved within 2 hours"). ``/incident ack`` or an alert's Ack stops the
steps still to come; each page delivered (or failure to deliver one) is an entry on the
incident's timeline (for an alert: on the timeline of every open incident involving its
target).

``tick`` runs from the application's periodic alert tick on every replica. Each step is
claimed by creating a document (``escalations/<subject>:<since>:<step>``): of all replicas
and restarts exactly one creates it, so each step pages once. ``since`` is when the subject
last became unacknowledged (a reopened incident, a new occurrence of an alert), so a second
episode escalates afresh.

A page leaves through the outbox, so whether it reached the person is known only later: its
ref is watched (``escalation-deliveries``), and the timeline says "paged" once the outbox
delivered it, or "could not page" when the outbox gave up on it (the person never opened a
chat with the bot, blocked it); never "paged" before a "could not page".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opsbot.alerting.engine import AlertEngine
from opsbot.alerting.records import Alert
from opsbot.config import EscalationPolicy, Person, Settings
from opsbot.errors import UsageError
from opsbot.incidents import oncall
from opsbot.incidents.records import Incident
from opsbot.incidents.state import Incidents
from opsbot.notify import Notifier
from opsbot.render import Reply, span_minutes
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.state.store import Store

log = logging.getLogger(__name__)

NAMESPACE = "escalations"
DELIVERIES = "escalation-deliveries"  # pages queued in the outbox, until their outcome is known
CLAIM_TTL = 90 * 86400.0
KNOWN_CAP = 100_000  # step keys this process knows are claimed (skips a store write)
BATCH_LINES = 10  # alerts listed in one page; the rest are counted
EVERY = 15.0  # seconds between looks (steps are minutes apart; alerts can be thousands)
STEPS = ("primary", "secondary", "contacts")


@dataclass(frozen=True, slots=True)
class Page:
    """One due step: who to page and what about."""

    key: str
    step: str
    text: str
    incident: str | None  # the incident's id, or None for an alert
    target: str | None


class Escalator:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        incidents: Incidents,
        alerts: AlertEngine | None = None,
        *,
        clock: Callable[[], float] | None = None,
        every: float | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.incidents = incidents
        self.alerts = alerts
        self.clock = clock or incidents.clock
        self.every = _every(settings) if every is None else every
        self._looked: float | None = None  # monotonic time of the last look
        self._known: set[str] = set()

    async def tick(self) -> None:
        """Page every step that is due and not yet claimed (at most once per ``every``)."""
        config = self.settings.oncall
        if config is None:
            return
        await self._check_deliveries()  # at every tick: a delivered page is noted at once
        started = time.monotonic()
        if self._looked is not None and started - self._looked < self.every:
            return
        self._looked = started
        now = self.clock()
        due: list[Page] = []
        for incident in await self.incidents.all():
            policy = getattr(config.escalation, incident.severity, None)
            if isinstance(policy, EscalationPolicy) and not incident.resolved:
                due += _incident_steps(incident, policy, now)
        if self.alerts is not None:
            for alert in await self.alerts.firing_where(pending_critical=True):
                due += _alert_steps(alert, config.escalation.critical, now)
        claimed = [page for page in due if await self._claim(page, now)]
        batches = [[p] for p in claimed if p.incident is not None]
        for step in STEPS:  # alerts: one message per step and person, however many alerts
            batch = [p for p in claimed if p.incident is None and p.step == step]
            if batch:
                batches.append(batch)
        for batch in batches:
            try:
                await self._page(batch, now)
            except Exception:
                log.exception("escalation %s failed", batch[0].key)

    async def _claim(self, page: Page, now: float) -> bool:
        """True for the one replica (and the one run) that creates the step's document."""
        if page.key in self._known:
            return False
        try:
            won = await self.store.create(NAMESPACE, page.key, {"at": now}, ttl=CLAIM_TTL)
        except Exception:
            log.exception("escalation %s: not claimed", page.key)
            return False
        if len(self._known) >= KNOWN_CAP:
            self._known.clear()
        self._known.add(page.key)  # claimed by us or by another replica: never again
        return bool(won)

    async def _page(self, batch: list[Page], now: float) -> None:
        """Page the people of the batch's step; note it on the timeline(s)."""
        step = batch[0].step
        on_call = await oncall.who(self.settings, self.store, now)
        people: Sequence[tuple[str, Person | None]]
        if step == "primary":
            people = [("primary", on_call.primary)]
        elif step == "secondary":
            people = [("secondary", on_call.secondary)]
        else:
            people = [("escalation contact", p) for p in on_call.contacts]
            if not people:
                people = [("secondary", on_call.secondary)]
        what = batch[0].text
        if len(batch) > 1:
            lines = [f"• {p.text}" for p in batch[:BATCH_LINES]]
            if len(batch) > BATCH_LINES:
                lines.append(f"… and {len(batch) - BATCH_LINES} more: /alerts")
            what = f"{len(batch)} critical alerts are not acknowledged:\n" + "\n".join(lines)
        notes = []
        for role, person in people:
            if person is None:
                notes.append(f"no {role} to page")
                continue
            who = f"{person.name} ({role})"
            text = f"📟 {what}\nYou are paged as the {role}."
            try:
                ref = await self.notifier.send(person.id, Reply(text=text))
            except Exception as exc:
                log.warning("could not page %s: %s", person.name, type(exc).__name__)
                notes.append(f"could not page {who}: {type(exc).__name__}")
            else:
                if isinstance(self.notifier, OutboxNotifier):
                    await self._watch(ref, batch, who)  # noted once the outbox knows
                else:  # sent straight to Telegram: delivered
                    notes.append(f"paged {who} by private message")
        if notes:
            await self._note_once(batch, "; ".join(notes))

    async def _watch(self, ref: int, batch: list[Page], who: str) -> None:
        """Remember a queued page until the outbox knows whether it was delivered."""
        pages = [[p.key, p.incident, p.target] for p in batch]
        doc = {"who": who, "pages": pages}
        await self.store.put(DELIVERIES, str(ref), doc, ttl=86400.0)

    async def _check_deliveries(self) -> None:
        """Note on the timeline what became of the pages the outbox settled: delivered or
        given up on (once: the replica that deletes the watch notes it)."""
        if not isinstance(self.notifier, OutboxNotifier):
            return
        for key, stored in (await self.store.scan(DELIVERIES)).items():
            outcome = await self.notifier.outbox.ref_state(int(key))
            if outcome is None or not await self.store.delete(DELIVERIES, key):
                continue  # still queued, or another replica took it
            who = stored.value["who"]
            if "lost" in outcome:
                text = f"could not page {who}: {outcome['lost']}"
                log.warning("escalation: %s", text)
            else:
                text = f"paged {who} by private message"
            pages = [Page(page_key, "", "", incident, target)
                     for page_key, incident, target in stored.value["pages"]]  # fmt: skip
            await self._note_once(pages, text)

    async def _note_once(self, batch: Sequence[Page], text: str) -> None:
        """``text`` on the timeline of each incident (or target) of the batch, once each."""
        noted: set[tuple[str | None, str | None]] = set()
        for page in batch:
            if (page.incident, page.target) not in noted:
                noted.add((page.incident, page.target))
                await self._note(page, text)

    async def _note(self, page: Page, text: str) -> None:
        try:
            if page.incident is not None:
                await self.incidents.add_entry(page.incident, "opsbot", "escalation", text)
            elif page.target is not None:
                await self.incidents.note(page.target, "opsbot", "escalation", text)
        except UsageError:
            pass  # resolved meanwhile
        except Exception:
            log.exception("escalation %s: not noted on the timeline", page.key)


def _every(settings: Settings) -> float:
    """``EVERY``, or half the shortest configured step when that is shorter."""
    if settings.oncall is None:
        return EVERY
    policies = settings.oncall.escalation
    steps = [
        minutes * 60
        for policy in (policies.P0, policies.P1, policies.critical)
        for minutes in (policy.primary, policy.secondary, policy.contacts, policy.resolve_within)
        if minutes is not None
    ]
    return min([EVERY, *(s / 2 for s in steps)])


def _minutes(value: float | None) -> float | None:
    return None if value is None else value * 60


def _incident_steps(incident: Incident, policy: EscalationPolicy, now: float) -> list[Page]:
    pages = []
    title = incident.title if len(incident.title) <= 100 else incident.title[:99] + "…"
    head = f"{incident.id} {incident.severity} {title}"
    if incident.state == "open":
        since = _open_since(incident)
        for step in STEPS:
            after = _minutes(getattr(policy, step))
            if after is not None and now - since >= after:
                pages.append(
                    Page(
                        key=f"{incident.id}:{since:.0f}:{step}",
                        step=step,
                        text=(
                            f"{head}: unacknowledged for {span_minutes(now - since)}."
                            f" /incident ack {incident.id}"
                        ),
                        incident=incident.id,
                        target=None,
                    )
                )
    budget = _minutes(policy.resolve_within)
    if budget is not None and now - incident.created >= budget:
        pages.append(
            Page(
                key=f"{incident.id}:{incident.created:.0f}:budget",
                step="contacts",
                text=(
                    f"{head}: not resolved after {span_minutes(now - incident.created)}"
                    f" (budget {span_minutes(budget)}). /incident show {incident.id}"
                ),
                incident=incident.id,
                target=None,
            )
        )
    return pages


def _open_since(incident: Incident) -> float:
    """When the incident last became open and unacknowledged (declared or reopened)."""
    reopened = [e.at for e in incident.timeline if e.kind == "reopened"]
    return max(reopened, default=incident.created)


def _alert_steps(alert: Alert, policy: EscalationPolicy, now: float) -> list[Page]:
    pages = []
    summary = alert.summary if len(alert.summary) <= 200 else alert.summary[:199] + "…"
    for step in STEPS:
        after = _minutes(getattr(policy, step))
        if after is not None and now - alert.first_seen >= after:
            pages.append(
                Page(
                    key=f"alert:{alert.fingerprint}:{alert.occurrence}:{step}",
                    step=step,
                    text=(
                        f"CRITICAL alert {alert.id} · {alert.target or alert.source}: {summary}"
                        f" — firing for {span_minutes(now - alert.first_seen)}, not"
                        f" acknowledged. /ack {alert.id}"
                    ),
                    incident=None,
                    target=alert.target,
                )
            )
    return pages
