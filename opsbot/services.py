"""The typed bundle of what lies below the wings, built once from the configuration.

Nothing connects here at construction time: SSH connections and Docker clients open on first
use and are pooled; ``close`` ends them all (called from the application's shutdown).

The wings' own objects (the approvals, the alert engine, the incidents) are not built here:
the composition root (``app.py``, ``console.py``) builds them and binds each under its wing's
typed key (a :class:`Wing`, declared in the wing), so this module imports no wing.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

import httpx

from opsbot.config import DockerEndpoint, LocalEndpoint, Settings, SSHEndpoint
from opsbot.errors import ConfigError
from opsbot.metrics import Metrics
from opsbot.notify import Notifier
from opsbot.reach.checks import CHECKS_IN_FLIGHT
from opsbot.reach.executors import ExecResult, Executor
from opsbot.reach.executors.local import LocalExecutor
from opsbot.redact import Redactor
from opsbot.state.audit import Audit
from opsbot.state.outbox import Outbox, Priority
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.state.store import Store
from opsbot.state.store.factory import open_store
from opsbot.state.store.redacting import RedactingStore

if TYPE_CHECKING:  # asyncssh and the Docker SDK load only for configs that use them
    from opsbot.reach.executors.docker import DockerEngine
    from opsbot.reach.executors.ssh import SSHHost, SSHPool

log = logging.getLogger(__name__)

#: New SSH connections after which ``keep_long_lived`` freezes what lives on (see there).
FREEZE_AFTER = 100

# Room for every monitor check at once plus the chat's own /health, so no check waits here.
HTTP_LIMITS = httpx.Limits(max_connections=CHECKS_IN_FLIGHT + 128, max_keepalive_connections=128)


def local_path(path: Path) -> Path:
    """~ and $VARS expanded: ``$CREDENTIALS_DIRECTORY/ssh_key`` under systemd's LoadCredential."""
    return Path(os.path.expandvars(path)).expanduser()


def ssh_host(
    name: str, endpoint: SSHEndpoint, endpoints: Mapping[str, object] | None = None
) -> SSHHost:
    """The pool's view of an ssh endpoint; ``endpoints`` resolves its bastion (``via``)."""
    via = None
    if endpoint.via is not None:
        bastion = (endpoints or {}).get(endpoint.via)
        if not isinstance(bastion, SSHEndpoint):
            raise ConfigError(f"endpoint {name!r}: via {endpoint.via!r} is not an ssh endpoint")
        via = ssh_host(endpoint.via, bastion, endpoints)
    from opsbot.reach.executors.ssh import SSHHost

    ssh_config = endpoint.ssh_config
    # With ssh_config, a port not written in opsbot's settings comes from the ssh config.
    from_config = ssh_config is not False and "port" not in endpoint.model_fields_set
    return SSHHost(
        name=name,
        host=endpoint.host,
        port=None if from_config else endpoint.port,
        username=endpoint.user,
        client_keys=tuple(local_path(p) for p in endpoint.key_files) or None,
        known_hosts=local_path(endpoint.known_hosts) if endpoint.known_hosts else None,
        insecure_no_host_key_check=endpoint.insecure_no_host_key_check,
        connect_timeout=endpoint.connect_timeout,
        keepalive_interval=endpoint.keepalive_interval,
        max_concurrency=endpoint.max_concurrency,
        via=via,
        ssh_config=local_path(ssh_config) if isinstance(ssh_config, Path) else ssh_config,
    )


T = TypeVar("T")


class Wing(Generic[T]):
    """The typed key of one wing object in ``Services``: declared by its wing (e.g.
    ``alerting.engine.ALERTS``), bound by the composition root, read by the wing's verbs and
    the faces. Some are bound only once the bot runs (the alert engine needs a notifier)."""

    __slots__ = ("what",)

    def __init__(self, what: str) -> None:
        self.what = what

    def __repr__(self) -> str:
        return f"Wing({self.what!r})"

    def bound(self, services: Services) -> T | None:
        """The bound object, or None while nothing is bound (not yet, or not here)."""
        return cast("T | None", services._wings.get(self))

    def of(self, services: Services) -> T:
        """The bound object; binding it is the composition root's job, so a miss is a bug."""
        found = self.bound(services)
        if found is None:
            raise LookupError(f"no {self.what} bound: the composition root binds it")
        return found


