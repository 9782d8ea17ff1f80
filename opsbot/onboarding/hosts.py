"""The executors and Docker engines a discovery reaches its endpoints with: opsbot's own
(asyncssh with host-key checking, the docker SDK, local subprocesses), opened lazily and
closed together."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from opsbot.config.targets import DockerEndpoint, LocalEndpoint, SSHEndpoint
from opsbot.onboarding.sources import Source
from opsbot.reach.executors import Executor
from opsbot.reach.executors.docker import DockerEngine, DockerTLS
from opsbot.reach.executors.local import LocalExecutor
from opsbot.reach.executors.ssh import SSHHost, SSHPool

#: Where a host's own engine listens, when it has one.
DEFAULT_SOCKET = "/var/run/docker.sock"
#: Seconds the docker SDK may take for one call.
DOCKER_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Engine:
    """A Docker engine to list, the endpoint the draft names for it, and the endpoint whose
    commands can run that engine's compose files (None: none can, e.g. a bare tcp:// URL)."""

    engine: DockerEngine
    endpoint: str
    config: dict[str, object]
    compose_endpoint: str | None


def ssh_host(name: str, config: SSHEndpoint, endpoints: Mapping[str, object]) -> SSHHost:
    """``services.ssh_host``, imported when first needed: ``services`` brings the whole
    bundle (store, approvals, outbox), a second of start-up the command line does not need."""
    from opsbot.services import ssh_host as made

    return made(name, config, endpoints)


class Hosts:
    """Reach for a discovery; ``pool``: an SSH pool to share (else one is made and closed)."""

    def __init__(self, pool: SSHPool | None = None) -> None:
        self._pool = pool
        self._own_pool = pool is None
        self._engines: list[DockerEngine] = []
        self.local = LocalExecutor()

    @property
    def pool(self) -> SSHPool:
        if self._pool is None:
            self._pool = SSHPool()
        return self._pool

    def executor(self, source: Source) -> Executor | None:
        """Commands on the source's host; None for a Docker endpoint (it runs no commands)."""
        match source.config:
            case SSHEndpoint():
                return self.pool.executor(ssh_host(source.name, source.config, source.endpoints))
            case LocalEndpoint():
                return self.local
            case _:
                return None

    def engine(self, source: Source) -> Engine:
        """A Docker endpoint's engine, or the default socket's of an ssh or local host."""
        config = source.config
        if isinstance(config, SSHEndpoint):
            host = ssh_host(source.name, config, source.endpoints)
            made = self._made(DockerEngine(
                f"{source.name}-docker", ssh=(self.pool, host, DEFAULT_SOCKET),
                timeout=DOCKER_TIMEOUT,
            ))  # fmt: skip
            as_config: dict[str, object] = {"type": "docker", "via_ssh": source.name}
            return Engine(made, f"{source.name}-docker", as_config, source.name)
        if isinstance(config, LocalEndpoint):
            made = self._made(
                DockerEngine("docker", base_url=f"unix://{DEFAULT_SOCKET}", timeout=DOCKER_TIMEOUT)
            )
            return Engine(made, "docker", {"type": "docker"}, source.name)
        assert isinstance(config, DockerEndpoint)
        compose: str | None = config.via_ssh
        via = None
        if config.via_ssh is not None:
            bastion = source.endpoints[config.via_ssh]
            assert isinstance(bastion, SSHEndpoint)  # checked by Settings
            via = (self.pool, ssh_host(config.via_ssh, bastion, source.endpoints),
                   config.remote_socket)  # fmt: skip
        elif config.url.startswith("unix://"):
            compose = "local"
        made = self._made(DockerEngine(
            source.name, base_url=None if via else config.url, ssh=via,
            tls=DockerTLS.of(config.tls), timeout=min(config.timeout, DOCKER_TIMEOUT),
        ))  # fmt: skip
        return Engine(made, source.name, endpoint_config(config), compose)

    def _made(self, engine: DockerEngine) -> DockerEngine:
        self._engines.append(engine)
        return engine

    async def close(self) -> None:
        for engine in self._engines:
            await engine.close()
        self._engines.clear()
        if self._own_pool and self._pool is not None:
            await self._pool.close()
            self._pool = None


def endpoint_config(config: SSHEndpoint | DockerEndpoint | LocalEndpoint) -> dict[str, object]:
    """An endpoint as the draft writes it: what differs from the defaults (no secrets live
    in an endpoint: keys and certificates are paths)."""
    return config.model_dump(mode="json", exclude_defaults=True) | {"type": config.type}


def address(source: Source) -> str:
    """Where opsbot reaches the source's published and listening ports."""
    config = source.config
    if isinstance(config, SSHEndpoint):
        return config.host
    if isinstance(config, DockerEndpoint):
        if config.via_ssh is not None:
            via = source.endpoints[config.via_ssh]
            return via.host if isinstance(via, SSHEndpoint) else "127.0.0.1"
        if config.url.startswith("tcp://"):
            return urlsplit(config.url).hostname or "127.0.0.1"
    return "127.0.0.1"
