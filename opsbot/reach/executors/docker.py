"""A Docker engine reached over a unix socket, TCP+TLS, or an SSH host's forwarded socket.

The docker SDK blocks, its client constructor included (it negotiates the API version), so
every SDK call runs in a worker thread (``asyncio.to_thread``) and never on the event loop.
When the engine is reached through SSH, the SDK talks to a local unix socket that the event
loop forwards over the pooled asyncssh connection: blocking the loop there would deadlock.

The blocking stream and archive plumbing is ``docker_wire.py``; reading a container's
inspect data (status, the settings a rollback recreates it with) is ``docker_inspect.py``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import docker
import docker.errors
import docker.tls

from opsbot.errors import ExecutorError
from opsbot.reach.executors import ExecResult, argv_words
from opsbot.reach.executors.docker_inspect import (
    ContainerStatus,
    _recreate_config,
    _status_from_inspect,
)
from opsbot.reach.executors.docker_wire import (
    _describe,
    _exec_blocking,
    _fetch_archive,
    _probe_unix_socket,
    _push_archive,
)
from opsbot.reach.executors.ssh import SSHHost, SSHPool
from opsbot.reach.executors.transfer import TransferError

if TYPE_CHECKING:
    from opsbot.config import DockerTLS as TLSSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds past the in-container ``timeout`` before the reader gives up on the stream.
EXEC_GRACE = 2.0
#: Exit statuses of a command ended by ``timeout -s KILL`` (coreutils may report 124).
_KILLED_BY_TIMEOUT = (124, 137)


@dataclass(frozen=True, slots=True, kw_only=True)
class DockerTLS:
    """TLS settings of a ``tcp://host:2376`` engine (paths are PEM files)."""

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    verify: bool = True

    @classmethod
    def of(cls, settings: TLSSettings | None) -> DockerTLS | None:
        """From an endpoint's ``tls:`` settings; None for a socket or plain TCP."""
        if settings is None:
            return None
        return cls(
            ca_cert=settings.ca_cert,
            client_cert=settings.client_cert,
            client_key=settings.client_key,
            verify=settings.verify,
        )


