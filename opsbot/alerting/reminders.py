"""Reminders: an unacknowledged critical alert is posted again every ``reminder_interval``."""

from __future__ import annotations

from dataclasses import replace

from opsbot.alerting.delivery import AlertDelivery, Room, message_ref
from opsbot.alerting.event import Severity
from opsbot.alerting.records import Alert, AlertRecords
from opsbot.config import Settings
from opsbot.render import Button, Reply, span


class Reminders:
    """Queued once per due time (replicas derive the same ref), when the chat has room."""

    def __init__(self, records: AlertRecords, delivery: AlertDelivery, settings: Settings) -> None:
        self.records = records
        self.delivery = delivery
        self.clock = records.clock
        self.settings = settings

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

    async def remind(self, alert: Alert, room: Room) -> bool:
        """Remind of an unacknowledged critical alert; False when the chat has no room."""
        now = self.clock()
        if alert.chat_id is None or not self.due(alert, now):
            return True
        if not await room.take():
            return False
        last = alert.last_reminder or alert.posted_at
        who = alert.target or alert.source
        reply = Reply(
            text=(
                f"⏰ still firing after {span(now - alert.first_seen)}, not acknowledged: "
                f"{alert.severity.icon} {who}: {alert.summary[:200]} (×{alert.count}, "
                f"id {alert.id})"
            ),
            buttons=(Button("👀 Ack", f"ak:{alert.id}"),),
        )
        ref = message_ref(alert.id, alert.occurrence, "reminder", last)
        await self.delivery.send(alert.chat_id, reply, alert.thread_id, ref)

        def reminded(current: Alert) -> Alert | None:
            if current.occurrence != alert.occurrence or not self.due(current, now):
                return None
            return replace(current, last_reminder=now)

        await self.delivery.change(alert.fingerprint, reminded)
        return True
