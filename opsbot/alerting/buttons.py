"""Which buttons an alert's card offers: only those whose action exists for that alert.

A tap that cannot work is worse than no button at 3 a.m.: Logs only on a target with a log
source, Restart only on one opsbot knows how to restart, neither on a backup alert (a failed
backup or a missed RPO is not cured by restarting the service), which offers "Back up now"
instead (the same request as ``/backup TARGET``). Silence and Unsilence take turns; Ack goes
once someone acked. The Telegram layer lays them out in rows (``render.button_rows``).
"""

from __future__ import annotations

from opsbot.alerting.records import Alert
from opsbot.config import ContainerTarget, Settings, Target
from opsbot.miniapp.link import board_buttons
from opsbot.reach.targets import logs_argv
from opsbot.render import Button

#: The source of scheduled-backup and RPO alerts (``actions.backups.schedule.SOURCE``).
BACKUP_SOURCE = "backup"

LOGS = "📜 Logs"
RESTART = "🔄 Restart"
BACKUP_NOW = "💾 Back up now"
SILENCE = "🔕 Silence 1h"
UNSILENCE = "🔔 Unsilence"
ACK = "👀 Ack"
DECLARE = "🚨 Declare incident"


def has_logs(target: Target) -> bool:
    """Whether ``/logs`` can read this target (a container's own log, or an argv for it)."""
    return isinstance(target, ContainerTarget) or logs_argv(target, 1) is not None


def can_restart(target: Target) -> bool:
    """Whether ``/restart`` knows how (a command target needs ``actions.restart``)."""
    return target.kind != "command" or target.actions.restart is not None


def alert_buttons(alert: Alert, settings: Settings) -> tuple[Button, ...]:
    """The card's buttons, in the order they are laid out."""
    buttons: list[Button] = []
    target = settings.targets.get(alert.target) if alert.target is not None else None
    if alert.firing and target is not None:
        if alert.source == BACKUP_SOURCE:
            if target.backups:
                buttons.append(Button(BACKUP_NOW, f"ab:{alert.id}"))
        else:
            if has_logs(target):
                buttons.append(Button(LOGS, f"al:{alert.id}"))
            if can_restart(target):
                buttons.append(Button(RESTART, f"ar:{alert.id}"))
    if alert.silence_id is not None:
        buttons.append(Button(UNSILENCE, f"au:{alert.id}"))
    elif alert.firing:
        buttons.append(Button(SILENCE, f"as:{alert.id}"))
    if alert.firing:
        if not alert.acked_by:
            buttons.append(Button(ACK, f"ak:{alert.id}"))
        buttons.append(Button(DECLARE, f"ai:{alert.id}"))
    return (*buttons, *board_buttons(settings))
