"""A Docker engine reached over a unix socket, TCP+TLS, or an SSH host's forwarded socket.

The docker SDK blocks, its client constructor included (it negotiates the API version), so
every SDK call runs in a worker thread (``asyncio.to_thread``) and never on the event loop.
When the engine is reached through SSH, the SDK talks to a local unix socket that the event
loop forwards over the pooled asyncssh connection: blocking the loop there would deadlock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import posixpath
import socket
import ssl
import struct
import tarfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import docker
import docker.errors
import docker.tls

from opsbot.errors import ExecutorError
from opsbot.reach.executors import ExecResult
from opsbot.reach.executors.ssh import SSHHost, SSHPool
from opsbot.reach.executors.transfer import CHUNK_SIZE, TransferError, temp_beside

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


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    name: str
    exists: bool
    state: str | None = None  # created, running, paused, restarting, exited, dead
    health: str | None = None  # healthy, unhealthy, starting; None without a healthcheck
    image: str | None = None  # as configured, e.g. "quizbot:1.4"
    image_id: str | None = None
    started_at: datetime | None = None
    restart_count: int = 0
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


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
        args = [str(a) for a in argv]
        if not args:
            raise ValueError("argv must not be empty")
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


def _exec_blocking(
    api: Any, container: str, argv: list[str], stdin: bytes | None, deadline_in: float
) -> ExecResult:
    """Create and start an exec, feed stdin, demultiplex its output until EOF or deadline.

    This reads the upgraded HTTP connection itself rather than through ``exec_run``: that
    gives a deadline, stdin, and reading through the HTTP response's buffer, so output that
    arrived together with the response headers is not lost.
    """
    started = time.monotonic()
    deadline = started + deadline_in
    exec_id = api.exec_create(
        container, argv, stdout=True, stderr=True, stdin=stdin is not None, tty=False
    )["Id"]
    response = api._post_json(
        api._url("/exec/{0}/start", exec_id),
        headers={"Connection": "Upgrade", "Upgrade": "tcp"},
        data={"Tty": False, "Detach": False},
        stream=True,
    )
    try:
        api._raise_for_status(response)
        reader = response.raw._fp.fp  # BufferedReader over the hijacked connection
        raw = reader.raw
        sock: socket.socket = getattr(raw, "_sock", raw)
        feeder = None
        if stdin is not None:
            feeder = threading.Thread(target=_feed, args=(sock, stdin), daemon=True)
            feeder.start()
        out, err, timed_out = _demux(reader, sock, deadline)
    finally:
        response.close()
    if timed_out:
        return ExecResult(None, out, err, time.monotonic() - started, timed_out=True)
    exit_code: int | None = None
    for _ in range(100):  # the exit code lands a moment after the stream ends
        info = api.exec_inspect(exec_id)
        if not info.get("Running"):
            exit_code = info.get("ExitCode")
            break
        time.sleep(0.01)
    return ExecResult(exit_code, out, err, time.monotonic() - started)


def _probe_unix_socket(path: str, timeout: float) -> None:
    """Connect once and close, raising OSError if nobody listens.

    docker 7.1's ``UnixHTTPConnection.connect`` leaks its socket when the connect fails (a
    ResourceWarning at garbage collection); checking first keeps the common failure, a wrong
    or dead socket at startup, clean.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path if path.startswith("/") else "/" + path)


def _feed(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)


def _demux(reader: Any, sock: socket.socket, deadline: float) -> tuple[str, str, bool]:
    """Read Docker's multiplexed stream (8-byte frame headers) until EOF or the deadline."""
    streams = {1: bytearray(), 2: bytearray()}
    timed_out = False
    try:
        while True:
            header = _read_exact(reader, sock, 8, deadline)
            if header is None:
                break
            kind, size = struct.unpack(">BxxxL", header)
            payload = _read_exact(reader, sock, size, deadline) if size else b""
            if payload is None:
                break
            streams.get(kind, streams[1]).extend(payload)
    except TimeoutError:
        timed_out = True
    return (
        streams[1].decode("utf-8", errors="replace"),
        streams[2].decode("utf-8", errors="replace"),
        timed_out,
    )


