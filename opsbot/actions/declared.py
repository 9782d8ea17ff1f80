"""Every action opsbot performs, by name: the one table the lifecycle looks actions up in."""

from __future__ import annotations

from opsbot.actions.action import Action
from opsbot.actions.backups.action import BACKUP, RESTORE
from opsbot.actions.deploy.action import DEPLOY
from opsbot.actions.restart import RESTART, ROLLBACK
from opsbot.errors import UsageError

#: A request's ``action`` names one of these (a stored request keeps the name).
ACTIONS: dict[str, Action] = {a.name: a for a in (RESTART, ROLLBACK, BACKUP, RESTORE, DEPLOY)}


def action_of(name: str) -> Action:
    """The declared action of this name (a request filed by an older opsbot may name none)."""
    action = ACTIONS.get(name)
    if action is None:
        raise UsageError(f"unknown action {name[:32]}")
    return action
