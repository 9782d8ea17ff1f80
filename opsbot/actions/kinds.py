"""Restart and rollback: a plan shown before anything runs, then the run, verified healthy.

``plan_restart`` / ``plan_rollback`` only read (container state, version history) and return a
:class:`Plan`: the exact argv or Docker API call, and the versions from and to, for an approval
card. ``execute`` runs exactly what the plan says (not what the configuration says by then), then
polls the target's health checks until they are all OK or ``verify_deadline`` passes.

Per kind:

============  ==================================  =========================================
kind          restart                             rollback
============  ==================================  =========================================
container     Docker API restart                  recreate with the previous known-good image
compose       ``compose -f FILE restart SERVICE``  ``actions.rollback`` only (see below)
systemd       ``systemctl [--user] restart UNIT``  ``actions.rollback`` only
pm2           ``pm2 restart PROCESS``             ``actions.rollback`` only
k8s           ``kubectl rollout restart`` + status ``kubectl rollout undo [--to-revision]``
command       ``actions.restart`` only            ``actions.rollback`` only
============  ==================================  =========================================

``actions.restart`` / ``actions.rollback`` replace the kind's default. On a container target they
run inside the container (``docker exec``), like its logs and command checks: a docker endpoint
has no shell of its own.

A compose service has no built-in rollback: its image comes from the compose file (often through
a variable such as ``${TAG}``), so swapping the running container's image behind compose's back
would be undone by the next ``compose up``. The runbook way (pin the previous tag, then
``up -d --no-deps SERVICE``) belongs in ``actions.rollback``.

Known-good versions come from ``opsbot.actions.versions``: ``execute`` records a container's
version after a verified action, and the health path calls ``observe_version`` whenever a container
target is seen healthy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from opsbot.actions.versions import Version, previous_good, record_healthy
from opsbot.config import (
    CommandTarget,
    ComposeTarget,
    ContainerTarget,
    K8sTarget,
    PM2Target,
    SystemdTarget,
    Target,
)
from opsbot.errors import OpsbotError, UsageError
from opsbot.reach.checks import CheckRuntime, TargetHealth, check_target
from opsbot.reach.executors import Executor
from opsbot.reach.targets import State, container_name, fetch_logs, k8s_revisions
from opsbot.render import ago, short_duration
from opsbot.state.store import JSONDoc, Store

if TYPE_CHECKING:  # the Docker SDK loads only for a config with a docker endpoint
    from opsbot.reach.executors.docker_inspect import ContainerStatus

log = logging.getLogger(__name__)

Progress = Callable[[str], Awaitable[None]]
Operation = Literal["docker-restart", "docker-recreate", "argv"]

#: Seconds between health polls while verifying.
POLL_INTERVAL = 0.5
#: At most one progress report per this many seconds while waiting for healthy.
PROGRESS_INTERVAL = 1.0
#: Lines of the target's log attached to a failed result.
LOG_LINES = 20
#: Budget for fetching those lines.
LOG_TIMEOUT = 10.0


@dataclass(frozen=True)
class Plan:
    """What an approval card shows, and exactly what ``execute`` will run."""

    action: str  # "restart" | "rollback"
    target: str
    endpoint: str
    steps: tuple[str, ...]  # human-readable: shlex-joined argv, or the Docker API call
    from_version: str | None
    to_version: str | None
    note: str
    operation: Operation = "argv"
    commands: tuple[tuple[str, ...], ...] = ()  # operation "argv": run in order
    container: str | None = None  # container targets: the container (argv runs inside it)
    image: str | None = None  # docker-recreate: the image reference to run
    from_image_id: str | None = None  # docker-recreate: the image id the plan was made against
    to_image_id: str | None = None  # docker-recreate: the id ``image`` must still resolve to
    command_timeout: float = 60.0  # per command

    def to_doc(self) -> JSONDoc:
        """A JSON document for the store (an approval request keeps its plan)."""
        doc = asdict(self)
        doc["steps"] = list(self.steps)
        doc["commands"] = [list(c) for c in self.commands]
        return doc

    @classmethod
    def from_doc(cls, doc: JSONDoc) -> Plan:
        values: dict[str, Any] = dict(doc)
        values["steps"] = tuple(doc["steps"])
        values["commands"] = tuple(tuple(c) for c in doc.get("commands", ()))
        if values.get("operation") not in ("docker-restart", "docker-recreate", "argv"):
            raise ValueError(f"unknown plan operation {values.get('operation')!r}")
        return cls(**values)


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    summary: str  # "healthy after 4.2 s" / "still failing after 60 s: http …: HTTP 502"
    duration: float
    output: str  # what the commands printed, for a document
    last_logs: str | None = None  # on failure: the target's last lines
    health: TargetHealth | None = field(default=None, compare=False)


# --------------------------------------------------------------------------- planning


async def plan_restart(name: str, target: Target, runtime: CheckRuntime, store: Store) -> Plan:
    """The restart of ``name``; raises UsageError if the kind cannot restart without argv."""
    del store  # a restart does not change versions
    timeout = _command_timeout(target)
    if target.actions.restart is not None:
        return _argv_plan("restart", name, target, [target.actions.restart], "its restart")
    match target:
        case ContainerTarget():
            cname = container_name(name, target)
            status = await _existing(name, target, runtime)
            step = f"Docker API restart of container {cname}"
            return Plan(
                "restart", name, target.endpoint, (step,),
                from_version=_version_of(status).label(), to_version=None,
                note=f"restart {name} on {target.endpoint}: {step} (now {_state_of(status)})",
                operation="docker-restart", container=cname, command_timeout=timeout,
            )  # fmt: skip
        case ComposeTarget():
            argv = [*target.compose_command, "-f", target.file, "restart", target.service]
            return _argv_plan("restart", name, target, [argv], f"compose service {target.service}")
        case SystemdTarget():
            argv = ["systemctl", *_user(target), "restart", target.unit]
            return _argv_plan("restart", name, target, [argv], f"systemd unit {target.unit}")
        case PM2Target():
            argv = ["pm2", "restart", target.process]
            return _argv_plan("restart", name, target, [argv], f"pm2 process {target.process}")
        case K8sTarget():
            return _k8s_rollout(
                "restart", name, target, "restart",
                f"a rolling restart of deployment {target.deployment} in {target.namespace}",
            )  # fmt: skip
        case CommandTarget():
            raise UsageError(f"{name} cannot be restarted: a command target needs actions.restart")


async def plan_rollback(
    name: str, target: Target, runtime: CheckRuntime, store: Store, revision: int | None = None
) -> Plan:
    """The rollback of ``name`` to its previous known-good version, or to ``revision`` (k8s).

    Raises UsageError when there is nothing to roll back to, or the kind has no rollback
    without ``actions.rollback``, or the revision does not exist.
    """
    if revision is not None:
        if not isinstance(target, K8sTarget) or target.actions.rollback is not None:
            raise UsageError(
                f"{name} has no revisions to pick from: only a k8s target without "
                f"actions.rollback does; use /rollback {name}"
            )
        return await _k8s_revision_rollback(name, target, runtime, revision)
    if target.actions.rollback is not None:
        return _argv_plan("rollback", name, target, [target.actions.rollback], "its rollback")
    match target:
        case ContainerTarget():
            return await _container_rollback(name, target, runtime, store)
        case K8sTarget():
            return _k8s_rollout(
                "rollback", name, target, "undo",
                f"deployment {target.deployment} back to its previous revision",
            )  # fmt: skip
        case ComposeTarget():
            raise UsageError(
                f"{name} has no rollback: a compose service's image comes from its compose "
                "file, so set actions.rollback (e.g. pin the previous tag, then up -d --no-deps)"
            )
    raise UsageError(f"{name} has no rollback: a {target.kind} target needs actions.rollback")


async def _k8s_revision_rollback(
    name: str, target: K8sTarget, runtime: CheckRuntime, revision: int
) -> Plan:
    """``rollout undo --to-revision=N``, N checked against the deployment's ReplicaSets."""
    try:
        revisions = await k8s_revisions(target, runtime, timeout=target.timeout)
    except (RuntimeError, OpsbotError) as exc:
        raise UsageError(
            f"{name}: cannot read the revisions of {target.deployment}: {exc}"
        ) from None
    wanted = next((r for r in revisions if r.number == revision), None)
    known = ", ".join(str(r.number) for r in revisions) or "none"
    if wanted is None:
        raise UsageError(
            f"deployment {target.deployment} has no revision {revision} (it has: {known}; "
            f"see /rollback {name} list)"
        )
    if wanted.current:
        raise UsageError(f"revision {revision} is the one {target.deployment} runs already")
    current = revisions[0]
    undo = [*_kubectl(target), "rollout", "undo", f"deployment/{target.deployment}",
            f"--to-revision={revision}"]  # fmt: skip
    planned = _argv_plan(
        "rollback", name, target, [undo, _rollout_status(target)],
        f"deployment {target.deployment} back to revision {revision}",
    )  # fmt: skip
    return dataclasses.replace(
        planned,
        from_version=current.label(),
        to_version=wanted.label(),
        note=f"{current.label()} → {wanted.label()}, in {target.namespace} on {target.endpoint}",
    )


