"""pm2, systemd and command targets: ``deploy.argv`` with its ``{version}`` element replaced by
the validated version (one argv element: never an option, a path or a shell word), run on the
target's endpoint; the undo runs it again with the version that ran before."""

from __future__ import annotations

import posixpath
import shlex
from typing import TYPE_CHECKING

from opsbot.actions.deploy.plans import DeployPlan, backs_up_first, backup_step
from opsbot.actions.deploy.steps import Kind, Steps, short
from opsbot.actions.versions import history
from opsbot.config import Target
from opsbot.config.deploy import PLACEHOLDER, valid_version
from opsbot.errors import OpsbotError, UsageError

if TYPE_CHECKING:
    from opsbot.services import Services


def with_version(argv: list[str] | tuple[str, ...], version: str) -> tuple[str, ...]:
    """Each element that is exactly ``{version}`` becomes the version; nothing else changes."""
    return tuple(version if word == PLACEHOLDER else word for word in argv)


async def running_version(services: Services, name: str, target: Target) -> str | None:
    """What runs now: ``deploy.current``'s first line, else the last release recorded healthy;
    None when neither says a valid version."""
    spec = target.deploy
    assert spec is not None
    if spec.current is not None:
        try:
            result = await services.executor(target.endpoint).run(spec.current, timeout=30)
        except OpsbotError as exc:
            raise UsageError(f"{name}: cannot read the version running now: {exc}") from None
        said = (result.stdout.strip().splitlines() or [""])[0].strip()
        if not result.ok:
            why = (result.stderr or result.stdout).strip()[:120]
            raise UsageError(f"{name}: deploy.current failed (exit {result.exit_status}): {why}")
        return said if valid_version(spec, said) else None
    for version in await history(services.store, name, 10):
        if version.release and valid_version(spec, version.release):
            return version.release
    return None


async def plan_argv(services: Services, name: str, target: Target, version: str) -> DeployPlan:
    spec = target.deploy
    if spec is None or spec.argv is None:
        raise UsageError(f"{name}: a {target.kind} target deploys with deploy.argv; "
                         "none is configured")  # fmt: skip
    current = await running_version(services, name, target)
    if current == version:
        raise UsageError(f"{name} runs {version} already: nothing to do")
    command = with_version(spec.argv, version)
    undo = (with_version(spec.argv, current),) if current is not None else ()
    steps = [backup_step(target)] if backs_up_first(target) else []
    steps.append(f"on {target.endpoint}: {shlex.join(command)}")
    if undo:
        steps.append(f"checks until healthy, {target.verify_deadline:g} s at most; else back "
                     f"to {current}: {shlex.join(undo[0])}")  # fmt: skip
    else:
        steps.append(f"checks until healthy, {target.verify_deadline:g} s at most (no earlier "
                     "version known: a failure is not rolled back)")  # fmt: skip
    return DeployPlan(
        "argv", name, target.endpoint, version, current or "unknown version", version,
        tuple(steps), backup=backs_up_first(target), commands=(command,), undo=undo,
        timeout=spec.timeout,
    )  # fmt: skip


async def run_commands(
    services: Services, plan: DeployPlan, commands: tuple[tuple[str, ...], ...],
    steps: Steps, what: str, label: str = "",
) -> str | None:  # fmt: skip
    """Each command on the endpoint in turn; None when all exited 0, else why not."""
    executor = services.executor(plan.endpoint)
    for argv in commands:
        shown = shlex.join([posixpath.basename(argv[0]), *argv[1:]])  # the card has it whole
        await steps.begin(f"{what}: {shown}")
        try:
            result = await executor.run(argv, timeout=plan.timeout)
        except OpsbotError as exc:
            return steps.end(False, f"{shown}: {exc}")
        if not result.ok:
            ended = "timed out" if result.timed_out else f"exit {result.exit_status}"
            why = (result.stderr or result.stdout).strip().splitlines()
            return steps.end(False, f"{shown}: {ended}" + (f": {why[-1][:80]}" if why else ""))
        steps.end(True, f"{label}{shown} (exit 0)")
    return None


async def deploy(services: Services, plan: DeployPlan, target: Target, steps: Steps) -> str | None:
    steps.changed = True  # a command that fails may have changed the target half-way
    return await run_commands(services, plan, plan.commands, steps, "deploying")


async def undo(services: Services, plan: DeployPlan, target: Target, steps: Steps) -> str | None:
    if not plan.undo:
        return "no earlier version known to go back to"
    back = f"back to {short(plan.from_label)}: "
    return await run_commands(services, plan, plan.undo, steps, "rolling back", back)


ARGV = Kind(deploy, undo)
