"""Reminders: an unacknowledged critical alert is posted again every ``reminder_interval``."""

from __future__ import annotations

from dataclasses import replace

from opsbot.alerting.delivery import AlertDelivery
from opsbot.alerting.event import Severity
from opsbot.alerting.records import Alert, AlertRecords, span
from opsbot.config import Settings
from opsbot.render import Button, Reply
from opsbot.state.budget import ChatBudget


class Reminders:
    """Claimed like any send (one replica reminds), within the chat's budget."""

    def __init__(
        self,
        records: AlertRecords,
        delivery: AlertDelivery,
        settings: Settings,
        budget: ChatBudget,
    ) -> None:
        self.records = records
        self.delivery = delivery
        self.clock = records.clock
        self.settings = settings
        self.budget = budget

    def due(self, alert: Alert, now: float) -> bool:
        interval = self.settings.alerts.reminder_interval
        last = alert.last_reminder or alert.posted_at
        return (
            alert.firing
            and alert.severity is Severity.critical
            and not alert.acked_by
            and not alert.silenced
            and alert.message_id is not None
            and alert.chat_id is not None
            and last is not None
            and now - last >= interval
        )

    async def remind(self, alert: Alert) -> bool:
        """Remind of an unacknowledged critical alert; False when the budget said no."""
        chat = alert.chat_id
        if chat is None or not await self.budget.free(chat, "alert"):
            return False
        claimed = await self.records.claim(
            alert.fingerprint, lambda a: self.due(a, self.clock())
        )
        if claimed is None:
            return True
        if not await self.budget.take(chat, "alert"):
            await self.records.settle(claimed, lambda a: a)
            return False
        now = self.clock()
        who = claimed.target or claimed.source
        reply = Reply(
            text=(
                f"⏰ still firing after {span(now - claimed.first_seen)}, not acknowledged: "
                f"{claimed.severity.icon} {who}: {claimed.summary[:200]} (×{claimed.count}, "
                f"id {claimed.id})"
            ),
            buttons=(Button("👀 Ack", f"ak:{claimed.id}"),),
        )
        await self.delivery.call(
            chat, "reminder", self.delivery.notifier.send(chat, reply, thread_id=claimed.thread_id)
        )
        await self.records.settle(claimed, lambda a: replace(a, last_reminder=now))
        return True
