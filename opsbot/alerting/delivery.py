"""Alert messages: post one per new alert, edit it in place, the recovery line.

Each Bot API call takes a slot of the chat's budget first (``opsbot.state.budget``); see
``opsbot.alerting.engine`` for the rules. A 429 pauses the chat's budget.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Awaitable
from dataclasses import replace
from datetime import timedelta
from typing import TypeVar

from opsbot.alerting.records import (
    ALERTS,
    EDIT_INTERVAL,
    MAX_FAILURES,
    MAX_SWAPS,
    Alert,
    AlertRecords,
    hhmm,
    span,
)
from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.notify import Notifier
from opsbot.render import Button, Reply
from opsbot.state.budget import ChatBudget

log = logging.getLogger(__name__)

T = TypeVar("T")


def _since(alert: Alert) -> str:
    if alert.last_seen - alert.first_seen > 20 * 3600:
        return time.strftime("%b %d %H:%M UTC", time.gmtime(alert.first_seen))
    return hhmm(alert.first_seen)


def alert_text(alert: Alert) -> str:
    """The alert's message; depends only on the document, so replicas render alike."""
    sev = alert.severity
    who = (alert.target or alert.source)[:64]
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
    if alert.silenced and alert.firing:
        until = f" until {hhmm(alert.silenced_until)}" if alert.silenced_until else ""
        lines.append(f"🔕 silenced{until}")
    return "\n".join(lines)


