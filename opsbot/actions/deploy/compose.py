"""A compose service's deploy: its image tag through an override file opsbot owns beside the
compose file (``opsbot-deploy.SERVICE.yml``), ``pull SERVICE``, ``up -d --no-deps SERVICE``;
its undo writes the image that ran before into the override and runs ``up`` again.

Nothing goes through a shell: the override is written with ``tee FILE`` from stdin, every
command is an argv. The compose file itself is never changed (a ``compose up`` without the
override goes back to what the file says: keep ``-f opsbot-deploy.SERVICE.yml`` in runbooks).
"""

from __future__ import annotations

import json
import posixpath
import shlex
from typing import TYPE_CHECKING, Any

import yaml

from opsbot.actions.deploy.plans import (
    DeployPlan,
    backs_up_first,
    backup_step,
    registry_digest,
)
from opsbot.actions.deploy.steps import Kind, Steps, short
from opsbot.config import ComposeTarget, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.updates.registry import parse_ref
from opsbot.updates.running import digests_of, running_image

if TYPE_CHECKING:
    from opsbot.services import Services


def override_path(target: ComposeTarget) -> str:
    return posixpath.join(posixpath.dirname(target.file), f"opsbot-deploy.{target.service}.yml")


def override(version: str | None, service: str, image: str) -> str:
    """The override's text: only the service's image (JSON is YAML)."""
    doc: dict[str, Any] = {"services": {service: {"image": image}}}
    if version is not None:  # compose v1 wants the same file version in every -f file
        doc = {"version": version, **doc}
    return json.dumps(doc, indent=2) + "\n"


async def _file_version(services: Services, name: str, target: ComposeTarget) -> str | None:
    try:
        result = await services.executor(target.endpoint).run(["cat", target.file], timeout=20)
        doc = yaml.safe_load(result.stdout) if result.ok else None
    except (OpsbotError, yaml.YAMLError) as exc:
        raise UsageError(f"{name}: cannot read {target.file}: {exc}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{name}: {target.file} is not a compose file")
    return None if doc.get("version") is None else str(doc["version"])


async def plan_compose(
    services: Services, name: str, target: ComposeTarget, version: str
) -> DeployPlan:
    try:
        running = await running_image(name, target, services)
    except OpsbotError as exc:
        raise UsageError(f"{name}: {exc}") from None
    ref = parse_ref(running.image)
    if ref is None or ref.digest is not None:
        raise UsageError(f"{name} runs {running.image[:80]}: pinned, or not a tag to replace")
    digest = await registry_digest(name, target.updates, running.image, version)
    new = f"{ref.name}:{version}"
    if ref.tag == version and digest in digests_of(running, ref.name):
        raise UsageError(f"{name} runs {new} already (sha256:{digest[7:19]}…): nothing to do")
    file_version = await _file_version(services, name, target)
    path = override_path(target)
    base = [*target.compose_command, "-f", target.file, "-f", path]
    pull = (*base, "pull", target.service)
    up = (*base, "up", "-d", "--no-deps", target.service)
    steps = [backup_step(target)] if backs_up_first(target) else []
    steps += [
        f"write {path}: services.{target.service}.image = {new}",
        shlex.join(pull), shlex.join(up),
        f"checks until healthy, {target.verify_deadline:g} s at most; else back to "
        f"{running.image} (the override, then up -d --no-deps)",
    ]
    return DeployPlan(
        "compose", name, target.endpoint, version, running.image, new, tuple(steps),
        backup=backs_up_first(target), commands=(pull, up), undo=(up,), digest=digest,
        timeout=max(300.0, target.verify_deadline + 30.0),
        extra={"override": path, "new": override(file_version, target.service, new),
               "old": override(file_version, target.service, running.image)},
    )  # fmt: skip


async def _run(
    services: Services, plan: DeployPlan, argv: tuple[str, ...], steps: Steps, doing: str,
    done: str, stdin: bytes | None = None,
) -> str | None:  # fmt: skip
    await steps.begin(doing)
    try:
        result = await services.executor(plan.endpoint).run(
            argv, timeout=plan.timeout, stdin=stdin
        )
    except OpsbotError as exc:
        return steps.end(False, f"{done}: {exc}")
    if not result.ok:
        ended = "timed out" if result.timed_out else f"exit {result.exit_status}"
        why = (result.stderr or result.stdout).strip().splitlines()
        return steps.end(False, f"{done}: {ended}" + (f": {why[-1][:80]}" if why else ""))
    steps.end(True, done)
    return None


async def deploy(services: Services, plan: DeployPlan, target: Target, steps: Steps) -> str | None:
    path, new = plan.extra["override"], short(plan.to_label)
    pull, up = plan.commands
    service = up[-1]
    steps.changed = True  # from the override on, a failure is undone
    wrote = f"wrote {posixpath.basename(path)}: {new}"
    return (
        await _run(services, plan, ("tee", path), steps, f"writing {path}…", wrote,
                   stdin=plan.extra["new"].encode())
        or await _run(services, plan, pull, steps, f"pulling {new}…", f"pulled {new}")
        or await _run(services, plan, up, steps, f"up -d --no-deps {service}…",
                      f"up -d --no-deps {service}")
    )  # fmt: skip


async def undo(services: Services, plan: DeployPlan, target: Target, steps: Steps) -> str | None:
    path, old = plan.extra["override"], short(plan.from_label)
    return (
        await _run(services, plan, ("tee", path), steps, f"writing {path}…",
                   f"wrote {posixpath.basename(path)}: {old}", stdin=plan.extra["old"].encode())
        or await _run(services, plan, plan.undo[0], steps, f"rolling back to {old}…",
                      f"back to {old}")
    )  # fmt: skip


COMPOSE = Kind(deploy, undo)
