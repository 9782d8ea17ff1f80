"""Docker containers: ``docker ps -a`` and one inspect each, through the docker SDK.

A compose project's containers carry its labels (project, service, config files, the
compose version that made them). From the inspect only whether a HEALTHCHECK is defined is
kept: a container's environment, command and mounts are never copied out.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
from typing import Any

import docker.errors

from opsbot.errors import ExecutorError
from opsbot.onboarding.findings import Container, Findings
from opsbot.reach.executors.docker import DockerEngine

PROJECT = "com.docker.compose.project"
SERVICE = "com.docker.compose.service"
WORKING_DIR = "com.docker.compose.project.working_dir"
CONFIG_FILES = "com.docker.compose.project.config_files"
VERSION = "com.docker.compose.version"
#: Inspects in flight at once (the SDK's connection pool holds 10).
INSPECTS = 8


async def discover_containers(engine: DockerEngine, findings: Findings) -> None:
    try:
        client = await engine.client()
        rows: list[dict[str, Any]] = await asyncio.to_thread(client.api.containers, all=True)
    except (ExecutorError, docker.errors.DockerException, OSError) as exc:
        findings.problems.append(f"docker: {engine.where}: {_reason(exc)}")
        return
    gate = asyncio.Semaphore(INSPECTS)

    async def healthcheck(row: dict[str, Any]) -> bool:
        async with gate:
            try:
                attrs = await asyncio.to_thread(client.api.inspect_container, row["Id"])
            except (docker.errors.DockerException, OSError):
                return False  # removed meanwhile, or the engine went away: no check
        test = ((attrs.get("Config") or {}).get("Healthcheck") or {}).get("Test") or []
        return bool(test) and test != ["NONE"]

    checks = await asyncio.gather(*(healthcheck(row) for row in rows))
    for row, has_check in zip(rows, checks, strict=True):
        findings.containers.append(_container(row, has_check))


def _container(row: dict[str, Any], healthcheck: bool) -> Container:
    labels: dict[str, str] = row.get("Labels") or {}
    names = row.get("Names") or [row.get("Id", "?")[:12]]
    published = sorted(
        {
            int(p["PublicPort"])
            for p in row.get("Ports") or []
            if p.get("PublicPort") and p.get("Type", "tcp") == "tcp"
        }
    )
    project, service = labels.get(PROJECT), labels.get(SERVICE)
    compose_file = None
    if project and service:
        first = labels.get(CONFIG_FILES, "").split(",")[0].strip()
        if first:
            compose_file = posixpath.join(labels.get(WORKING_DIR, "/"), first)
    return Container(
        name=str(names[0]).lstrip("/"),
        image=str(row.get("Image", "")),
        state=str(row.get("State", "unknown")),
        healthcheck=healthcheck,
        published=tuple(published),
        compose_project=project if compose_file else None,
        compose_service=service if compose_file else None,
        compose_file=compose_file,
        compose_command=(
            ("docker-compose",)
            if labels.get(VERSION, "").startswith("1.")
            else ("docker", "compose")
        ),
    )


def _reason(exc: BaseException) -> str:
    """What went wrong in a few words: the SDK wraps the OS's reason in several layers."""
    text = str(exc).strip() or type(exc).__name__
    if "permission denied" in text.lower():
        return "permission denied on the engine's socket (is this user in the docker group?)"
    errno = re.search(r"\[Errno -?\d+\] ([^\"'()\[\]]+)", text)
    if errno:
        return f"unreachable: {errno.group(1).strip().rstrip('.').lower()}"
    text = re.sub(r"^Docker engine \S+ \(\S+\) ", "", text.splitlines()[0])
    return text if len(text) <= 160 else text[:159] + "…"
