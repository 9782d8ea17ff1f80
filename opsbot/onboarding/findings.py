"""What a discovery found on one endpoint, as plain values (the draft is built from these).

Only names, states, labels and port numbers are kept: never a process's environment, a
file's contents or anything else a secret could be in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class PortCheck:
    """How a port answered: ``http`` (a URL that answered) or ``tcp`` (it accepted, or not)."""

    type: Literal["http", "tcp"]
    host: str
    port: int
    url: str | None = None
    status: int | None = None


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str
    state: str
    #: A Docker HEALTHCHECK is defined (its command itself is not kept).
    healthcheck: bool
    published: tuple[int, ...] = ()
    compose_project: str | None = None
    compose_service: str | None = None
    compose_file: str | None = None
    #: ``docker-compose`` (v1) or ``docker compose`` (v2), from the label that made it.
    compose_command: tuple[str, ...] = ("docker", "compose")
    checks: tuple[PortCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class PM2Process:
    name: str
    status: str
    pid: int | None
    checks: tuple[PortCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Unit:
    unit: str
    #: ``active``, ``failed``…; None where systemd does not run (only the unit file is known).
    state: str | None
    pid: int | None = None
    checks: tuple[PortCheck, ...] = ()


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    namespace: str
    replicas: int
    ready: int


@dataclass(frozen=True, slots=True)
class Listening:
    """One ``ss -ltnp`` line: where it listens and, when ss may say, which process."""

    address: str
    port: int
    process: str | None = None
    pid: int | None = None


@dataclass(slots=True)
class Findings:
    """One endpoint's discovery: what was found, and one line per thing that went wrong
    (``problems``: the exit status is non-zero) or is only worth knowing (``notes``)."""

    endpoint: str
    containers: list[Container] = field(default_factory=list)
    pm2: list[PM2Process] = field(default_factory=list)
    units: list[Unit] = field(default_factory=list)
    deployments: list[Deployment] = field(default_factory=list)
    listening: list[Listening] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def found(self) -> int:
        return len(self.containers) + len(self.pm2) + len(self.units) + len(self.deployments)
