"""Every verb and button, registered: importing this imports each wing's verbs module.

The wings add their verbs to ``opsbot.verbs.registry`` when imported; this is the one place
that imports them all (the app, the console and the tests take the table from here, so it is
always whole), and it puts the verbs in the order /help and Telegram's menu show.
"""

from __future__ import annotations

from opsbot.actions import verbs as action_verbs
from opsbot.actions.backups import verbs as backup_verbs
from opsbot.actions.deploy import verbs as deploy_verbs
from opsbot.alerting import verbs as alert_verbs
from opsbot.incidents import oncall_verbs
from opsbot.incidents import verbs as incident_verbs
from opsbot.miniapp import verbs as board_verbs
from opsbot.objectives import verbs as objective_verbs
from opsbot.onboarding import verbs as onboarding_verbs
from opsbot.updates import buttons as update_buttons
from opsbot.verbs import core
from opsbot.verbs.registry import BUTTONS, VERBS, arrange, dispatch, dispatch_outcome

__all__ = ["BUTTONS", "VERBS", "WINGS", "dispatch", "dispatch_outcome"]

#: The modules whose import registers verbs and buttons.
WINGS = (
    core, action_verbs, deploy_verbs, backup_verbs, alert_verbs, incident_verbs, oncall_verbs,
    onboarding_verbs,
    board_verbs,
    objective_verbs,
    update_buttons,
)  # fmt: skip

arrange((
    "health", "logs", "restart", "rollback", "deploy", "freeze", "unfreeze", "backup", "approve",
    "deny", "backups", "audit", "alerts", "ack", "silence", "unsilence", "incident", "slo",
    "report", "latency",
    "oncall", "board", "discover", "help",
))  # fmt: skip