def _read_exact(reader: Any, sock: socket.socket, n: int, deadline: float) -> bytes | None:
    """``n`` bytes, or None at EOF; TimeoutError when the deadline passes first."""
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        try:
            chunk = reader.read1(n - len(buf))
        except TimeoutError:
            raise TimeoutError from None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, 'Z'); the zero time means never."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status_from_inspect(name: str, attrs: dict[str, Any]) -> ContainerStatus:
    state = attrs.get("State") or {}
    health = state.get("Health") or {}
    config = attrs.get("Config") or {}
    exit_code = state.get("ExitCode")
    return ContainerStatus(
        name=name,
        exists=True,
        state=state.get("Status"),
        health=health.get("Status") or None,
        image=config.get("Image"),
        image_id=attrs.get("Image"),
        started_at=_parse_time(state.get("StartedAt")),
        restart_count=int(attrs.get("RestartCount") or 0),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
    )


def _describe(exc: BaseException) -> str:
    tls = _tls_problem(exc)
    if tls is not None:
        return tls
    explanation = getattr(exc, "explanation", None)
    text = str(explanation or exc).strip()
    return text or type(exc).__name__


def _recreate_config(
    attrs: dict[str, Any], old_image: dict[str, Any] | None, image: str
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The create body for a copy of the inspected container running ``image``.

    Settings equal to the old image's defaults are left out so the new image's own apply
    (its env, cmd, labels...). Returns the body and the extra networks to connect before
    the start (API < 1.44 takes one network at create).
    """
    cfg: dict[str, Any] = attrs.get("Config") or {}
    known = old_image is not None
    base: dict[str, Any] = ((old_image or {}).get("Config") or {}) if known else {}

    def differs(key: str) -> bool:
        return not known or cfg.get(key) != base.get(key)

    out: dict[str, Any] = {"Image": image}
    for key in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr",
                "StopTimeout", "NetworkDisabled"):  # fmt: skip
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    image_env = set(base.get("Env") or [])
    out["Env"] = [e for e in cfg.get("Env") or [] if e not in image_env]
    image_labels = base.get("Labels") or {}
    out["Labels"] = {k: v for k, v in (cfg.get("Labels") or {}).items()
                     if image_labels.get(k) != v}  # fmt: skip
    if differs("Entrypoint"):  # an explicit entrypoint resets the image's cmd as well
        out["Entrypoint"] = cfg.get("Entrypoint")
        out["Cmd"] = cfg.get("Cmd")
    elif differs("Cmd"):
        out["Cmd"] = cfg.get("Cmd")
    for key in ("User", "WorkingDir", "Healthcheck", "StopSignal"):
        if differs(key) and cfg.get(key):
            out[key] = cfg[key]
    for key in ("ExposedPorts", "Volumes"):
        extra = {k: v for k, v in (cfg.get(key) or {}).items() if k not in (base.get(key) or {})}
        if extra:
            out[key] = extra
    host: dict[str, Any] = dict(attrs.get("HostConfig") or {})
    mode = str(host.get("NetworkMode") or "default")
    shares_host = mode == "host" or mode.startswith("container:")
    hostname = cfg.get("Hostname")
    if not shares_host and hostname and hostname != str(attrs.get("Id", ""))[:12]:
        out["Hostname"] = hostname
        if cfg.get("Domainname"):
            out["Domainname"] = cfg["Domainname"]
    # Anonymous volumes (from the image's VOLUME or `-v /path`) are re-attached by name.
    binds = list(host.get("Binds") or [])
    covered = {b.split(":")[1] for b in binds if b.count(":") >= 1}
    covered |= {m.get("Target") for m in host.get("Mounts") or []}
    for mount in attrs.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in covered:
            ro = "" if mount.get("RW", True) else ":ro"
            binds.append(f"{mount['Name']}:{mount['Destination']}{ro}")
    if binds:
        host["Binds"] = binds
    out["HostConfig"] = host
    networks: list[tuple[str, dict[str, Any]]] = []
    short_id = str(attrs.get("Id", ""))[:12]
    attached = ((attrs.get("NetworkSettings") or {}).get("Networks")) or {}
    for net, endpoint in attached.items():
        if net in ("host", "none", "bridge") or shares_host:
            continue
        aliases = [a for a in endpoint.get("Aliases") or [] if a != short_id]
        ipam = endpoint.get("IPAMConfig") or {}
        if net == mode:
            out["NetworkingConfig"] = {"EndpointsConfig": {net: {
                "Aliases": aliases or None, "IPAMConfig": ipam or None,
                "Links": endpoint.get("Links"),
            }}}  # fmt: skip
        else:
            networks.append((net, {
                "aliases": aliases or None, "links": endpoint.get("Links"),
                "ipv4_address": ipam.get("IPv4Address"), "ipv6_address": ipam.get("IPv6Address"),
            }))  # fmt: skip
    return out, networks


def _fetch_archive(
    api: Any, container: str, path: str, local_path: Path, stop: threading.Event
) -> int:
    """Blocking: read GET /archive's tar stream; write its one file to ``local_path``."""
    chunks, _stat = api.get_archive(container, path, chunk_size=CHUNK_SIZE)
    temp = Path(temp_beside(local_path))
    reader: Any = _ChunkReader(chunks)
    copied = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            member = tar.next()
            src = tar.extractfile(member) if member is not None and member.isfile() else None
            if src is None:
                raise TransferError(f"cannot fetch {path}: not a regular file")
            with temp.open("wb") as out:
                while chunk := src.read(CHUNK_SIZE):
                    if stop.is_set():
                        raise TransferError(f"fetching {path} was abandoned")
                    out.write(chunk)
                    copied += len(chunk)
        os.replace(temp, local_path)
    except (OSError, tarfile.TarError) as exc:
        temp.unlink(missing_ok=True)
        raise TransferError(f"cannot fetch {path}: {_describe(exc)}") from None
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return copied


def _push_archive(
    api: Any, container: str, local_path: Path, path: str, stop: threading.Event
) -> int:
    """Blocking: PUT /archive a one-member tar stream, extracted into ``path``'s directory."""
    directory, name = posixpath.split(path)
    if not path.startswith("/") or not name:
        raise TransferError(f"cannot push to {path!r}: needs an absolute file path")
    try:
        src = local_path.open("rb")
    except OSError as exc:
        raise TransferError(f"cannot read {local_path}: {exc.strerror or exc}") from None
    with src:
        st = os.fstat(src.fileno())
        info = tarfile.TarInfo(name)
        info.size = st.st_size
        info.mode = st.st_mode & 0o777
        info.mtime = int(st.st_mtime)
        api.put_archive(container, directory, _TarBody(info, src, stop))
    return st.st_size


class _ChunkReader:
    """A minimal file object over an iterator of byte chunks (for ``tarfile`` stream mode)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, b"")
            if not chunk:
                break
            self._buffer += chunk
        if size < 0:
            data, self._buffer = self._buffer, b""
        else:
            data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


class _TarBody:
    """A one-file tar archive streamed from an open file; its length is known in advance.

    ``requests`` sends an iterable with ``__len__`` as a Content-Length body, chunk by chunk.
    """

    def __init__(self, info: tarfile.TarInfo, src: Any, stop: threading.Event) -> None:
        self._header = info.tobuf(format=tarfile.PAX_FORMAT)
        self._size = info.size
        self._src = src
        self._stop = stop

    def __len__(self) -> int:
        padded = -(-self._size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
        return len(self._header) + padded + 2 * tarfile.BLOCKSIZE

    def __iter__(self) -> Iterator[bytes]:
        yield self._header
        left = self._size
        while left > 0:
            if self._stop.is_set():
                raise TransferError("the upload was abandoned")
            chunk = self._src.read(min(CHUNK_SIZE, left))
            if not chunk:
                raise TransferError("the file shrank while it was being sent")
            left -= len(chunk)
            yield chunk
        yield b"\0" * (-self._size % tarfile.BLOCKSIZE + 2 * tarfile.BLOCKSIZE)


def _tls_problem(exc: BaseException) -> str | None:
    """A TLS failure buried in the SDK's exception chain, said plainly; None if there is none.

    requests and urllib3 wrap the ``ssl`` error several times over (MaxRetryError, SSLError,
    DockerException); the reader needs the one line of what to fix, not that chain.
    """
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen or len(seen) > 20:
            continue
        seen.add(id(current))
        if isinstance(current, ssl.SSLCertVerificationError):
            why = current.verify_message or current.reason or str(current)
            return (
                f"TLS: the engine's server certificate failed verification ({why}); "
                "check tls.ca_cert is the CA that signed the daemon's --tlscert"
            )
        if isinstance(current, ssl.SSLError):
            reason = str(current.reason or current)
            if any(word in reason.upper() for word in _REFUSED_CLIENT):
                return (
                    f"TLS: the engine refused our client certificate ({reason}); "
                    "tls.client_cert must be signed by the CA the daemon trusts (--tlscacert)"
                )
            return f"TLS handshake failed: {reason}"
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += list(current.args)
        todo += [e for e in linked if isinstance(e, BaseException)]
    return None


#: OpenSSL alerts a server sends when it does not accept the client's certificate.
_REFUSED_CLIENT = ("BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_REQUIRED", "ACCESS_DENIED",
                   "UNSUPPORTED_CERTIFICATE", "CERTIFICATE_UNKNOWN")  # fmt: skip