class _APIClient(docker.APIClient):  # type: ignore[misc]
    """The SDK's client, whose TLS ``ca_cert`` is not overridden by ``REQUESTS_CA_BUNDLE``.

    requests lets that variable (set in many images, pointing at the system CAs) win over a
    session's own ``verify`` (psf/requests#3829), so a private Docker CA would never be used
    and every TLS engine would fail with "unable to get local issuer certificate".
    """

    def merge_environment_settings(
        self, url: str, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> Any:
        if verify is None:
            verify = self.verify
        return super().merge_environment_settings(url, proxies, stream, verify, cert)


class _Client(docker.DockerClient):  # type: ignore[misc]
    """``docker.DockerClient`` (whose constructor only builds ``api``) with :class:`_APIClient`."""

    def __init__(self, **kwargs: Any) -> None:
        self.api = _APIClient(**kwargs)


class DockerEngine:
    """Typed async access to one Docker engine; connects lazily on first use."""

    def __init__(
        self,
        name: str,
        base_url: str | None = None,
        *,
        tls: DockerTLS | None = None,
        ssh: tuple[SSHPool, SSHHost, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        if (base_url is None) == (ssh is None):
            raise ValueError("DockerEngine needs exactly one of base_url and ssh")
        self.name = name
        self.base_url = base_url
        self.tls = tls
        self.ssh = ssh
        self.timeout = timeout
        self._client: Any = None  # docker.DockerClient
        self._lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self._timeout_wrapper: dict[str, bool] = {}

    def __repr__(self) -> str:
        return f"DockerEngine({self.name}={self.where})"

    @property
    def where(self) -> str:
        if self.ssh is not None:
            _pool, host, path = self.ssh
            return f"ssh://{host.username}@{host.address}{path}"
        return str(self.base_url)

    def executor(self, container: str) -> DockerExecExecutor:
        return DockerExecExecutor(self, container)

    # -- connection -------------------------------------------------------------------------

    async def client(self) -> Any:
        """The SDK client, created (in a thread) on first use."""
        if self.ssh is not None:
            # Re-establishes the forward at the same path if the SSH connection was replaced.
            pool, host, remote_path = self.ssh
            await pool.forward_unix_socket(host, remote_path)
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                self._client = await asyncio.to_thread(self._make_client, await self._url())
            return self._client

    async def _url(self) -> str:
        if self.ssh is not None:
            pool, host, remote_path = self.ssh
            return f"unix://{await pool.forward_unix_socket(host, remote_path)}"
        assert self.base_url is not None
        return self.base_url

    def _make_client(self, url: str) -> Any:
        tls: Any = False
        if self.tls is not None:
            for field_name in ("ca_cert", "client_cert", "client_key"):
                path = getattr(self.tls, field_name)
                if path is not None and not os.access(path, os.R_OK):
                    raise ExecutorError(
                        f"Docker engine {self.name}: bad TLS settings: tls.{field_name} "
                        f"{path} is not a readable file"
                    )
            cert = None
            if self.tls.client_cert is not None and self.tls.client_key is not None:
                cert = (str(self.tls.client_cert), str(self.tls.client_key))
            ca = str(self.tls.ca_cert) if self.tls.ca_cert is not None else None
            try:
                tls = docker.tls.TLSConfig(client_cert=cert, ca_cert=ca, verify=self.tls.verify)
            except docker.errors.TLSParameterError as exc:
                raise ExecutorError(
                    f"Docker engine {self.name}: bad TLS settings: {_describe(exc)}"
                ) from None
        try:
            if url.startswith("unix://"):
                _probe_unix_socket(url.removeprefix("unix://"), self.timeout)
            return _Client(base_url=url, tls=tls, timeout=max(1, math.ceil(self.timeout)))
        except (docker.errors.DockerException, OSError) as exc:
            raise ExecutorError(
                f"Docker engine {self.name} ({self.where}) unreachable: {_describe(exc)}"
            ) from None

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one blocking SDK call in a thread, turning failures into ExecutorError."""
        await self.client()
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except docker.errors.NotFound:
            raise
        except docker.errors.APIError as exc:
            raise ExecutorError(
                f"Docker engine {self.name}: {what} failed: {_describe(exc)}"
            ) from None
        except (docker.errors.DockerException, OSError) as exc:
            raise ExecutorError(
                f"Docker engine {self.name} ({self.where}) unreachable: {_describe(exc)}"
            ) from None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    # -- typed operations -------------------------------------------------------------------

    async def ping(self) -> float:
        """Round-trip time of ``/_ping`` in seconds."""
        client = await self.client()
        started = time.monotonic()
        await self._call("ping", client.api.ping)
        return time.monotonic() - started

    async def container_status(self, name: str) -> ContainerStatus:
        client = await self.client()
        try:
            attrs = await self._call(f"inspect {name}", client.api.inspect_container, name)
        except docker.errors.NotFound:
            return ContainerStatus(name=name, exists=False)
        return _status_from_inspect(name, attrs)

    async def container_logs(self, name: str, tail: int, *, timestamps: bool = False) -> str:
        """The last ``tail`` lines of stdout and stderr (cut by the engine, not here)."""
        client = await self.client()
        try:
            data = await self._call(
                f"logs {name}", client.api.logs, name,
                stdout=True, stderr=True, tail=max(0, int(tail)), timestamps=timestamps,
            )  # fmt: skip
        except docker.errors.NotFound:
            raise ExecutorError(f"Docker engine {self.name}: no container {name!r}") from None
        if isinstance(data, bytes):
            return data.decode("utf-8", errors="replace")
        return str(data)

    async def restart_container(self, name: str, timeout: float = 10.0) -> None:
        """Stop (SIGTERM, SIGKILL after ``timeout`` s) and start the container again."""
        client = await self.client()
        try:
            await self._call(
                f"restart {name}", client.api.restart, name, timeout=max(0, math.ceil(timeout))
            )
        except docker.errors.NotFound:
            raise ExecutorError(f"Docker engine {self.name}: no container {name!r}") from None

    async def image_id(self, ref: str) -> str | None:
        """The id (``sha256:…``) an image reference resolves to on this engine, or None."""
        client = await self.client()
        try:
            attrs = await self._call(f"inspect image {ref}", client.api.inspect_image, ref)
        except docker.errors.NotFound:
            return None
        return str(attrs["Id"])

    async def pull(self, repository: str, tag: str) -> str:
        """``POST /images/create?fromImage=REPOSITORY&tag=TAG``; the id the tag resolves to."""
        client = await self.client()
        what = f"pull {repository}:{tag}"
        try:
            await self._call(what, _pull_blocking, client.api, repository, tag)
        except docker.errors.NotFound:
            raise ExecutorError(f"Docker engine {self.name}: {what}: not found") from None
        found = await self.image_id(f"{repository}:{tag}")
        if found is None:
            raise ExecutorError(f"Docker engine {self.name}: {what}: no image after the pull")
        return found

    async def recreate_with_image(
        self, name: str, image: str, *, stop_timeout: float = 10.0
    ) -> None:
        """Replace the container ``name`` by one running ``image``, keeping its settings.

        Kept: name, env, cmd/entrypoint (only where they were set on the container rather than
        inherited from its old image), labels, user, working dir, exposed ports, healthcheck,
        and the whole host config (binds, mounts, port bindings, network mode, restart policy,
        init...), anonymous volumes (re-attached by name) and user-defined networks.

        Steps: create the new container under a temporary name, stop the old one, rename it
        ``{name}-opsbot-old-{ts}``, rename the new one to ``name``, start it. If anything
        after the create fails, the new container is removed and the old one put back (and
        started again if it was running); ExecutorError says what happened. On success the
        old container is removed (its volumes are kept).
        """
        client = await self.client()
        api = client.api
        where = f"Docker engine {self.name}"
        try:
            attrs = await self._call(f"inspect {name}", api.inspect_container, name)
        except docker.errors.NotFound:
            raise ExecutorError(f"{where}: no container {name!r}") from None
        try:
            await self._call(f"inspect image {image}", api.inspect_image, image)
        except docker.errors.NotFound:
            raise ExecutorError(f"{where}: no image {image!r} on this engine") from None
        try:
            old_image: dict[str, Any] | None = await self._call(
                "inspect the old image", api.inspect_image, attrs["Image"]
            )
        except docker.errors.NotFound:
            old_image = None  # pruned: keep every setting as if it had been explicit
        if (attrs.get("HostConfig") or {}).get("AutoRemove"):
            raise ExecutorError(
                f"{where}: {name} was started with --rm (AutoRemove): stopping it would delete "
                "it, so it cannot be recreated in place"
            )
        config, networks = _recreate_config(attrs, old_image, image)
        old_id: str = attrs["Id"]
        was_running = bool((attrs.get("State") or {}).get("Running"))
        stamp = int(time.time())
        old_name = f"{name}-opsbot-old-{stamp}"
        created = await self._call(
            f"create a container from {image}",
            api.create_container_from_config, config, f"{name}-opsbot-new-{stamp}",
        )  # fmt: skip
        new_id: str = created["Id"]
        stopped = renamed_old = False
        try:
            for network, endpoint in networks:
                await self._call(
                    f"connect the new container to {network}",
                    api.connect_container_to_network, new_id, network, **endpoint,
                )  # fmt: skip
            await self._call(
                f"stop {name}", api.stop, old_id, timeout=max(0, math.ceil(stop_timeout))
            )
            stopped = True
            await self._call(f"rename {name}", api.rename, old_id, old_name)
            renamed_old = True
            await self._call(f"rename the new container to {name}", api.rename, new_id, name)
            await self._call(f"start {name} with {image}", api.start, new_id)
        except (ExecutorError, docker.errors.NotFound) as exc:
            why = str(exc) if isinstance(exc, ExecutorError) else f"{where}: {_describe(exc)}"
            undo = await self._put_back(api, new_id, old_id, name, renamed_old,
                                        stopped and was_running)  # fmt: skip
            raise ExecutorError(f"{why}; {undo}") from None
        try:
            await self._call(f"remove {old_name}", api.remove_container, old_id, force=True)
        except (ExecutorError, docker.errors.NotFound) as exc:
            log.warning("%s: could not remove the replaced container %s: %s", where, old_name, exc)

    async def _put_back(
        self, api: Any, new_id: str, old_id: str, name: str, renamed: bool, start: bool
    ) -> str:
        """Undo a failed recreate: drop the new container, restore the old one's name and run."""
        problems = []
        steps: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = [
            ("remove the new container", api.remove_container, (new_id,), {"force": True}),
        ]
        if renamed:
            steps.append((f"rename the old container back to {name}", api.rename,
                          (old_id, name), {}))  # fmt: skip
        if start:
            steps.append((f"start the old {name}", api.start, (old_id,), {}))
        for what, fn, args, kwargs in steps:
            try:
                await self._call(what, fn, *args, **kwargs)
            except (ExecutorError, docker.errors.NotFound) as exc:
                problems.append(f"could not {what}: {_describe(exc)}")
        if problems:
            return "putting the old container back FAILED: " + "; ".join(problems)
        return "the old container is back" + (" and running" if start else "")

    async def has_timeout_wrapper(self, container: str) -> bool:
        """Whether ``timeout -s KILL N`` works in the container (probed once, then cached)."""
        known = self._timeout_wrapper.get(container)
        if known is not None:
            return known
        async with self._probe_lock:
            known = self._timeout_wrapper.get(container)
            if known is not None:
                return known
            result = await self._exec(container, ["timeout", "-s", "KILL", "5", "true"], None,
                                      deadline_in=10.0)  # fmt: skip
            known = result.exit_status == 0
            if not known:
                log.warning(
                    "container %s on %s has no usable `timeout`: a command that times out "
                    "there is abandoned, not killed",
                    container,
                    self.name,
                )
            self._timeout_wrapper[container] = known
        return known

    async def _exec(
        self, container: str, argv: list[str], stdin: bytes | None, *, deadline_in: float
    ) -> ExecResult:
        client = await self.client()
        try:
            return await self._call(
                f"exec in {container}", _exec_blocking, client.api, container, argv, stdin,
                deadline_in,
            )  # fmt: skip
        except docker.errors.NotFound:
            raise ExecutorError(f"Docker engine {self.name}: no container {container!r}") from None


class DockerExecExecutor:
    """Runs an argv inside one container (``docker exec``, no shell, no tty)."""

    def __init__(self, engine: DockerEngine, container: str) -> None:
        self.engine = engine
        self.container = container

    def __repr__(self) -> str:
        return f"DockerExecExecutor({self.engine.name}/{self.container})"

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        probe: bool = False,
    ) -> ExecResult:
        args = argv_words(argv)
        started = time.monotonic()
        if await self.engine.has_timeout_wrapper(self.container):
            # busybox's timeout counts whole seconds; the reader waits a little longer so
            # the kill (exit 137) is what ends the stream.
            secs = max(1, math.ceil(timeout))
            wrapped = ["timeout", "-s", "KILL", str(secs), *args]
            result = await self.engine._exec(
                self.container, wrapped, stdin, deadline_in=secs + EXEC_GRACE
            )
            killed = (result.exit_status in _KILLED_BY_TIMEOUT
                      and time.monotonic() - started >= timeout)  # fmt: skip
            if killed and not result.timed_out:
                result = ExecResult(None, result.stdout, result.stderr, result.duration, True)
        else:
            result = await self.engine._exec(self.container, args, stdin, deadline_in=timeout)
        return ExecResult(
            result.exit_status, result.stdout, result.stderr,
            time.monotonic() - started, result.timed_out,
        )  # fmt: skip

    # -- FileTransfer: the engine's archive endpoints (a one-member tar stream) --------------

    async def fetch(
        self, remote_path: str, local_path: Path, *, timeout: float | None = None
    ) -> int:
        """Stream the file at ``remote_path`` in the container into ``local_path``."""
        return await self._transfer(
            f"fetch {remote_path} from {self.container}", timeout,
            _fetch_archive, self.container, remote_path, Path(local_path),
        )  # fmt: skip

    async def push(
        self, local_path: Path, remote_path: str, *, timeout: float | None = None
    ) -> int:
        """Stream ``local_path`` into the container as ``remote_path`` (its directory exists)."""
        return await self._transfer(
            f"push {remote_path} to {self.container}", timeout,
            _push_archive, self.container, Path(local_path), remote_path,
        )  # fmt: skip

    async def _transfer(
        self, what: str, timeout: float | None, fn: Callable[..., int], *args: Any
    ) -> int:
        engine = self.engine
        client = await engine.client()
        stop = threading.Event()
        try:
            async with asyncio.timeout(timeout):
                return await engine._call(what, fn, client.api, *args, stop)
        except docker.errors.NotFound as exc:
            raise TransferError(
                f"Docker engine {engine.name}: cannot {what}: {_describe(exc)}"
            ) from None
        except TimeoutError:
            raise TransferError(
                f"Docker engine {engine.name}: cannot {what}: timed out after {timeout:g} s"
            ) from None
        finally:
            stop.set()  # the worker thread abandons the copy if we gave up on it


# -- blocking helpers (run in worker threads) -------------------------------------------------


def _pull_blocking(api: Any, repository: str, tag: str) -> None:
    """The pull's progress stream read to its end; an error in it raises (as an APIError)."""
    for line in api.pull(repository, tag=tag, stream=True, decode=True):
        if isinstance(line, dict) and line.get("error"):
            raise docker.errors.APIError(str(line["error"])[:300])
