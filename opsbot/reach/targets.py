"""What each target kind means: the argv (or Docker API call) for status and logs.

Kinds come from the runbooks in ``shared/seeds``: a container on a Docker engine, a compose
service, a systemd unit, a pm2 process, a Kubernetes deployment, or a custom command. Every
action can be replaced per target by an explicit argv (``actions:`` in the config).

Arguments that come from chat (a line count) are validated integers before they get here, and
argv elements are never joined into a shell string on this side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from opsbot.config import (
    ComposeTarget,
    ContainerTarget,
    K8sTarget,
    PM2Target,
    SystemdTarget,
    Target,
)
from opsbot.reach.executors import ExecResult, Executor

if TYPE_CHECKING:  # the Docker SDK loads only for a config with a docker endpoint
    from opsbot.reach.executors.docker import DockerEngine


class State(IntEnum):
    """Health states, ordered so that ``max`` is the worst."""

    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def icon(self) -> str:
        return {State.OK: "✅", State.WARN: "⚠️", State.FAIL: "❌"}[self]


@dataclass(frozen=True, slots=True)
class Status:
    state: State
    detail: str


class Runtime(Protocol):
    """Where targets' endpoints are reached; implemented by ``services.Services``."""

    def executor(self, endpoint: str) -> Executor: ...

    def docker(self, endpoint: str) -> DockerEngine: ...


# --------------------------------------------------------------------------- argv per kind


def status_argv(target: Target) -> list[str] | None:
    """The argv whose result tells the process status, or None (container: Docker API)."""
    if target.actions.status is not None:
        return list(target.actions.status)
    match target:
        case ComposeTarget():
            return [*target.compose_command, "-f", target.file, "ps", "--all", "--format",
                    "json", target.service]  # fmt: skip
        case SystemdTarget():
            return ["systemctl", *_user(target), "is-active", target.unit]
        case PM2Target():
            return ["pm2", "jlist"]
        case K8sTarget():
            return [*_kubectl(target), "get", "deployment", target.deployment, "-o", "json"]
    return None


def logs_argv(target: Target, lines: int) -> list[str] | None:
    """The argv that tails the target's log on the remote side, or None (container)."""
    if target.actions.logs is not None:
        return [part.replace("{lines}", str(lines)) for part in target.actions.logs]
    if target.log_file is not None:
        return ["tail", "-n", str(lines), target.log_file]
    match target:
        case ComposeTarget():
            return [*target.compose_command, "-f", target.file, "logs", "--no-color",
                    "--tail", str(lines), target.service]  # fmt: skip
        case SystemdTarget():
            return ["journalctl", *_user(target), "-u", target.unit, "-n", str(lines),
                    "--no-pager", "-o", "short-iso"]  # fmt: skip
        case PM2Target():
            return ["pm2", "logs", target.process, "--nostream", "--raw", "--lines", str(lines)]
        case K8sTarget():
            container = ["-c", target.container] if target.container else []
            return [*_kubectl(target), "logs", f"deployment/{target.deployment}",
                    f"--tail={lines}", *container]  # fmt: skip
    return None


#: How many of the newest lines a filtered /logs reads before it keeps the matching ones: the
#: search is bounded, so "the last 50 errors" of a huge, quiet log is found in the last 50,000.
FILTER_SCAN_LINES = 50_000

#: The remote side of a filtered /logs: the log argv's output (stderr too, as pm2 and
#: journalctl may write there), the lines containing the filter (fixed string, any case),
#: the last N of them. The filter and N arrive as positional parameters, never as code.
FILTER_SCRIPT = 'f=$1; n=$2; shift 2; "$@" 2>&1 | grep -F -i -e "$f" | tail -n "$n"'


def filtered_logs_argv(target: Target, lines: int, needle: str) -> list[str] | None:
    """The argv that returns the last ``lines`` lines containing ``needle`` (any case) among
    the log's newest FILTER_SCAN_LINES, filtered on the remote side; None for a container's
    own log (the Docker API streams it; opsbot filters it)."""
    argv = logs_argv(target, FILTER_SCAN_LINES)
    if argv is None:
        return None
    return ["sh", "-c", FILTER_SCRIPT, "sh", needle, str(lines), *argv]


def has_log_source(target: Target) -> bool:
    """Whether /logs can read anything of this target (a Logs button would work)."""
    return isinstance(target, ContainerTarget) or logs_argv(target, 1) is not None


def can_restart(target: Target) -> bool:
    """Whether /restart knows how to restart this target (a command target needs argv)."""
    return target.actions.restart is not None or target.kind != "command"


def _user(target: SystemdTarget) -> list[str]:
    return ["--user"] if target.user_unit else []