async def _container_rollback(
    name: str, target: ContainerTarget, runtime: CheckRuntime, store: Store
) -> Plan:
    cname = container_name(name, target)
    status = await _existing(name, target, runtime)
    current = _version_of(status)
    good = await previous_good(store, name, status.image_id)
    if good is None or good.image_id is None:
        raise UsageError(
            f"{name} has nothing to roll back to: no known-good version other than "
            f"{current.label()} recorded yet"
        )
    docker = runtime.docker(target.endpoint)
    note = f"{current.label()} → {good.image or good.image_id}, recorded healthy "
    note += ago(time.time() - good.seen_at)
    if good.image and await docker.image_id(good.image) == good.image_id:
        ref = good.image
    elif await docker.image_id(good.image_id) == good.image_id:
        ref = good.image_id
        if good.image:
            note += f" (the tag {good.image} has moved on; running the image id)"
    else:
        raise UsageError(
            f"{name} cannot roll back to {good.label()}: that image is no longer on "
            f"{target.endpoint}"
        )
    step = (
        f"Docker API: recreate container {cname} on {target.endpoint} with image {ref} "
        "(same name, env, command, mounts, ports, network, restart policy)"
    )
    return Plan(
        "rollback", name, target.endpoint, (step,),
        from_version=current.label(), to_version=good.label(), note=note,
        operation="docker-recreate", container=cname, image=ref,
        from_image_id=status.image_id, to_image_id=good.image_id,
        command_timeout=_command_timeout(target),
    )  # fmt: skip


