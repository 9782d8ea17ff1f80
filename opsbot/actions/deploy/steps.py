"""A deploy run, step by step, each step's line with its time for the card.

Backup (verified by a test restore) → deploy → the target's checks until ``verify_deadline``
→ when not healthy, back to what ran before (a container's old image id) and its checks
again. A step that fails stops the run there; nothing after it runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from opsbot.actions.action import Outcome, Progress
from opsbot.actions.backups import methods as backup_methods
from opsbot.actions.backups.action import backup_executor
from opsbot.actions.backups.records import human_size
from opsbot.actions.backups.verify import verify_restore
from opsbot.actions.deploy.plans import DeployPlan
from opsbot.actions.kinds import POLL_INTERVAL, observe_version
from opsbot.actions.versions import Version, record_healthy
from opsbot.config import Target
from opsbot.errors import OpsbotError
from opsbot.reach.checks import TargetHealth, check_target
from opsbot.reach.targets import State
from opsbot.render import short_duration

if TYPE_CHECKING:
    from opsbot.services import Services

log = logging.getLogger(__name__)

#: A card's step line is at most this long.
LINE = 79


def short(image: str) -> str:
    """``127.0.0.1:5000/team/quizbot:2.1`` → ``quizbot:2.1``; an image id → its short id."""
    if image.startswith("sha256:"):
        return image[:19] + "…"
    return image.rsplit("/", 1)[-1]


#: Where a run keeps its phase and lines as it goes (a replica that picks it up reads them).
Journal = Callable[[dict[str, object]], Awaitable[None]]


class Steps:
    """The run's step lines (``✓ pulled quizbot:2.1 · took 127 ms``), progress as it goes,
    and, with a ``journal``, its phase and lines saved at every step."""

    def __init__(self, progress: Progress, journal: Journal | None = None) -> None:
        self.progress = progress
        self.journal = journal
        self.lines: list[str] = []
        self.phase = "backup"
        self.began = time.monotonic()
        #: The deploy got as far as changing the target: a failure from here on is undone.
        self.changed = False

    async def mark(self, phase: str) -> None:
        """backup → deploying → deployed (checks) → undoing → undone (checks)."""
        self.phase = phase
        await self._save()

    async def begin(self, doing: str) -> None:
        await self._save()
        self.began = time.monotonic()
        try:
            await self.progress(doing)
        except Exception:  # a refused card edit never stops the run
            log.exception("deploy progress failed")

    async def _save(self) -> None:
        if self.journal is None:
            return
        try:
            await self.journal({"phase": self.phase, "lines": list(self.lines)})
        except Exception as exc:  # the store is briefly away: the run goes on
            log.warning("deploy journal not saved: %s", exc)

    def end(self, ok: bool, text: str) -> str:
        tail = f" · took {short_duration(time.monotonic() - self.began)}"
        head = ("✓ " if ok else "✗ ") + text
        if len(head) + len(tail) > LINE:
            head = head[: LINE - len(tail) - 1] + "…"
        self.lines.append(head + tail)
        return text

    def outcome(self, ok: bool, summary: str) -> Outcome:
        return Outcome(ok, summary, "\n".join(self.lines))


def said(health: TargetHealth) -> str:
    """The check that decided, as a person says it: ``http /health → 404``."""
    failing = [c for c in health.checks if c.state is not State.OK]
    http = [c for c in health.checks if c.name.startswith("http ")]
    shown = (failing or http or list(health.checks))[:1]
    if not shown:
        return "no checks"
    name, detail = shown[0].name, shown[0].detail
    if name.startswith("http "):
        name = "http " + (urlsplit(name.removeprefix("http ")).path or "/")
        detail = detail.removeprefix("HTTP ")
    return f"{name} → {detail}"


async def wait_healthy(
    services: Services, name: str, target: Target, steps: Steps, what: str
) -> TargetHealth:
    """The target's checks until they are all OK or ``verify_deadline`` passes."""
    await steps.begin(f"{what}: waiting for healthy…")
    deadline = steps.began + target.verify_deadline
    while True:
        health = await check_target(name, target, services)
        now = time.monotonic()
        if health.state is State.OK or now >= deadline:
            return health
        await asyncio.sleep(min(POLL_INTERVAL, max(0.0, deadline - now)))