def _kubectl(target: K8sTarget) -> list[str]:
    context = ["--context", target.context] if target.context else []
    return [*target.kubectl, *context, "-n", target.namespace]


# --------------------------------------------------------------------------- reading results


def parse_status(target: Target, result: ExecResult) -> Status:
    """Turn a status command's result into a Status, per kind."""
    if result.timed_out:
        return Status(State.FAIL, "status command timed out")
    if target.actions.status is None:
        try:
            match target:
                case ComposeTarget():
                    return _compose_status(result)
                case SystemdTarget():
                    return _systemd_status(result)
                case PM2Target():
                    return _pm2_status(target, result)
                case K8sTarget():
                    return _k8s_status(result)
        except (ValueError, KeyError, TypeError) as exc:
            return Status(State.FAIL, f"unreadable status output ({exc.__class__.__name__})")
    if result.exit_status == 0:
        return Status(State.OK, _first_line(result.stdout) or "exit 0")
    why = _first_line(result.stderr or result.stdout)
    return Status(State.FAIL, f"exit {result.exit_status}" + (f": {why}" if why else ""))


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def _compose_status(result: ExecResult) -> Status:
    if result.exit_status != 0:
        return Status(State.FAIL, f"compose ps failed: {_first_line(result.stderr)}")
    text = result.stdout.strip()
    if not text:
        return Status(State.FAIL, "service has no container")
    # Compose v2 prints one JSON object per line (newer) or one JSON array (older).
    rows = json.loads(text) if text.startswith("[") else [json.loads(x) for x in text.splitlines()]
    worst = Status(State.OK, "")
    details = []
    for row in rows:
        state, health = row.get("State", "?"), row.get("Health", "")
        details.append(f"{state}{f' ({health})' if health else ''}")
        if state != "running" or health == "unhealthy":
            worst = Status(State.FAIL, "")
        elif health == "starting" and worst.state is State.OK:
            worst = Status(State.WARN, "")
    return Status(worst.state, ", ".join(details))


def _systemd_status(result: ExecResult) -> Status:
    word = result.stdout.strip() or result.stderr.strip() or "unknown"
    if word == "active":
        return Status(State.OK, "active")
    if word in ("activating", "reloading"):
        return Status(State.WARN, word)
    return Status(State.FAIL, word)


def _pm2_status(target: PM2Target, result: ExecResult) -> Status:
    if result.exit_status != 0:
        return Status(State.FAIL, f"pm2 jlist failed: {_first_line(result.stderr)}")
    processes = [p for p in json.loads(result.stdout) if p.get("name") == target.process]
    if not processes:
        return Status(State.FAIL, f"no pm2 process named {target.process}")
    states = [p["pm2_env"]["status"] for p in processes]
    restarts = sum(int(p["pm2_env"].get("restart_time", 0)) for p in processes)
    state = State.OK if all(s == "online" for s in states) else State.FAIL
    return Status(state, f"{', '.join(states)}, {restarts} restarts")


def _k8s_status(result: ExecResult) -> Status:
    if result.exit_status != 0:
        return Status(State.FAIL, f"kubectl failed: {_first_line(result.stderr)}")
    status = json.loads(result.stdout).get("status", {})
    wanted = int(status.get("replicas", 0))
    ready = int(status.get("readyReplicas", 0))
    detail = f"{ready}/{wanted} ready"
    if wanted and ready == wanted:
        return Status(State.OK, detail)
    return Status(State.WARN if ready else State.FAIL, detail)


# --------------------------------------------------------------------------- doing it


async def process_status(name: str, target: Target, runtime: Runtime, timeout: float) -> Status:
    """The kind's own view of whether the process runs."""
    if isinstance(target, ContainerTarget) and target.actions.status is None:
        docker = runtime.docker(target.endpoint)
        status = await docker.container_status(container_name(name, target))
        if not status.exists:
            return Status(State.FAIL, "no such container")
        detail = (status.state or "unknown") + (f" ({status.health})" if status.health else "")
        detail += f", image {status.image}" if status.image else ""
        if status.state != "running" or status.health == "unhealthy":
            return Status(State.FAIL, detail)
        if status.health == "starting":
            return Status(State.WARN, detail)
        return Status(State.OK, detail)
    argv = status_argv(target)
    if argv is None:  # a command target with checks only
        return Status(State.OK, "no status command")
    result = await runtime.executor(target.endpoint).run(argv, timeout=timeout, probe=True)
    return parse_status(target, result)


