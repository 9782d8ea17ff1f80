"""A container's deploy: pull the tag, recreate the container with it; its undo: recreate
with the image id that ran before (name, env, mounts, networks, restart policy kept)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from opsbot.actions.deploy.plans import DeployPlan
from opsbot.actions.deploy.steps import Kind, Steps, short
from opsbot.config import Target
from opsbot.errors import OpsbotError

if TYPE_CHECKING:
    from opsbot.services import Services


async def deploy(services: Services, plan: DeployPlan, target: Target, steps: Steps) -> str | None:
    assert plan.container is not None and plan.repository is not None
    engine = services.docker(plan.endpoint)
    new = short(plan.image)
    status = await engine.container_status(plan.container)
    if status.image_id != plan.from_image_id:
        return f"{plan.container} changed since the plan; plan again"
    await steps.begin(f"pulling {new}…")
    try:
        image_id = await engine.pull(plan.repository, plan.version)
        client = await engine.client()
        attrs = await asyncio.to_thread(client.api.inspect_image, image_id)
    except OpsbotError as exc:
        return steps.end(False, f"pull of {new}: {exc}")
    digests = {str(d).rpartition("@")[2] for d in attrs.get("RepoDigests") or []}
    if plan.digest not in digests:
        return steps.end(False, f"{new} moved in the registry since the plan; plan again")
    steps.end(True, f"pulled {new}")
    await steps.begin(f"recreating {plan.container} with {new}…")
    try:
        await engine.recreate_with_image(plan.container, plan.image)
    except OpsbotError as exc:
        return steps.end(False, f"recreate: {exc}")
    steps.end(True, f"recreated {plan.container} with {new}")
    return None


async def undo(services: Services, plan: DeployPlan, target: Target, steps: Steps) -> str | None:
    assert plan.container is not None and plan.from_image_id is not None
    engine = services.docker(plan.endpoint)
    old = short(plan.from_label)
    ref = plan.from_image_id
    if plan.from_image and await engine.image_id(plan.from_image) == plan.from_image_id:
        ref = plan.from_image  # the tag still names the old image: the container says so
    await steps.begin(f"rolling back to {old}…")
    try:
        await engine.recreate_with_image(plan.container, ref)
    except OpsbotError as exc:
        return steps.end(False, f"rollback to {old}: {exc}")
    steps.end(True, f"back to {old}")
    return None


CONTAINER = Kind(deploy, undo)
