"""Which image a container or compose target runs, and the registry digests it was pulled as.

A container is read through its Docker engine (inspect the container, then its image's
``RepoDigests``); a compose service through its endpoint's argv (``compose ps --format json``
for the image, ``docker image inspect`` for its digests), never through a shell.
An image built on the host and never pulled has no repo digests: then only newer tags can be
told, not a moved tag.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from opsbot.config import ComposeTarget, ContainerTarget
from opsbot.errors import OpsbotError
from opsbot.reach.targets import Runtime, container_name

#: Seconds for each command that reads a compose service's image.
COMMAND_TIMEOUT = 20.0


class NotRunning(OpsbotError):
    """The target's image cannot be read (no container, an engine that does not answer)."""


@dataclass(frozen=True, slots=True)
class Running:
    image: str  # as configured: 127.0.0.1:5000/quizbot:1.4
    digests: tuple[str, ...]  # the repo digests: 127.0.0.1:5000/quizbot@sha256:…


async def running_image(name: str, target: ContainerTarget | ComposeTarget,
                        runtime: Runtime) -> Running:  # fmt: skip
    if isinstance(target, ContainerTarget):
        return await _container(name, target, runtime)
    return await _compose(target, runtime)


async def _container(name: str, target: ContainerTarget, runtime: Runtime) -> Running:
    engine = runtime.docker(target.endpoint)
    cname = container_name(name, target)
    status = await engine.container_status(cname)
    if not status.exists or status.image is None:
        raise NotRunning(f"{name}: there is no container {cname} on {target.endpoint}")
    client = await engine.client()
    try:
        attrs = await asyncio.to_thread(client.api.inspect_image, status.image_id or status.image)
    except Exception as exc:  # the SDK's NotFound, APIError, a connection error
        raise NotRunning(f"{name}: cannot inspect the image {status.image}: "
                         f"{type(exc).__name__}") from None  # fmt: skip
    digests = attrs.get("RepoDigests") or []
    return Running(status.image, tuple(str(d) for d in digests))


async def _compose(target: ComposeTarget, runtime: Runtime) -> Running:
    executor = runtime.executor(target.endpoint)
    argv = [*target.compose_command, "-f", target.file, "ps", "--format", "json", target.service]
    result = await executor.run(argv, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        raise NotRunning(f"compose ps failed: {result.stderr.strip()[:200]}")
    text = result.stdout.strip()
    try:
        rows = (
            json.loads(text)
            if text.startswith("[")
            else [json.loads(line) for line in text.splitlines() if line.strip()]
        )
    except ValueError:
        raise NotRunning("compose ps printed no JSON") from None
    images = [str(row["Image"]) for row in rows if isinstance(row, dict) and row.get("Image")]
    if not images:
        raise NotRunning(f"the service {target.service} has no container")
    first = target.compose_command[0]
    docker = first if first.endswith("docker") else "docker"
    inspect = [docker, "image", "inspect", "--format", "{{json .RepoDigests}}", images[0]]
    result = await executor.run(inspect, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        raise NotRunning(f"docker image inspect failed: {result.stderr.strip()[:200]}")
    try:
        digests = json.loads(result.stdout.strip() or "[]") or []
    except ValueError:
        digests = []
    return Running(images[0], tuple(str(d) for d in digests))


def digests_of(running: Running, repository_name: str) -> set[str]:
    """The ``sha256:…`` digests the running image has in this repository."""
    found = set()
    for entry in running.digests:
        where, _, digest = entry.rpartition("@")
        if digest and _same_repository(where, repository_name):
            found.add(digest)
    return found


def _same_repository(a: str, b: str) -> bool:
    def plain(name: str) -> str:
        for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
            name = name.removeprefix(prefix)
        return name.removeprefix("library/")

    return plain(a) == plain(b)