def _argv_plan(
    action: str, name: str, target: Target, commands: list[list[str]], what: str
) -> Plan:
    """A plan of commands; its note says it as a person would: "restart quizbot on vps-1:
    pm2 restart quizbot" (one command, shown once), or what the several commands do."""
    container = container_name(name, target) if isinstance(target, ContainerTarget) else None
    where = f"in container {container}: " if container else ""
    steps = tuple(where + shlex.join(argv) for argv in commands)
    note = f"{action} {name} on {target.endpoint}: " + (steps[0] if len(steps) == 1 else what)
    return Plan(
        action, name, target.endpoint, steps,
        from_version=None, to_version=None, note=note,
        operation="argv", commands=tuple(tuple(argv) for argv in commands),
        container=container, command_timeout=_command_timeout(target),
    )  # fmt: skip


def _k8s_rollout(action: str, name: str, target: K8sTarget, how: str, what: str) -> Plan:
    """``kubectl rollout HOW`` of the target's deployment, then its rollout status."""
    argv = [*_kubectl(target), "rollout", how, f"deployment/{target.deployment}"]
    return _argv_plan(action, name, target, [argv, _rollout_status(target)], what)


def _rollout_status(target: K8sTarget) -> list[str]:
    seconds = max(1, int(target.verify_deadline))
    return [*_kubectl(target), "rollout", "status", f"deployment/{target.deployment}",
            f"--timeout={seconds}s"]  # fmt: skip


def _command_timeout(target: Target) -> float:
    """Per command: a `rollout status` waits up to verify_deadline itself."""
    return max(60.0, target.verify_deadline + 30.0)


def _user(target: SystemdTarget) -> list[str]:
    return ["--user"] if target.user_unit else []


def _kubectl(target: K8sTarget) -> list[str]:
    context = ["--context", target.context] if target.context else []
    return [*target.kubectl, *context, "-n", target.namespace]


async def _existing(name: str, target: ContainerTarget, runtime: CheckRuntime) -> ContainerStatus:
    cname = container_name(name, target)
    status = await runtime.docker(target.endpoint).container_status(cname)
    if not status.exists:
        raise UsageError(f"{name}: there is no container {cname} on {target.endpoint}")
    return status


def _version_of(status: ContainerStatus) -> Version:
    return Version(status.image, status.image_id, None, time.time())


def _state_of(status: ContainerStatus) -> str:
    return (status.state or "unknown") + (f" ({status.health})" if status.health else "")


# --------------------------------------------------------------------------- running


