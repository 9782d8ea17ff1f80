"""Every action opsbot performs, by name: the one table the lifecycle looks actions up in.

Restart and rollback are declared here (a ``kinds.Plan`` run and verified healthy); backup,
restore and deploy in their own packages.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from opsbot.actions import kinds
from opsbot.actions.action import Action, Outcome, Planned, Progress
from opsbot.actions.backups.action import BACKUP, RESTORE
from opsbot.actions.deploy.action import DEPLOY
from opsbot.config import Target
from opsbot.errors import UsageError

if TYPE_CHECKING:
    from opsbot.actions.approvals import Request
    from opsbot.services import Services


class _Verified(Action):
    """An action whose plan is a ``kinds.Plan``, run and then verified healthy."""

    async def run(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        planned = kinds.Plan.from_doc(request.payload["plan"])
        result = await kinds.execute(
            planned, request.target, target, services, store=services.store, progress=progress
        )
        output = "\n\n".join(p for p in (result.output, result.last_logs) if p)
        return Outcome(result.ok, result.summary, output)


def _planned(plan: kinds.Plan) -> Planned:
    return Planned(plan.steps, plan.note, {"plan": asdict(plan)})


class Restart(_Verified):
    """/restart TARGET: the kind's restart (or ``actions.restart``), then its checks."""

    name = verb = "restart"
    falls_back = True  # a failed restart's card offers a Rollback

    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        return _planned(await kinds.plan_restart(name, target, services, services.store))


class Rollback(_Verified):
    """/rollback TARGET [REVISION]: back to the last known-good version (k8s: a revision)."""

    name = verb = "rollback"

    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        revision = None
        if args:  # /rollback TARGET REVISION (k8s)
            if len(args) != 1 or not args[0].isdigit():
                raise UsageError(f"usage: /rollback {name} [list | REVISION]")
            revision = int(args[0])
        planned = await kinds.plan_rollback(
            name, target, services, services.store, revision=revision
        )
        return _planned(planned)


RESTART, ROLLBACK = Restart(), Rollback()


#: A request's ``action`` names one of these (a stored request keeps the name).
ACTIONS: dict[str, Action] = {a.name: a for a in (RESTART, ROLLBACK, BACKUP, RESTORE, DEPLOY)}


def action_of(name: str) -> Action:
    """The declared action of this name (a request filed by an older opsbot may name none)."""
    action = ACTIONS.get(name)
    if action is None:
        raise UsageError(f"unknown action {name[:32]}")
    return action
