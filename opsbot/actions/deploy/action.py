"""Deploy as an action: declared once (destructive, approved first, the operator's), planned
by ``plans`` and run by ``steps`` with the kind's deploy and undo."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opsbot.actions.action import Action, Outcome, Planned, Progress
from opsbot.actions.deploy import argv, compose, container, kubectl
from opsbot.actions.deploy.plans import (
    PULL_BUDGET,
    DeployPlan,
    check_version,
    plan_container,
)
from opsbot.actions.deploy.steps import Kind, run_plan, short
from opsbot.config import ComposeTarget, ContainerTarget, K8sTarget, Target
from opsbot.errors import UsageError

if TYPE_CHECKING:
    from opsbot.actions.approvals import Request
    from opsbot.services import Services

KINDS: dict[str, Kind] = {
    "container": container.CONTAINER, "argv": argv.ARGV, "compose": compose.COMPOSE,
}  # fmt: skip


class Deploy(Action):
    """/deploy TARGET VERSION: the version, verified healthy, or back to what ran before."""

    name = verb = "deploy"

    def budget(self, target: Target) -> float:
        backups = sum(spec.timeout * 2 for spec in target.backups)  # the dump, the test restore
        return 2 * target.verify_deadline + PULL_BUDGET + backups

    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        if len(args) != 1:
            raise UsageError(f"usage: /deploy {name} VERSION")
        version = args[0]
        check_version(name, target, version)
        if isinstance(target, ContainerTarget):
            plan = await plan_container(services, name, target, version)
        elif isinstance(target, K8sTarget):
            plan = await kubectl.plan_k8s(services, name, target, version)
        elif isinstance(target, ComposeTarget):
            plan = await compose.plan_compose(services, name, target, version)
        else:
            plan = await argv.plan_argv(services, name, target, version)
        versions = f"{short(plan.from_label)} → {short(plan.to_label)}"
        note = f"deploy {name} on {plan.endpoint}: {versions}"
        if plan.backup:
            note += "\nbackup first"
        return Planned(plan.steps, note, {"deploy": plan.to_doc()})

    async def run(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        plan = DeployPlan.from_doc(request.payload["deploy"])
        if plan.target != request.target or plan.endpoint != target.endpoint:
            return Outcome(False, f"the plan is for {plan.target} on {plan.endpoint}; plan again")
        return await run_plan(services, plan, target, KINDS[plan.kind], progress)


DEPLOY = Deploy()