@dataclass
class Services:
    settings: Settings
    redactor: Redactor
    store: Store
    audit: Audit
    http: httpx.AsyncClient
    outbox: Outbox
    local: LocalExecutor = field(default_factory=LocalExecutor)
    metrics: Metrics = field(default_factory=Metrics)
    console_notifier: Notifier | None = None  # the console's printer: it runs no outbox worker
    # Background work to stop before the pools close (the monitor's rounds), newest first.
    on_close: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _docker: dict[str, DockerEngine] = field(default_factory=dict)
    _executors: dict[str, Executor] = field(default_factory=dict)
    _ssh: SSHPool | None = None
    _wings: dict[Wing[Any], object] = field(default_factory=dict)
    _frozen_at: int = 0  # the SSH pool's connections_opened when last frozen

    @classmethod
    def build(cls, settings: Settings) -> Services:
        redactor = Redactor(settings.secrets())
        store = RedactingStore(open_store(settings), redactor)
        return cls(
            settings=settings,
            redactor=redactor,
            store=store,
            audit=Audit(store),
            http=httpx.AsyncClient(follow_redirects=False, limits=HTTP_LIMITS),
            outbox=Outbox(
                store,
                group_per_minute=settings.telegram.group_messages_per_minute,
                window=settings.telegram.group_window,
            ),
        )

    def bind(self, wing: Wing[T], value: T) -> None:
        """Bind a wing's object (the composition root's job; a second bind replaces it)."""
        self._wings[wing] = value

    def notifier(self, priority: Priority = Priority.reply) -> OutboxNotifier:
        """The one way out to the chat: the outbox, redacted, at ``priority``."""
        return OutboxNotifier(self.outbox, self.redactor, priority)

    @property
    def ssh(self) -> SSHPool:
        """The SSH connection pool, created (and asyncssh imported) on first use."""
        if self._ssh is None:
            from opsbot.reach.executors.ssh import SSHPool

            self._ssh = SSHPool()
        return self._ssh

    def keep_long_lived(self) -> None:
        """After a fan-out that opened many SSH connections (a fleet's cold /health): they live
        as long as the pool, some 260 objects each, and every full collection walked them all
        again (0.15-0.35 s a warm round at 1,000 hosts). ``gc.freeze`` moves what exists now
        out of the collector's sight; reference counting still frees it. What it costs: the
        cyclic garbage of this moment is never collected (once per burst of new connections).
        """
        opened = self._ssh.connections_opened if self._ssh is not None else 0
        if opened - self._frozen_at >= FREEZE_AFTER:
            self._frozen_at = opened
            gc.freeze()

    @property
    def backups_dir(self) -> Path:
        return self.settings.data_dir / "backups"

    @property
    def telegram_api_url(self) -> str:
        return self.settings.telegram.api_url

    def executor(self, endpoint: str) -> Executor:
        """The command executor of an ssh or local endpoint (timed for /metrics), made once:
        every check of every round asks for one."""
        made = self._executors.get(endpoint)
        if made is not None:
            return made
        endpoints = self.settings.all_endpoints
        config = endpoints.get(endpoint)
        match config:
            case SSHEndpoint():
                made = TimedExecutor(
                    self.ssh.executor(ssh_host(endpoint, config, endpoints)), self, "ssh"
                )
            case LocalEndpoint():
                made = TimedExecutor(self.local, self, "local")
            case _:
                raise ConfigError(f"endpoint {endpoint!r} cannot run commands (it is {config!r})")
        self._executors[endpoint] = made
        return made

    def docker(self, endpoint: str) -> DockerEngine:
        """The Docker engine of a docker endpoint, created once and reused."""
        engine = self._docker.get(endpoint)
        if engine is not None:
            return engine
        config = self.settings.all_endpoints.get(endpoint)
        if not isinstance(config, DockerEndpoint):
            raise ConfigError(f"endpoint {endpoint!r} is not a docker endpoint")
        from opsbot.reach.executors.docker import DockerEngine, DockerTLS

        via = None
        if config.via_ssh is not None:
            ssh_config = self.settings.all_endpoints[config.via_ssh]
            assert isinstance(ssh_config, SSHEndpoint)  # checked by Settings
            host = ssh_host(config.via_ssh, ssh_config, self.settings.all_endpoints)
            via = (self.ssh, host, config.remote_socket)
        engine = DockerEngine(
            endpoint,
            base_url=None if via else config.url,
            tls=DockerTLS.of(config.tls),
            ssh=via,
            timeout=config.timeout,
        )
        self._docker[endpoint] = engine
        return engine

    async def close(self) -> None:
        while self.on_close:
            await self.on_close.pop()()
        await self.audit.flush()
        for engine in self._docker.values():
            await engine.close()
        self._docker.clear()
        if self._ssh is not None:
            await self._ssh.close()
        await self.http.aclose()
        await self.store.close()


@dataclass(frozen=True, slots=True, repr=False)
class TimedExecutor:
    """An executor whose runs are observed in ``executor_seconds{kind}``.

    File transfers (``fetch``/``push``) pass through to the wrapped executor.
    """

    inner: Executor
    services: Services
    kind: str

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        probe: bool = False,
    ) -> ExecResult:
        with self.services.metrics.time_executor(self.kind):
            return await self.inner.run(argv, timeout=timeout, stdin=stdin, probe=probe)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __repr__(self) -> str:
        return repr(self.inner)
