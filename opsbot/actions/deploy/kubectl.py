"""A k8s target's deploy: ``kubectl set image deployment/D CONTAINER=REPOSITORY:VERSION``, then
``rollout status``; its undo sets the image that ran before and waits the same way. The
running image is read from the deployment's pod template (``get deployment -o json``)."""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from opsbot.actions.deploy.plans import DeployPlan, backs_up_first, backup_step
from opsbot.config import K8sTarget
from opsbot.errors import OpsbotError, UsageError
from opsbot.reach.targets import status_argv
from opsbot.updates.registry import parse_ref

if TYPE_CHECKING:
    from opsbot.services import Services


def _kubectl(target: K8sTarget) -> list[str]:
    context = ["--context", target.context] if target.context else []
    return [*target.kubectl, *context, "-n", target.namespace]


async def _containers(services: Services, name: str, target: K8sTarget) -> list[dict[str, Any]]:
    argv = status_argv(target)
    assert argv is not None
    try:
        result = await services.executor(target.endpoint).run(argv, timeout=target.timeout)
    except OpsbotError as exc:
        raise UsageError(f"{name}: cannot read deployment {target.deployment}: {exc}") from None
    if not result.ok:
        why = (result.stderr or result.stdout).strip()[:160]
        raise UsageError(f"{name}: cannot read deployment {target.deployment}: {why}")
    try:
        doc = json.loads(result.stdout)
        found = doc["spec"]["template"]["spec"]["containers"]
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{name}: kubectl printed no deployment {target.deployment}") from None
    return [c for c in found if isinstance(c, dict)]


async def plan_k8s(services: Services, name: str, target: K8sTarget, version: str) -> DeployPlan:
    containers = await _containers(services, name, target)
    if target.container is not None:
        chosen = [c for c in containers if c.get("name") == target.container]
    else:
        chosen = containers if len(containers) == 1 else []
    if not chosen:
        names = ", ".join(str(c.get("name")) for c in containers) or "none"
        raise UsageError(f"{name}: set container: to the one to deploy (the pod has: {names})")
    container, image = str(chosen[0]["name"]), str(chosen[0].get("image") or "")
    ref = parse_ref(image)
    if ref is None or ref.digest is not None:
        raise UsageError(f"{name} runs {image[:80]}: pinned, or not a tag to replace")
    new = f"{ref.name}:{version}"
    if new == image:
        raise UsageError(f"{name} runs {new} already: nothing to do")
    kubectl, deployment = _kubectl(target), f"deployment/{target.deployment}"
    wait = [*kubectl, "rollout", "status", deployment,
            f"--timeout={max(1, int(target.verify_deadline))}s"]  # fmt: skip
    command = (tuple([*kubectl, "set", "image", deployment, f"{container}={new}"]), tuple(wait))
    undo = (tuple([*kubectl, "set", "image", deployment, f"{container}={image}"]), tuple(wait))
    steps = [backup_step(target)] if backs_up_first(target) else []
    steps += [f"on {target.endpoint}: {shlex.join(argv)}" for argv in command]
    steps.append(f"checks until healthy; else back to {image}: {shlex.join(undo[0])}")
    return DeployPlan(
        "argv", name, target.endpoint, version, image, new, tuple(steps),
        backup=backs_up_first(target), commands=command, undo=undo,
        timeout=max(60.0, target.verify_deadline + 30.0),
    )  # fmt: skip