async def fetch_logs(
    name: str, target: Target, runtime: Runtime, lines: int, timeout: float, needle: str = ""
) -> str:
    """The last ``lines`` lines of the target's log, tailed on the remote side; with a
    ``needle``, the last ``lines`` lines that contain it (any case), found on the remote side
    within the newest FILTER_SCAN_LINES (a container's own log: streamed, filtered here)."""
    if isinstance(target, ContainerTarget) and target.actions.logs is None and not target.log_file:
        tail = FILTER_SCAN_LINES if needle else lines
        output = await runtime.docker(target.endpoint).container_logs(
            container_name(name, target), tail=tail
        )
        return _matching(output, needle, lines) if needle else output
    argv = filtered_logs_argv(target, lines, needle) if needle else logs_argv(target, lines)
    if argv is None:
        raise LookupError(f"{name} has no log opsbot can read (no log_file or actions.logs set)")
    executor: Executor
    if isinstance(target, ContainerTarget):  # log_file or actions.logs inside the container
        executor = runtime.docker(target.endpoint).executor(container_name(name, target))
    else:
        executor = runtime.executor(target.endpoint)
    result = await executor.run(argv, timeout=timeout)
    if result.timed_out:
        raise TimeoutError(f"logs command timed out after {timeout:.0f} s")
    output = result.stdout + (result.stderr if result.stderr and not result.stdout else "")
    if result.exit_status != 0 and not result.stdout:
        raise RuntimeError(f"logs command failed (exit {result.exit_status}): {output.strip()}")
    return output


def _matching(output: str, needle: str, lines: int) -> str:
    """The last ``lines`` lines of ``output`` containing ``needle``, in any case."""
    folded = needle.casefold()
    found = [line for line in output.splitlines() if folded in line.casefold()]
    return "\n".join(found[-lines:])


def container_name(name: str, target: ContainerTarget) -> str:
    return target.container or name


# --------------------------------------------------------------------------- k8s revisions

#: The annotation Kubernetes keeps a deployment's revision number in, on each ReplicaSet.
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"


@dataclass(frozen=True, slots=True)
class Revision:
    """One revision of a deployment, as its ReplicaSet remembers it."""

    number: int
    images: tuple[str, ...]
    created: str  # the ReplicaSet's creationTimestamp (RFC 3339)
    change_cause: str  # kubernetes.io/change-cause, often empty
    current: bool

    def label(self) -> str:
        return f"revision {self.number} ({', '.join(self.images) or 'no image'})"


def revisions_argv(target: K8sTarget) -> list[str]:
    """What ``kubectl rollout history`` reads: the ReplicaSets, with their pod templates."""
    return [*_kubectl(target), "get", "replicasets", "-o", "json"]


def parse_revisions(target: K8sTarget, stdout: str) -> list[Revision]:
    """The deployment's revisions, newest first; the highest number is the one running.

    ReplicaSets are matched by their owner reference to the deployment (as kubectl does), so
    other deployments' ReplicaSets in the namespace are ignored. Raises ValueError on output
    that is not a ReplicaSet list.
    """
    document = json.loads(stdout)
    if not isinstance(document, dict) or not isinstance(document.get("items"), list):
        raise ValueError("not a list of ReplicaSets")
    found: dict[int, Revision] = {}
    for item in document["items"]:
        meta = item.get("metadata") or {}
        owners = meta.get("ownerReferences") or []
        if not any(
            o.get("kind") == "Deployment" and o.get("name") == target.deployment for o in owners
        ):
            continue
        annotations = meta.get("annotations") or {}
        number = str(annotations.get(REVISION_ANNOTATION, ""))
        if not number.isdigit():
            continue
        containers = (((item.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "containers"
        ) or []
        found[int(number)] = Revision(
            number=int(number),
            images=tuple(str(c.get("image", "?")) for c in containers),
            created=str(meta.get("creationTimestamp", "")),
            change_cause=str(annotations.get("kubernetes.io/change-cause", "")),
            current=False,
        )
    ordered = [found[n] for n in sorted(found, reverse=True)]
    if ordered:
        top = ordered[0]
        ordered[0] = Revision(top.number, top.images, top.created, top.change_cause, True)
    return ordered


async def k8s_revisions(target: K8sTarget, runtime: Runtime, timeout: float) -> list[Revision]:
    """The deployment's revisions, newest first. Raises RuntimeError if kubectl fails."""
    result = await runtime.executor(target.endpoint).run(revisions_argv(target), timeout=timeout)
    if result.timed_out:
        raise RuntimeError(f"kubectl get replicasets timed out after {timeout:.0f} s")
    if result.exit_status != 0:
        why = _first_line(result.stderr or result.stdout) or f"exit {result.exit_status}"
        raise RuntimeError(f"kubectl get replicasets failed: {why}")
    try:
        return parse_revisions(target, result.stdout)
    except (ValueError, AttributeError, TypeError) as exc:
        raise RuntimeError(f"unreadable kubectl output ({exc.__class__.__name__})") from None