async def execute(
    plan: Plan,
    name: str,
    target: Target,
    runtime: CheckRuntime,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> ActionResult:
    """Run the plan, then wait for the target to be healthy (all checks OK).

    Never raises for an operational failure: a failed command, an unreachable endpoint or a
    target that stays unhealthy is an ``ok=False`` result with the target's last log lines.
    With a ``store``, a container's version is recorded as known-good once verified.
    """
    if plan.target != name or plan.endpoint != target.endpoint:
        raise UsageError(f"the plan is for {plan.target} on {plan.endpoint}; plan again")
    started = time.monotonic()
    say = _Reporter(progress)
    verb = "restarting" if plan.action == "restart" else "rolling back"
    await say(f"{verb}…" if plan.to_version is None else f"{verb} to {plan.to_version}…")
    output: list[str] = []
    failure = await _run_plan(plan, runtime, output)
    if failure is not None:
        return ActionResult(
            False, failure, time.monotonic() - started, "\n".join(output),
            last_logs=await _last_logs(name, target, runtime),
        )  # fmt: skip
    await say("waiting for healthy…")
    verify_started = time.monotonic()
    deadline = verify_started + target.verify_deadline
    while True:
        health = await check_target(name, target, runtime)
        now = time.monotonic()
        if health.state is State.OK:
            break
        if now >= deadline:
            waited = short_duration(now - verify_started)
            return ActionResult(
                False, f"still failing after {waited}: {health.summary}", now - started,
                "\n".join(output), last_logs=await _last_logs(name, target, runtime),
                health=health,
            )  # fmt: skip
        await say(f"waiting for healthy… ({health.summary})")  # the card adds the clock
        await asyncio.sleep(min(POLL_INTERVAL, max(0.0, deadline - now)))
    duration = time.monotonic() - started
    if store is not None:
        try:
            await observe_version(name, target, runtime, store)
        except OpsbotError as exc:
            log.warning("%s: healthy, but its version was not recorded: %s", name, exc)
    summary = f"healthy after {short_duration(duration)}" + health.proof
    return ActionResult(True, summary, duration, "\n".join(output), health=health)


async def _run_plan(plan: Plan, runtime: CheckRuntime, output: list[str]) -> str | None:
    """Run the plan's steps; None when they all succeeded, else why not (one line)."""
    try:
        match plan.operation:
            case "docker-restart":
                assert plan.container is not None
                began = time.monotonic()
                engine = runtime.docker(plan.endpoint)
                await engine.restart_container(plan.container)
                output.append(f"container {plan.container} restarted in {_took(began)}")
            case "docker-recreate":
                assert plan.container is not None and plan.image is not None
                engine = runtime.docker(plan.endpoint)
                status = await engine.container_status(plan.container)
                if status.image_id != plan.from_image_id:
                    now_running = Version(status.image, status.image_id, None, 0).label()
                    return (
                        f"not rolled back: {plan.container} changed since the plan "
                        f"(it now runs {now_running}); plan again"
                    )
                if await engine.image_id(plan.image) != plan.to_image_id:
                    return (
                        f"not rolled back: the image {plan.image} is no longer the one planned "
                        f"({plan.to_version}); plan again"
                    )
                began = time.monotonic()
                await engine.recreate_with_image(plan.container, plan.image)
                output.append(f"container {plan.container} recreated in {_took(began)}")
            case "argv":
                executor: Executor
                if plan.container is not None:
                    executor = runtime.docker(plan.endpoint).executor(plan.container)
                else:
                    executor = runtime.executor(plan.endpoint)
                for argv in plan.commands:
                    result = await executor.run(argv, timeout=plan.command_timeout)
                    shown = shlex.join(argv)
                    ended = (
                        f"timed out after {plan.command_timeout:g} s"
                        if result.timed_out
                        else f"exit {result.exit_status}"
                    )
                    # One command: the card shows it already; several: say which printed what.
                    header = f"$ {shown}\n" if len(plan.commands) > 1 else ""
                    output.append(
                        f"{header}{result.stdout}{result.stderr}[{ended}, {result.duration:.1f} s]"
                    )
                    if not result.ok:
                        why = _first_line(result.stderr) or _first_line(result.stdout)
                        which = f": {shown}" if len(plan.commands) > 1 else ""
                        return f"{plan.action} command failed ({ended}){which}" + (
                            f": {why}" if why else ""
                        )
    except OpsbotError as exc:
        output.append(f"error: {exc}")
        return f"{plan.action} failed: {exc}"
    return None


async def observe_version(name: str, target: Target, runtime: CheckRuntime, store: Store) -> bool:
    """Record the running container's image as known-good; True if it was a new version.

    Call it when the target was just seen healthy. Other kinds, a container that is not
    running, or one whose image id is unknown, record nothing.
    """
    if not isinstance(target, ContainerTarget):
        return False
    status = await runtime.docker(target.endpoint).container_status(container_name(name, target))
    if not status.running or status.image_id is None:
        return False
    return await record_healthy(store, name, _version_of(status))


async def _last_logs(name: str, target: Target, runtime: CheckRuntime) -> str:
    try:
        return await fetch_logs(name, target, runtime, LOG_LINES, timeout=LOG_TIMEOUT)
    except (LookupError, TimeoutError, RuntimeError, OSError, OpsbotError) as exc:
        return f"(no logs: {exc})"


class _Reporter:
    """Calls ``progress``, at most once per PROGRESS_INTERVAL for repeated waiting notes.

    A failing progress callback (a Telegram edit refused) never stops the action.
    """

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.last = -PROGRESS_INTERVAL

    async def __call__(self, text: str) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if text.startswith("waiting for healthy… ") and now - self.last < PROGRESS_INTERVAL:
            return
        self.last = now
        try:
            await self.progress(text)
        except Exception:  # the callback is someone else's code; the action goes on
            log.exception("progress callback failed")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else ""


def _took(began: float) -> str:
    return f"{time.monotonic() - began:.1f} s"


