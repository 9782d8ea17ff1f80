"""Alert messages: post one per new alert, edit it in place, the recovery line.

They leave through the outbox (``opsbot.state.outbox``), which paces the chat: the engine
decides what is said, the outbox when it leaves. See ``opsbot.alerting.engine``.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import replace

from opsbot.alerting.buttons import alert_buttons
from opsbot.alerting.event import Severity
from opsbot.alerting.records import ALERTS, MAX_SWAPS, Alert, AlertRecords
from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.notify import Notifier
from opsbot.render import Reply, day_hhmm, hhmm, span
from opsbot.state.outbox import Priority
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.state.pace import WINDOW
from opsbot.state.store import JSONDoc

log = logging.getLogger(__name__)

UNPACED = 1_000_000  # the room of a chat no outbox paces (the console prints)
CRITICAL_SPARE = 4  # a critical alert in a full chat leaves three slots to replies, one to
# the storm's digest


def message_ref(*parts: object) -> int:
    """The outbox ref of the message announcing ``parts`` (an alert's id and occurrence...):
    the same on every replica, so a message queued twice (``once``) is sent once."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return 2**32 + int.from_bytes(digest[:8], "big") % 2**52


def _since(alert: Alert) -> str:
    if alert.last_seen - alert.first_seen > 20 * 3600:
        return day_hhmm(alert.first_seen)
    return hhmm(alert.first_seen)


def named(target: str | None, labels: dict[str, str]) -> str | None:
    """What an alert is about: its target, or the name a webhook gave that is not in the
    inventory (kept in its ``target`` label), rather than nothing."""
    return target or labels.get("target") or None


def alert_text(alert: Alert) -> str:
    """The alert's message; depends only on the document, so replicas render alike."""
    sev = alert.severity
    who = (named(alert.target, alert.labels) or alert.source)[:64]
    summary = alert.summary[:600] or "(no summary)"
    if alert.firing:
        lines = [f"{sev.icon} {sev.value.upper()} · {who}", summary]
        seen = f"since {_since(alert)}"
        if alert.count > 1:
            seen = f"×{alert.count} {seen} · last {hhmm(alert.last_seen)}"
    else:
        lines = [f"✅ RESOLVED · {who} (was {sev.icon} {sev.value})", summary]
        took = span((alert.resolved_at or alert.last_seen) - alert.first_seen)
        seen = f"✅ resolved after {took} · ×{alert.count} since {_since(alert)}"
    lines.append(f"{seen} · {alert.source} · id {alert.id}")
    if alert.acked_by:
        lines.append(f"👀 acked by {alert.acked_by} at {hhmm(alert.acked_at or 0)}")
    if alert.silence_id is not None:
        lines.append(silence_note(alert))
    return "\n".join(lines)


def silence_note(alert: Alert) -> str:
    """Who silenced it, until when, and how much the silence covers."""
    until = f" until {hhmm(alert.silenced_until)}" if alert.silenced_until else ""
    by = f" by {alert.silenced_by}" if alert.silenced_by else ""
    scope = {
        "alert": "this alert only",
        "target": f"every alert of {alert.target}",
        "all": "every target",
    }.get(alert.silence_scope or "", "")
    return f"🔕 silenced{by}{until}" + (f" ({scope})" if scope else "")


def alert_reply(alert: Alert, settings: Settings) -> Reply:
    return Reply(text=alert_text(alert), buttons=alert_buttons(alert, settings))


def chat_of(settings: Settings) -> int | None:
    """The chat alerts go to."""
    telegram = settings.telegram
    return settings.alerts.chat_id or telegram.incident_chat_id or telegram.ops_chat_id


def thread_of(settings: Settings) -> int | None:
    """The forum topic alerts go to, if any."""
    if settings.alerts.chat_id is not None:
        return settings.alerts.thread_id
    if settings.telegram.incident_chat_id is not None:
        return settings.alerts.thread_id or settings.telegram.incident_thread_id
    return settings.alerts.thread_id


class AlertDelivery:
    """One alert's messages in the alert chat, through the outbox.

    Every new message is queued with a ref derived from what it announces and ``once``, and
    only then recorded on the alert document (compare-and-set): replicas deciding together
    queue one message, and a replica that dies in between leaves an alert that the next
    tick posts again, without a duplicate. Edits carry the document's version as their stamp.
    """

    def __init__(
        self,
        records: AlertRecords,
        settings: Settings,
        notifier: Notifier,
        metrics: Metrics | None,
    ) -> None:
        self.records = records
        self.store = records.store
        self.clock = records.clock
        self.settings = settings
        self.notifier = notifier
        self.metrics = metrics

    @property
    def thread_id(self) -> int | None:
        return thread_of(self.settings)

    @property
    def outbox(self) -> OutboxNotifier | None:
        return self.notifier if isinstance(self.notifier, OutboxNotifier) else None

    async def room(self, chat: int, critical: bool = False) -> int:
        """New alert messages the chat takes now (``Outbox.room``, at most the alert cap);
        ``critical``: new critical alerts, which the window keeps room for beyond that."""
        out = self.outbox
        if out is None:
            return UNPACED
        if critical:
            return await out.outbox.room(chat, priority=Priority.critical)
        return await out.outbox.room(chat, self.settings.alerts.max_messages_per_minute)

    def allowance(self, seconds: float) -> int:
        """New alert messages the chat takes in ``seconds`` (a storm ends below it)."""
        cap, window = self.settings.alerts.max_messages_per_minute, WINDOW
        if (out := self.outbox) is not None:
            cap = min(cap, out.outbox.pace.limit(Priority.alert))
            window = out.outbox.pace.window
        return math.floor(cap * seconds / window)

    async def send(
        self, chat: int, reply: Reply, thread: int | None, ref: int, *, critical: bool = False
    ) -> int:
        """Queue a new message once (the outbox) or send it (a plain notifier); its ref.
        ``critical``: a new critical alert's first message, ahead of everything."""
        if (out := self.outbox) is not None:
            priority = Priority.critical if critical else None
            return await out.send(chat, reply, thread_id=thread, ref=ref, once=True,
                                  priority=priority)  # fmt: skip
        return await self.notifier.send(chat, reply, thread_id=thread)

    async def replace_text(
        self, chat: int, ref: int, reply: Reply, *, stamp: int, urgent: bool, asked: bool = False,
        priority: Priority | None = None,
    ) -> None:
        """Queue a message's newest text: what a person asked for (an ack) as a reply, a
        status change ahead of counters (or at ``priority``)."""
        if (out := self.outbox) is None:
            await self.notifier.edit(chat, ref, reply)
            return
        if priority is None:
            priority = Priority.reply if asked else Priority.alert if urgent else Priority.update
        await out.edit(chat, ref, reply, priority=priority, stamp=stamp)

    async def change(self, fingerprint: str, change: Callable[[Alert], Alert | None]) -> bool:
        """Compare-and-set on the alert document; ``change`` returning None: no write."""

        def apply(doc: JSONDoc | None) -> JSONDoc | None:
            updated = change(Alert.from_doc(doc)) if doc is not None else None
            return updated.to_doc() if updated is not None else None

        done = await self.store.update(ALERTS, fingerprint, apply, attempts=MAX_SWAPS)
        return done is not None and done.after is not None

    async def mark_digested(self, alert: Alert) -> bool:
        """In a storm a new alert gets no message: one compare-and-set."""

        def digest(current: Alert) -> Alert | None:
            if not current.needs_post or current.occurrence != alert.occurrence:
                return None
            return replace(current, digested=True)

        if await self.change(alert.fingerprint, digest):
            self.count_suppressed("storm")
            return True
        return False

    def count_suppressed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_suppressed_total.labels(reason=reason).inc()

    async def post(self, chat: int, alert: Alert) -> bool:
        """Queue the alert's message and record its ref; False when it needs none now."""
        stored = await self.store.get(ALERTS, alert.fingerprint)
        current = Alert.from_doc(stored.value) if stored else None
        if current is None or not current.needs_post:
            return False
        reply = alert_reply(current, self.settings)
        thread = self.thread_id
        ref = await self.send(chat, reply, thread, message_ref(current.id, current.occurrence),
                              critical=current.severity is Severity.critical)  # fmt: skip
        now = self.clock()

        def record(a: Alert) -> Alert | None:
            if a.occurrence != current.occurrence or a.message_id is not None:
                return None
            return replace(
                a, message_id=ref, chat_id=chat, thread_id=thread, posted_at=now, digested=False,
                shown=reply.text, shown_state=current.state, last_edit=now,
            )  # fmt: skip

        if not await self.change(alert.fingerprint, record):
            return False
        if self.metrics is not None:
            self.metrics.alerts_sent_total.inc()
        return True

    def edit_due(self, alert: Alert, now: float, urgent_only: bool) -> str | None:
        """'status' or 'counter' when the message should be edited now, else None."""
        if alert.message_id is None or alert.chat_id is None:
            return None
        if alert_text(alert) == alert.shown:
            return None
        if alert.state != alert.shown_state:
            return "status"
        interval = self.settings.alerts.edit_interval
        if urgent_only or now - (alert.last_edit or 0.0) < interval:
            return None
        return "counter"

    async def edit(self, alert: Alert, *, urgent_only: bool, asked: bool = False) -> None:
        """Queue the newest text of the alert's message if due, then record it as shown;
        ``asked``: a person's tap or command changed it (it goes out as their reply)."""
        if self.edit_due(alert, self.clock(), urgent_only) is None:
            return
        for _ in range(MAX_SWAPS):
            stored = await self.store.get(ALERTS, alert.fingerprint)
            if stored is None:
                return
            current, now = Alert.from_doc(stored.value), self.clock()
            kind = self.edit_due(current, now, urgent_only)
            if kind is None or current.message_id is None or current.chat_id is None:
                return
            reply = alert_reply(current, self.settings)
            await self.replace_text(current.chat_id, current.message_id, reply,
                                    stamp=stored.version, urgent=kind == "status",
                                    asked=asked)  # fmt: skip
            shown = replace(current, shown=reply.text, shown_state=current.state, last_edit=now)
            if await self.store.swap(ALERTS, alert.fingerprint, stored.version, shown.to_doc()):
                return

    async def recover(self, alert: Alert, in_storm: bool, room: Room) -> None:
        """The short recovery line after a resolve (not in a storm, only if the chat has
        room: the message itself turns resolved anyway)."""
        stored = await self.store.get(ALERTS, alert.fingerprint)
        current = Alert.from_doc(stored.value) if stored else None
        if current is None or current.recovery != "pending":
            return
        chat = current.chat_id
        sent = chat is not None and not in_storm and await room.take()
        if chat is not None and sent:
            who = current.target or current.source
            took = span((current.resolved_at or current.last_seen) - current.first_seen)
            count = f", ×{current.count}" if current.count > 1 else ""
            # said once: "web recovered after 1 s: http /x: HTTP 200 (2 checks in a row)", not
            # "web recovered …: web: … (recovered, 2 checks in a row)"
            summary = current.summary.removeprefix(f"{who}: ").replace("(recovered, ", "(")
            text = f"✅ {who} recovered after {took}{count}: {summary[:200]} (id {current.id})"
            ref = message_ref(current.id, current.occurrence, "recovery")
            await self.send(chat, Reply(text=text), current.thread_id, ref)

        def settle(a: Alert) -> Alert | None:
            if a.recovery != "pending" or a.occurrence != current.occurrence:
                return None
            return replace(a, recovery="sent" if sent else "skipped")

        await self.change(alert.fingerprint, settle)


class Room:
    """Whether the chat takes one more new alert message, asked of the outbox each time (so
    replicas posting at once see each other's); once full, full for the rest of the round."""

    def __init__(self, delivery: AlertDelivery, chat: int) -> None:
        self.delivery, self.chat = delivery, chat
        self.full = False

    async def take(self, spare: int = 0) -> bool:
        """True when the chat has room for one more, with ``spare`` left over after it."""
        if self.full:
            return False
        left = await self.delivery.room(self.chat)
        self.full = left <= 0
        return left > spare

    async def take_critical(self) -> bool:
        """True when a new critical alert gets a message of its own, even with the chat full
        of others (a storm): the window keeps room for it, and still for replies after it."""
        return await self.delivery.room(self.chat, critical=True) > CRITICAL_SPARE
