"""Alerts: dedup by fingerprint, in-place counters, storm digests, paced by the outbox.

``AlertEngine`` is the face; it composes ``records.py`` (the alert documents, dedup),
``delivery.py`` (messages and edits), ``digests.py`` (storms) and ``reminders.py``.

Every ``AlertEvent`` is recorded, whatever happens to delivery:

* ``alerts/{fingerprint}``: the alert document (``Alert``): status, counts, who acked, and the
  delivery state of its message. A fingerprint that fires again after it resolved starts a
  new *occurrence* in the same document (same id, a new message).
* ``alert-ids/{id}``: the short opaque id (8 url-safe characters) → the fingerprint. Buttons
  carry only ``al:ID`` (logs), ``ar:ID`` (restart), ``ab:ID`` (back up now), ``as:ID``
  (silence 1h), ``au:ID`` (unsilence), ``ak:ID`` (ack), ``ai:ID`` (declare); ``buttons.py``
  says which a card offers.
* ``alert-events/all``: an append-only log; each entry holds up to ``LOG_CHUNK`` events of one
  ``ingest`` call (one entry per event would cost a write per event, too slow in a storm).

``ingest`` is ``record`` then ``deliver``. ``record`` writes the documents, new short ids and
log entries of a call in one atomic ``commit``, usually without reading anything first: it
folds onto this replica's last write of each document (or onto nothing, for a fingerprint it
never wrote), and onto the silences and storm state it last read, and the commit checks that
none of them changed (else it reads and folds again). Webhooks answer after ``record`` and
deliver in the background (``intake.py``).

Delivery
--------
A new firing alert posts one message; repeats edit it in place (``×37 since 12:03``), at most
once per ``alerts.edit_interval`` per alert — ``tick`` flushes what was held back, so the
final count is always shown. A change of status (resolved, acked, silenced, a new severity) is
edited at once; only counters wait. A resolve also posts a short recovery line, except in a
storm. Unacknowledged critical alerts are reminded every ``reminder_interval``. Silenced
alerts are recorded with ``silenced=true`` and not posted. An alert's Silence button silences
its identity (fingerprint) only; ``/silence TARGET`` the whole target. A card shows the
silence covering it (who, until when, how much) until the silence ends, resolved or not; when
it ends, what still fires without a message is posted.

Everything leaves through the outbox (``opsbot.state.outbox``), the one pacing rule of the
chat: every call (send or edit) takes a slot of the group's window, command replies ahead
of alerts, alert posts and status edits ahead of counter edits, a message's queued edits
coalesced to its newest text, 429s honoured. The engine decides *what* is said; the outbox
*when*. Before a new message of its own (an alert, a recovery line, a reminder) the engine
asks the outbox for ``room``: the window's calls plus what is queued, under
``alerts.max_messages_per_minute``. No room: a recovery line is skipped (the message itself
still turns resolved), a reminder waits, and a new alert switches the chat to STORM mode.

Replicas: each message has a ref derived from what it announces (alert id and occurrence,
"recovery", the reminder's due time, the storm's start), queued with ``once`` before it is
recorded on the alert document by compare-and-set: replicas deciding together queue one
message, and one that dies in between leaves an alert the next tick posts again, once.
Edits carry the document's version, so a replica late with an older text changes nothing.

Storms
------
In a storm, new alerts get no message of their own (``digested=true``), except critical ones
while the window keeps room for them (``Room.take_critical``: they go out ahead of
everything, still leaving a few slots to command replies); instead one digest message per
chat (``alert-storms/{chat}``) is posted and kept current (``digests.refresh``), with the
counts per target and severity since the storm began and the critical alerts it holds.
Every alert is still recorded, listable (``/alerts``) and ackable (``/ack ID``); edits of
messages posted before the storm go on. The storm ends at the first digest interval in which
no more new alerts arrived than the chat takes for that long; the digest is edited one last
time to say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from opsbot.alerting import silences
from opsbot.alerting.delivery import AlertDelivery, Room, chat_of, thread_of
from opsbot.alerting.digests import STORMS, Storm, StormDigests
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.records import (
    MAX_SWAPS,
    Alert,
    AlertRecords,
    Listing,
    may_have_work,
    plural,
    silence_fields,
)
from opsbot.alerting.reminders import Reminders
from opsbot.config import Person, Settings
from opsbot.metrics import Metrics
from opsbot.notify import Notifier
from opsbot.render import Reply, hhmm
from opsbot.services import Wing
from opsbot.state.store import Expect, ExpectScan, Op, Store

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Recorded:
    """What ``record`` stored, for ``deliver``; several merge into one delivery."""

    events: list[AlertEvent]
    alerts: dict[str, Alert]  # fingerprint → the alert as recorded
    counted: list[AlertEvent]  # the events no silence covered, for a storm's digest
    new_digested: int  # new alerts recorded into a storm's digest, with no message of their own
    in_storm: bool

    @classmethod
    def merge(cls, batch: Sequence[Recorded]) -> Recorded:
        alerts: dict[str, Alert] = {}
        for recorded in batch:
            alerts.update(recorded.alerts)  # the latest of each alert
        return cls(
            [e for recorded in batch for e in recorded.events],
            alerts,
            [e for recorded in batch for e in recorded.counted],
            sum(recorded.new_digested for recorded in batch),
            batch[-1].in_storm if batch else False,
        )


@dataclass(frozen=True, slots=True)
class _Basis:
    """What recording is decided from, the silences and the alert chat's storm, as last read,
    with the conditions that its commit checks they still are: a replica reads them again
    only after they changed (the commit then fails as a whole, and is made again)."""

    silences: list[silences.Silence]
    storm: Storm | None
    expect: list[Op]


async def _nothing() -> None:
    return None


class AlertEngine:
    """The alert wing's face: records, delivery, storm digests and reminders, composed."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.clock = clock
        self.metrics = metrics
        self.records = AlertRecords(store, clock)
        self.owner = self.records.owner
        self.delivery = AlertDelivery(self.records, settings, notifier, metrics)
        self.storms = StormDigests(self.records, self.delivery, settings)
        self.reminders = Reminders(self.records, self.delivery, settings)
        self._basis: _Basis | None = None

    # ----------------------------------------------------------------------- where

    @property
    def chat_id(self) -> int | None:
        return chat_of(self.settings)

    @property
    def thread_id(self) -> int | None:
        return thread_of(self.settings)

    # ----------------------------------------------------------------------- ingest

    async def ingest(self, events: Sequence[AlertEvent]) -> None:
        """Record every event, then deliver what changed (see the module docstring)."""
        await self.deliver(await self.record(events))

    async def record(self, events: Sequence[AlertEvent]) -> Recorded:
        """Store the events: one commit, usually nothing read (see ``_Basis``).

        Once this returns the alerts are in the store for good. Delivering them may wait
        (``Intake``): a replica that dies first leaves them to ``tick``, which posts and
        edits what is due.
        """
        if not events:
            return Recorded([], {}, [], 0, in_storm=False)
        for attempt in range(MAX_SWAPS):
            now = self.clock()
            basis = self._basis if attempt == 0 and self._basis is not None else None
            if basis is None:
                basis = self._basis = await self._read_basis()
            in_force = [s for s in basis.silences if s.active(now)]
            in_storm = basis.storm is not None and basis.storm.active
            recorded = await self.records.record(
                events, now, in_force, in_storm, expect=basis.expect, fresh=attempt > 0
            )
            if recorded is not None:
                break
            self._basis = None
        else:
            raise RuntimeError(f"{len(events)} alert events: too many concurrent writers")
        new_digested = sum(
            1
            for before, after in recorded.values()
            if after.digested and (before is None or before.occurrence != after.occurrence)
        )
        counted = [
            e for e in events
            if silences.matching(in_force, e.target, now, e.fingerprint, e.severity) is None
        ]  # fmt: skip
        alerts = {fingerprint: after for fingerprint, (_, after) in recorded.items()}
        return Recorded(list(events), alerts, counted, new_digested, in_storm)

    async def _read_basis(self) -> _Basis:
        chat = self.chat_id
        scanned, stored = await asyncio.gather(
            self.store.scan(silences.NAMESPACE),
            self.store.get(STORMS, str(chat)) if chat is not None else _nothing(),
        )
        versions = {key: doc.version for key, doc in scanned.items()}
        expect: list[Op] = [ExpectScan(silences.NAMESPACE, versions)]
        if chat is not None:
            expect.append(Expect(STORMS, str(chat), stored.version if stored else "absent"))
        return _Basis(
            [silences.Silence.from_doc(v.value) for v in scanned.values()],
            Storm.from_doc(stored.value) if stored is not None else None,
            expect,
        )

    async def deliver(self, recorded: Recorded) -> None:
        """Post, edit, recover and digest what ``record`` stored (the outbox paces it)."""
        chat = self.chat_id
        if chat is None or not recorded.events:
            return
        in_storm = recorded.in_storm
        posts = [alert for alert in recorded.alerts.values() if alert.needs_post]
        room = Room(self.delivery, chat)
        digested = await self._deliver_new(chat, posts, in_storm, room)
        in_storm = in_storm or digested is not None
        for after in recorded.alerts.values():
            if after.message_id is not None:
                await self.delivery.edit(after, urgent_only=False)
            if after.recovery == "pending":
                await self.delivery.recover(after, in_storm, room)
        if in_storm:
            new = recorded.new_digested + len(digested or [])
            await self.storms.tally(chat, recorded.counted, new, digested or [])
            await self.storms.digest(chat)
            # The storm document changed: read it now rather than in a failed record later.
            self._basis = await self._read_basis()

    async def _deliver_new(
        self, chat: int, posts: list[Alert], in_storm: bool, room: Room
    ) -> list[Alert] | None:
        """Post new alerts, most severe first. Once the chat has no room, the storm begins
        and the rest are digested, but for critical ones the window still keeps room for:
        returns the digested alerts, or None when not in a storm."""
        digested: list[Alert] | None = None
        for alert in sorted(posts, key=lambda a: -a.severity.rank):
            if not in_storm and digested is None:
                if await room.take(spare=1):  # the last one is the digest's
                    await self.delivery.post(chat, alert)
                    continue
                await self.storms.begin(chat)
                digested = []
            if alert.severity is Severity.critical and await room.take_critical():
                await self.delivery.post(chat, alert)
                continue
            if await self.delivery.mark_digested(alert):
                digested = [*(digested or []), alert]
        return digested

    # ----------------------------------------------------------------------- tick

    async def tick(self) -> None:
        """Flush held-back edits, digests, reminders, retries and silence notices."""
        chat = self.chat_id
        in_storm = False
        if chat is not None:
            in_storm = await self.storms.tick(chat)
            await self._tick_alerts(chat, in_storm)
        await self._announce_expired(chat)
        if in_storm:  # as after a delivery in a storm
            self._basis = await self._read_basis()

    async def _tick_alerts(self, chat: int, in_storm: bool) -> None:
        now = self.clock()
        # Only the alerts with work due: in a storm, not the thousands counted into a digest.
        alerts = [
            alert
            for alert in await self.records.matching(may_have_work)
            if self._due(alert, now)
        ]
        room = Room(self.delivery, chat)
        # status edits first (resolved, acked), then retried posts, counters, reminders
        by_severity = sorted(alerts, key=lambda a: (-a.severity.rank, a.first_seen))
        for alert in by_severity:
            if self.delivery.edit_due(alert, now, urgent_only=True):
                await self.delivery.edit(alert, urgent_only=True)
        retries = [a for a in by_severity if a.needs_post]
        digested = await self._deliver_new(chat, retries, in_storm, room) if retries else None
        if digested:
            await self.storms.tally(chat, [], len(digested), digested)
        in_storm = in_storm or digested is not None
        for alert in by_severity:
            if alert.recovery == "pending":
                await self.delivery.recover(alert, in_storm, room)
        for alert in sorted(alerts, key=lambda a: a.last_edit or 0.0):
            if self.delivery.edit_due(alert, now, urgent_only=False):
                await self.delivery.edit(alert, urgent_only=False)
        if not in_storm:
            for alert in by_severity:
                if self.reminders.due(alert, now) and not await self.reminders.remind(alert, room):
                    break

    def _due(self, alert: Alert, now: float) -> bool:
        """Whether ``_tick_alerts`` has something to do for this alert now."""
        return (
            alert.needs_post
            or alert.recovery == "pending"
            or self.delivery.edit_due(alert, now, urgent_only=False) is not None
            or self.reminders.due(alert, now)
        )

    async def _announce_expired(self, chat: int | None) -> None:
        """Announce silences that ended, once across replicas, in one message; the cards
        they covered stop saying so, and what still fires unposted is posted (next tick)."""
        now = self.clock()
        ended = await silences.expire(self.store, now)
        if not ended:
            return
        ids = {silence.id for silence in ended}
        alerts = await self.records.matching(lambda doc: doc.get("silence_id") in ids)
        await self._resilence(alerts)
        if chat is None:
            return
        lines = []
        for silence in ended:
            firing = sum(1 for a in alerts if a.firing and a.silence_id == silence.id)
            note = f" — {silence.reason}" if silence.reason else ""
            still = f"; {plural(firing, 'alert')} still firing (/alerts)" if firing else ""
            by = f"by {silence.created_by}, id {silence.id}"
            lines.append(f"🔔 silence of {silence.what} ended ({by}){note}{still}")
        await self.notifier.send(chat, Reply(text="\n".join(lines)), thread_id=self.thread_id)

    async def _resilence(self, alerts: Sequence[Alert], asked: str | None = None) -> None:
        """Apply the silences now in force to these alerts and edit the cards that changed;
        ``asked``: the alert a person's tap changed (its edit goes out as their reply)."""
        now = self.clock()
        in_force = await silences.active(self.store, now)
        for alert in alerts:

            def change(current: Alert) -> Alert | str:
                covering = silences.matching(
                    in_force, current.target, now, current.fingerprint, current.severity
                )
                updated = replace(current, **silence_fields(covering))
                return "unchanged" if updated == current else updated

            result = await self.records.update(alert.id, change)
            if isinstance(result, Alert):
                await self.delivery.edit(result, urgent_only=True, asked=alert.id == asked)

    # ----------------------------------------------------------------------- people

    async def get(self, alert_id: str) -> Alert | None:
        return await self.records.get(alert_id)

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest entries of the alert-events log (each holds up to LOG_CHUNK events)."""
        return await self.records.events(limit)

    async def storm(self) -> Storm | None:
        """The alert chat's storm, while one is going on."""
        chat = self.chat_id
        storm = await self.storms.current(chat) if chat is not None else None
        return storm if storm is not None and storm.active else None

    async def ack(self, alert_id: str, person: Person | str) -> str:
        """Acknowledge: reminders stop, the message says who. Returns the toast text."""
        name = person.name if isinstance(person, Person) else str(person)
        now = self.clock()

        def change(alert: Alert) -> Alert | str:
            if not alert.firing:
                return "Already resolved."
            if alert.acked_by:
                return f"Already acked by {alert.acked_by}."
            return replace(alert, acked_by=name, acked_at=now)

        result = await self.records.update(alert_id, change)
        if isinstance(result, str):
            return result
        await self.records.note("ack", result, name, now)
        await self.delivery.edit(result, urgent_only=True, asked=True)
        return f"Acked by {name}: reminders stop."

    async def silence_alert(
        self, alert_id: str, person: Person | str, seconds: float = 3600
    ) -> str:
        """Silence this alert's identity (its fingerprint), not its target: a different
        failure of the same target is still posted. Returns the toast text."""
        name = person.name if isinstance(person, Person) else str(person)
        now = self.clock()
        alert = await self.get(alert_id)
        if alert is None:
            return "This alert is no longer known."
        current = await silences.get(self.store, alert.silence_id) if alert.silence_id else None
        if current is not None and current.active(now):
            return f"Already silenced by {current.created_by} until {hhmm(current.ends)}."
        silence = await silences.add(
            self.store, alert.target or alert.source, seconds, "", name, now=now,
            fingerprint=alert.fingerprint, alert_id=alert.id, matches=alert.identity,
            up_to=alert.severity.value,
        )  # fmt: skip
        self._basis = None
        await self._resilence([alert], asked=alert.id)
        await self.records.note("silence", alert, name, now)
        others = f" Other alerts of {alert.target} still post." if alert.target else ""
        if alert.severity is not Severity.critical:
            others += " It posts again if it turns critical."
        return (
            f"🔕 This alert ({alert.identity}) silenced for {silences.describe(seconds)}, "
            f"until {hhmm(silence.ends)}.{others}"
        )

    async def unsilence_alert(self, alert_id: str, person: Person | str) -> str:
        """End the silence shown on this alert's card. Returns the toast text."""
        alert = await self.get(alert_id)
        if alert is None:
            return "This alert is no longer known."
        if alert.silence_id is None:
            return "This alert is not silenced."
        ended = await self.unsilence(alert.silence_id, person)
        if ended is None:
            await self._resilence([alert], asked=alert.id)
            return "That silence had already ended."
        return f"🔔 Silence of {ended.what} ended: alerts post again."

    async def silence_target(
        self, target: str, seconds: float, reason: str, person: Person | str
    ) -> silences.Silence:
        """Silence every alert of ``target`` (or ``*``); the cards of its firing alerts say
        so at once."""
        now = self.clock()
        silence = await silences.add(self.store, target, seconds, reason, person, now=now)
        self._basis = None
        covered = await self.records.matching(
            lambda doc: doc.get("status") == "firing"
            and silence.covers(doc.get("target"), doc["fingerprint"], doc["severity"])
        )
        await self._resilence(covered)
        return silence

    async def unsilence(self, silence_id: str, person: Person | str) -> silences.Silence | None:
        """End a silence now (None: no such silence in force); the cards it covered stop
        saying so, and what still fires unposted is posted at the next tick."""
        ended = await silences.remove(self.store, silence_id, person, now=self.clock())
        if ended is None:
            return None
        self._basis = None
        await self._resilence(
            await self.records.matching(lambda doc: doc.get("silence_id") == ended.id)
        )
        return ended

    async def firing_where(
        self, *, source: str | None = None, pending_critical: bool = False
    ) -> list[Alert]:
        """The firing alerts of ``source`` (any), or only the critical ones nobody acked or
        silenced, read a page at a time: in a storm, not the thousands of others."""

        def keep(doc: dict[str, Any]) -> bool:
            if doc.get("status") != "firing":
                return False
            if source is not None and doc.get("source") != source:
                return False
            return not pending_critical or (
                doc.get("severity") == Severity.critical.value
                and not doc.get("acked_by")
                and not doc.get("silenced")
            )

        return await self.records.matching(keep)

    async def list(self, firing_only: bool = True, limit: int = 50) -> list[Alert]:
        """Firing alerts first (most severe, newest), then the others, newest first."""
        return await self.records.list(firing_only, limit)

    async def listing(self, firing_only: bool = True, limit: int = 50) -> Listing:
        """``list``'s first ``limit`` alerts and counts of every one (``/alerts``)."""
        return await self.records.listing(firing_only, limit)


#: The engine in ``Services``: bound by the composition root once a notifier exists.
ALERT_ENGINE: Wing[AlertEngine] = Wing("alert engine")
