"""Deploy as an action: declared once (destructive, approved first, the operator's), planned
by ``plans`` (and the kinds' modules) and run by ``steps`` with the kind's deploy and undo;
held back by a change freeze or an open incident on the target unless an admin overrides."""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING

from opsbot.actions.action import Action, Outcome, Planned, Progress
from opsbot.actions.deploy import argv, compose, container, gates, history, journals, kubectl
from opsbot.actions.deploy.plans import PULL_BUDGET, DeployPlan, check_version, plan_container
from opsbot.actions.deploy.steps import Kind, resume, run_plan, short
from opsbot.config import ComposeTarget, ContainerTarget, K8sTarget, Role, Target
from opsbot.errors import UsageError

if TYPE_CHECKING:
    from opsbot.actions.approvals import Request
    from opsbot.services import Services

KINDS: dict[str, Kind] = {
    "container": container.CONTAINER, "argv": argv.ARGV, "compose": compose.COMPOSE,
}  # fmt: skip
OVERRIDE = "override"


def parse(name: str, args: tuple[str, ...]) -> tuple[str, str | None]:
    """``(VERSION)`` or ``(VERSION, "override", REASON…)`` → the version, the reason."""
    if len(args) == 1:
        return args[0], None
    if len(args) >= 3 and args[1].lower() == OVERRIDE:
        return args[0], " ".join(args[2:])[:200]
    raise UsageError(f"usage: /deploy {name} VERSION [override REASON]")


class Deploy(Action):
    """/deploy TARGET VERSION: the version, verified healthy, or back to what ran before."""

    name = verb = "deploy"
    recovers = True  # a run whose replica died finishes its checks and rolls back

    def refusal(self, role: Role, args: tuple[str, ...]) -> str | None:
        if len(args) >= 2 and args[1].lower() == OVERRIDE and not role.allows(Role.admin):
            return "a deploy's override (past a change freeze or an open incident) is an admin's"
        return None

    def budget(self, target: Target) -> float:
        backups = sum(spec.timeout * 2 for spec in target.backups)  # the dump, the test restore
        return 2 * target.verify_deadline + PULL_BUDGET + backups

    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        version, reason = parse(name, args)
        check_version(name, target, version)
        held = await gates.held_back(services, name)
        if held is not None and reason is None:
            raise UsageError(f"{name} not deployed: {held}. An admin may "
                             f"/deploy {name} {version} override REASON")  # fmt: skip
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
        if reason is not None:
            note += f"\n⚠️ override ({held or 'nothing held it back'}): {reason}"
        return Planned(plan.steps, note, {"deploy": plan.to_doc(), "override": reason})

    async def run(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        plan = DeployPlan.from_doc(request.payload["deploy"])
        if plan.target != request.target or plan.endpoint != target.endpoint:
            return Outcome(False, f"the plan is for {plan.target} on {plan.endpoint}; plan again")
        reason = request.payload.get("override")
        held = await gates.held_back(services, plan.target)
        if held is not None and reason is None:  # it began after the card was filed
            return Outcome(False, f"not deployed: {held}")
        journal = functools.partial(journals.save, services.store, request.id)
        outcome = await run_plan(services, plan, target, KINDS[plan.kind], progress, journal)
        await self._record(services, request, plan, outcome)
        return outcome

    async def recover(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        """The run's replica died: finish from its journal (checks, rollback, checks)."""
        plan = DeployPlan.from_doc(request.payload["deploy"])
        saved = await journals.load(services.store, request.id)
        journal = functools.partial(journals.save, services.store, request.id)
        kind = KINDS[plan.kind]
        outcome = await resume(services, plan, target, kind, progress, journal, saved)
        await self._record(services, request, plan, outcome)
        return outcome

    async def _record(
        self, services: Services, request: Request, plan: DeployPlan, outcome: Outcome
    ) -> None:
        reason = request.payload.get("override")
        await history.record(services.store, plan.target, {
            "at": time.time(), "who": request.requester.name,
            "approvers": [a.name for a in request.approvals], "request": request.id,
            "from": short(plan.from_label), "to": short(plan.to_label), "ok": outcome.ok,
            "outcome": _outcome(outcome), "override": reason,
        })  # fmt: skip


def _outcome(outcome: Outcome) -> str:
    if outcome.ok:
        return "healthy"
    said = outcome.summary.removeprefix("not deployed: ")
    back = said.rpartition("; ")[2]
    return back if back.startswith("back to") else said[:60]


DEPLOY = Deploy()
