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
from opsbot.reach.executors import Executor
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
    """``compose ps -q SERVICE`` (compose v1 and v2 alike), then the container's image as
    configured and its image's repo digests from ``docker inspect``."""
    executor = runtime.executor(target.endpoint)
    ps = [*target.compose_command, "-f", target.file, "ps", "-q", target.service]
    ids = (await _output(executor, ps, "compose ps")).split()
    if not ids:
        raise NotRunning(f"the service {target.service} has no container")
    docker = docker_argv(target.compose_command)
    fmt = "{{json .Config.Image}} {{json .Image}}"
    inspect = [*docker, "inspect", "--format", fmt, ids[0]]
    words = (await _output(executor, inspect, "docker inspect")).split()
    try:
        configured, image_id = (json.loads(word) for word in words)
    except ValueError:
        raise NotRunning(f"docker inspect of {ids[0][:12]} printed no image") from None
    repo = "{{json .RepoDigests}}"
    image = [*docker, "image", "inspect", "--format", repo, str(image_id)]
    digests = await _output(executor, image, "docker image inspect")
    try:
        found = json.loads(digests or "[]") or []
    except ValueError:
        found = []
    return Running(str(configured), tuple(str(d) for d in found))


async def _output(executor: Executor, argv: list[str], what: str) -> str:
    result = await executor.run(argv, timeout=COMMAND_TIMEOUT)
    if not result.ok:
        raise NotRunning(f"{what} failed: {(result.stderr or result.stdout).strip()[:200]}")
    return result.stdout.strip()


def docker_argv(compose_command: list[str]) -> list[str]:
    """The docker CLI beside the compose command, with what comes before it (``env
    DOCKER_HOST=…``): ``docker compose -p x`` → ``docker``, ``docker-compose`` → ``docker``
    (in the same directory); compose's own options after it are left out."""
    for index, word in enumerate(compose_command):
        if word == "compose" and index > 0:
            return compose_command[:index]
        if word.endswith("docker-compose"):
            return [*compose_command[:index], word.removesuffix("-compose")]
    return ["docker"]


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