async def backup_first(
    services: Services, name: str, target: Target, steps: Steps
) -> bool:
    """Every configured backup, each verified by a test restore; False when one failed."""
    executor = backup_executor(services, name, target)
    for spec in target.backups:
        await steps.begin(f"backing up ({spec.type})…")
        try:
            record = await backup_methods.run_backup(
                name, spec, executor, services.store, services.backups_dir
            )
            await verify_restore(name, spec, record, executor, store=services.store)
        except OpsbotError as exc:
            steps.end(False, f"backup {spec.type}: {exc}")
            return False
        steps.end(True, f"backup {spec.type}: {human_size(record.size)}, verified")
    return True


Deployer = Callable[["Services", DeployPlan, Target, Steps], Awaitable["str | None"]]


@dataclass(frozen=True, slots=True)
class Kind:
    """How one kind deploys and goes back: each returns None when done, else why not."""

    deploy: Deployer
    undo: Deployer


async def run_plan(
    services: Services, plan: DeployPlan, target: Target, kind: Kind, progress: Progress,
    journal: Journal | None = None,
) -> Outcome:  # fmt: skip
    """Backup → deploy → checks → (rollback → checks), every step on the card."""
    steps = Steps(progress, journal)
    await steps.mark("backup")
    if plan.backup and not await backup_first(services, plan.target, target, steps):
        return steps.outcome(False, f"not deployed: the backup of {plan.target} failed")
    await steps.mark("deploying")
    failed = await kind.deploy(services, plan, target, steps)
    if failed is not None and not steps.changed:
        return steps.outcome(False, f"not deployed: {failed}")
    if failed is not None:
        return await _undo(services, plan, target, kind, steps, failed)
    await steps.mark("deployed")
    return await _verify(services, plan, target, kind, steps)


async def resume(
    services: Services, plan: DeployPlan, target: Target, kind: Kind, progress: Progress,
    journal: Journal, saved: dict[str, object] | None,
) -> Outcome:  # fmt: skip
    """A run whose replica died, from its saved phase: nothing changed yet → not deployed;
    deployed → its checks (and the rollback if they fail); during the deploy or the
    rollback → the rollback (the same image id or version again), then its checks."""
    steps = Steps(progress, journal)
    lines = (saved or {}).get("lines")
    steps.lines = [str(x) for x in lines] if isinstance(lines, list) else []
    phase = str((saved or {}).get("phase") or "backup")
    steps.lines.append("⚠ opsbot stopped here; another opsbot took the run over")
    if phase == "backup":
        return steps.outcome(False, "not deployed: opsbot stopped before the deploy began")
    if phase == "deployed":
        await steps.mark("deployed")
        return await _verify(services, plan, target, kind, steps)
    why = "opsbot stopped during the " + ("deploy" if phase == "deploying" else "rollback")
    return await _undo(services, plan, target, kind, steps, why)


async def _verify(
    services: Services, plan: DeployPlan, target: Target, kind: Kind, steps: Steps
) -> Outcome:
    new = short(plan.to_label)
    health = await wait_healthy(services, plan.target, target, steps, f"deployed {new}")
    if health.state is State.OK:
        steps.end(True, f"healthy: {said(health)}")
        await _record(services, plan, target)
        return steps.outcome(True, f"deployed {new}: healthy ({said(health)})")
    steps.end(False, f"still failing: {said(health)}")
    return await _undo(services, plan, target, kind, steps,
                       f"{new} failed its checks ({said(health)})")  # fmt: skip


async def _undo(
    services: Services, plan: DeployPlan, target: Target, kind: Kind, steps: Steps, why: str
) -> Outcome:
    old = short(plan.from_label)
    await steps.mark("undoing")
    undone = await kind.undo(services, plan, target, steps)
    if undone is not None:
        return steps.outcome(False, f"not deployed: {why}; rollback FAILED: {undone}")
    await steps.mark("undone")
    again = await wait_healthy(services, plan.target, target, steps, f"back to {old}")
    if again.state is State.OK:
        steps.end(True, "healthy again")
        return steps.outcome(False, f"not deployed: {why}; back to {old}, healthy again")
    steps.end(False, f"still failing after the rollback: {said(again)}")
    return steps.outcome(False, f"not deployed: {why}; back to {old}, STILL FAILING")


async def _record(services: Services, plan: DeployPlan, target: Target) -> None:
    """The new version as known-good: a container's image, another kind's release."""
    try:
        if plan.kind == "container":
            await observe_version(plan.target, target, services, services.store)
        else:
            release = Version(None, None, plan.version, time.time())
            await record_healthy(services.store, plan.target, release)
    except OpsbotError as exc:
        log.warning("%s: deployed and healthy, but its version was not recorded: %s",
                    plan.target, exc)  # fmt: skip