def alert_reply(alert: Alert, settings: Settings) -> Reply:
    buttons: list[Button] = []
    if alert.firing:
        if alert.target is not None and alert.target in settings.targets:
            buttons += [
                Button("📜 Logs", f"al:{alert.id}"),
                Button("🔄 Restart", f"ar:{alert.id}"),
            ]
        if not alert.silenced:
            buttons.append(Button("🔕 Silence 1h", f"as:{alert.id}"))
        if not alert.acked_by:
            buttons.append(Button("👀 Ack", f"ak:{alert.id}"))
        buttons.append(Button("🚨 Declare incident", f"ai:{alert.id}"))
    return Reply(text=alert_text(alert), buttons=tuple(buttons))


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
    """One alert's messages in the alert chat, within the chat's budget."""

    def __init__(
        self,
        records: AlertRecords,
        settings: Settings,
        notifier: Notifier,
        budget: ChatBudget,
        metrics: Metrics | None,
    ) -> None:
        self.records = records
        self.store = records.store
        self.clock = records.clock
        self.settings = settings
        self.notifier = notifier
        self.budget = budget
        self.metrics = metrics

    @property
    def thread_id(self) -> int | None:
        return thread_of(self.settings)

    async def call(self, chat: int, what: str, call: Awaitable[T]) -> T | None:
        """Make one Bot API call; a failure is logged (and a 429 pauses the chat)."""
        try:
            return await call
        except Exception as exc:
            with warnings.catch_warnings():  # PTB deprecates reading it as an int
                warnings.simplefilter("ignore")
                retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, timedelta):
                retry_after = retry_after.total_seconds()
            if isinstance(retry_after, int | float):
                await self.budget.pause(chat, float(retry_after))
            log.warning("alerts: %s in chat %s failed: %s", what, chat, exc)
            return None

    async def mark_digested(self, alert: Alert) -> bool:
        """In a storm a new alert gets no message: one compare-and-set, no lease needed."""
        for _ in range(MAX_SWAPS):
            stored = await self.store.get(ALERTS, alert.fingerprint)
            if stored is None:
                return False
            current = Alert.from_doc(stored.value)
            if current.leased(self.clock()) or not current.needs_post:
                return False
            marked = replace(current, digested=True)
            if await self.store.swap(ALERTS, alert.fingerprint, stored.version, marked.to_doc()):
                self.count_suppressed("storm")
                return True
        return False

    def count_suppressed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_suppressed_total.labels(reason=reason).inc()

    async def post(self, chat: int, alert: Alert) -> str:
        claimed = await self.records.claim(alert.fingerprint, lambda a: a.needs_post)
        if claimed is None:
            return "skipped"
        if not await self.budget.take(chat, "alert"):
            await self.records.settle(claimed, lambda a: replace(a, digested=True))
            self.count_suppressed("storm")
            return "no-budget"
        reply = alert_reply(claimed, self.settings)
        thread = self.thread_id
        sent = await self.call(chat, "alert", self.notifier.send(chat, reply, thread_id=thread))
        now = self.clock()
        if sent is None:
            await self.records.settle(claimed, lambda a: replace(a, failures=a.failures + 1))
            return "failed"
        await self.records.settle(
            claimed,
            lambda a: replace(
                a,
                message_id=sent,
                chat_id=chat,
                thread_id=thread,
                posted_at=now,
                shown=reply.text,
                shown_state=claimed.state,
                last_edit=now,
                failures=0,
            ),
        )
        if self.metrics is not None:
            self.metrics.alerts_sent_total.inc()
        return "posted"

    def edit_due(self, alert: Alert, now: float, urgent_only: bool) -> str | None:
        """'status' or 'counter' when the message should be edited now, else None."""
        if alert.message_id is None or alert.chat_id is None or alert.failures >= MAX_FAILURES:
            return None
        if alert_text(alert) == alert.shown:
            return None
        if alert.state != alert.shown_state:
            return "status"
        if urgent_only or now - (alert.last_edit or 0.0) < EDIT_INTERVAL:
            return None
        return "counter"

    async def edit(self, alert: Alert, *, urgent_only: bool) -> bool:
        """Edit the alert's message if due; False when the budget said no."""
        kind = self.edit_due(alert, self.clock(), urgent_only)
        if kind is None or alert.chat_id is None:
            return True
        chat = alert.chat_id
        budget = "alert" if kind == "status" else "counter"
        if not await self.budget.free(chat, budget):
            return False
        claimed = await self.records.claim(
            alert.fingerprint, lambda a: self.edit_due(a, self.clock(), urgent_only) is not None
        )
        if claimed is None or claimed.message_id is None or claimed.chat_id is None:
            return True
        if not await self.budget.take(chat, budget):
            await self.records.settle(claimed, lambda a: a)
            return False
        reply = alert_reply(claimed, self.settings)
        done = await self.call(
            chat, "edit", completed(self.notifier.edit(chat, claimed.message_id, reply))
        )
        now = self.clock()
        if done is None:
            await self.records.settle(
                claimed, lambda a: replace(a, failures=a.failures + 1, last_edit=now)
            )
        else:
            await self.records.settle(
                claimed,
                lambda a: replace(a, shown=reply.text, shown_state=claimed.state, last_edit=now),
            )
        return True

    async def recover(self, alert: Alert, in_storm: bool) -> None:
        """The short recovery line after a resolve (not in a storm, only within budget)."""
        chat = alert.chat_id
        claimed = await self.records.claim(alert.fingerprint, lambda a: a.recovery == "pending")
        if claimed is None:
            return
        if chat is None or in_storm or not await self.budget.take(chat, "alert"):
            await self.records.settle(claimed, lambda a: replace(a, recovery="skipped"))
            return
        who = claimed.target or claimed.source
        took = span((claimed.resolved_at or claimed.last_seen) - claimed.first_seen)
        count = f", ×{claimed.count}" if claimed.count > 1 else ""
        summary = claimed.summary[:200]
        reply = Reply(text=f"✅ {who} recovered after {took}{count}: {summary} (id {claimed.id})")
        sent = await self.call(
            chat, "recovery", self.notifier.send(chat, reply, thread_id=claimed.thread_id)
        )
        outcome = "sent" if sent is not None else "skipped"
        await self.records.settle(claimed, lambda a: replace(a, recovery=outcome))


async def completed(call: Awaitable[object]) -> bool:
    """True once ``call`` returned (an edit answers with nothing worth keeping)."""
    await call
    return True
