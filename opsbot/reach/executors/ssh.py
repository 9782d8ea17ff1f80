"""Run commands on SSH hosts over pooled asyncssh connections.

One connection per host, opened lazily and shared by every concurrent caller; a per-host
semaphore bounds how many commands run on it at once (OpenSSH's ``MaxSessions`` is 10 by
default). Host keys are verified against known_hosts unless a host explicitly opts out.

The remote command string is ``exec `` + ``shlex.join(argv)``: every element is one quoted word,
so chat text can never become shell syntax. A deadline is enforced twice:

* remotely, by wrapping the argv in ``timeout -k 2 N`` with N = ceil(timeout) + 1, so the
  process dies even if the client vanishes or the SSH signal is not honoured;
* locally, by sending TERM then KILL through the channel and closing it. OpenSSH (>= 7.9)
  delivers a channel signal with ``killpg`` to the session's process group. ``exec`` matters
  here: without it the login shell stays the group leader and coreutils ``timeout`` moves
  the command into a group of its own, out of the signal's reach; with it ``timeout`` *is*
  the session leader (its ``setpgid`` fails harmlessly) and the whole tree gets the signal.

Health probes (``probe=True``: status and command checks, every target every round) skip the
remote ``timeout`` when the server is OpenSSH 7.9+: the local signal ends them on time, and
the extra fork and exec per check would cost more than the rest of the check together.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncssh

from opsbot.errors import ExecutorError, HostKeyError
from opsbot.reach.budget import HANDSHAKES, SESSION_OPENS, Clock, clock, waited
from opsbot.reach.executors import ExecResult, argv_words
from opsbot.reach.executors.transfer import CHUNK_SIZE, TransferError, temp_beside

log = logging.getLogger(__name__)

#: Seconds the remote ``timeout`` waits after its signal before it sends KILL.
REMOTE_KILL_AFTER = 2
#: Seconds to wait for the remote side to exit after each signal (TERM, then KILL).
SIGNAL_GRACE = 0.5

# Failures that mean "the connection is gone" rather than "the command failed".
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    ConnectionError,
    BrokenPipeError,
    EOFError,
)
_START_ERRORS: tuple[type[BaseException], ...] = (*_CONNECTION_ERRORS, TimeoutError)


@dataclass(frozen=True, slots=True, kw_only=True)
class SSHHost:
    """How to reach one SSH host. Hashable: the pool keys its connections by this value."""

    name: str
    host: str
    #: None: from the ssh config (with ``ssh_config``), else 22.
    port: int | None = 22
    username: str
    #: Private key files; None = asyncssh's defaults (~/.ssh/id_* and the agent).
    client_keys: tuple[Path, ...] | None = None
    #: known_hosts file; None = the user's ~/.ssh/known_hosts.
    known_hosts: Path | None = None
    #: Skip host key verification (logged as a WARNING on every connect). Never the default.
    insecure_no_host_key_check: bool = False
    connect_timeout: float = 10.0
    keepalive_interval: float = 15.0
    keepalive_count_max: int = 3
    max_concurrency: int = 8
    #: Wrap every command in ``timeout -k 2 N`` on the remote side.
    remote_timeout_wrapper: bool = True
    #: A bastion: this host's connection is tunnelled through the bastion's pooled one.
    via: SSHHost | None = None
    #: Honour ~/.ssh/config (True) or this file; False = only these settings count.
    ssh_config: bool | Path = False

    @property
    def address(self) -> str:
        where = self.host if self.port is None else f"{self.host}:{self.port}"
        return where if self.via is None else f"{where} (via {self.via.name})"


@dataclass(slots=True)
class _HostState:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    semaphore: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    conn: Any = None  # asyncssh.SSHClientConnection | None


@dataclass(slots=True)
class _Forward:
    conn: Any  # the connection the listener lives on
    listener: Any  # asyncssh.SSHListener
    path: Path


class SSHPool:
    """One lazily opened, shared, self-healing asyncssh connection per SSH host."""

    def __init__(self) -> None:
        self._hosts: dict[SSHHost, _HostState] = {}
        self._forwards: dict[tuple[SSHHost, str], _Forward] = {}
        self._forward_locks: dict[tuple[SSHHost, str], asyncio.Lock] = {}
        self._socket_dir: Path | None = None
        self._closed = False
        # known_hosts and private keys as parsed, per file (and its mtime and size): asyncssh
        # given paths parses them again on every connect (a 1,000-line known_hosts, a
        # thousand times over for a fleet's /health).
        self._known_hosts: dict[Path, tuple[tuple[int, int], Any]] = {}
        self._client_keys: dict[tuple[Path, ...], tuple[tuple[tuple[int, int], ...], Any]] = {}
        #: Total SSH handshakes made by this pool (for tests and metrics).
        self.connections_opened = 0

    def executor(self, host: SSHHost) -> SSHExecutor:
        return SSHExecutor(self, host)

    def _state(self, host: SSHHost) -> _HostState:
        state = self._hosts.get(host)
        if state is None:
            state = _HostState(semaphore=asyncio.Semaphore(max(1, host.max_concurrency)))
            self._hosts[host] = state
        return state

    def semaphore(self, host: SSHHost) -> asyncio.Semaphore:
        return self._state(host).semaphore

    async def connection(self, host: SSHHost) -> Any:
        """The open connection to ``host``, connecting (once, for all callers) if needed."""
        if self._closed:
            raise ExecutorError("the SSH pool is closed")
        state = self._state(host)
        conn = state.conn
        if conn is not None and not conn.is_closed():
            return conn
        async with state.lock:
            conn = state.conn
            if conn is not None and not conn.is_closed():
                return conn
            state.conn = None
            conn = await self._connect(host)
            if self._closed:  # closed while we were connecting
                conn.close()
                raise ExecutorError("the SSH pool is closed")
            state.conn = conn
            return conn

    async def discard(self, host: SSHHost, conn: Any) -> None:
        """Forget ``conn`` (if it is still the current one) and close it."""
        state = self._hosts.get(host)
        if state is not None and state.conn is conn:
            state.conn = None
        conn.abort()
        with contextlib.suppress(Exception):
            await conn.wait_closed()

    async def _connect(self, host: SSHHost) -> Any:
        options: dict[str, Any] = {
            "port": () if host.port is None else host.port,
            "username": host.username,
            # None: ~/.ssh/config must not change what the settings say, unless opted in
            # (then () is asyncssh's default, ~/.ssh/config).
            "config": _config_option(host.ssh_config),
            "connect_timeout": host.connect_timeout,
            "login_timeout": host.connect_timeout,
            "keepalive_interval": host.keepalive_interval,
            "keepalive_count_max": host.keepalive_count_max,
        }
        if host.client_keys is not None:
            options["client_keys"] = self._keys(host)
            options["agent_path"] = None
        if host.insecure_no_host_key_check:
            log.warning(
                "SSH host %s (%s): host key verification is DISABLED "
                "(insecure_no_host_key_check); the connection can be intercepted",
                host.name,
                host.address,
            )
            options["known_hosts"] = None
        elif host.known_hosts is not None:
            options["known_hosts"] = self._known(host)
        if host.via is not None:
            # The bastion's pooled connection (opened once for all the hosts behind it);
            # asyncssh opens a direct-tcpip channel on it and runs this handshake inside.
            options["tunnel"] = await self.connection(host.via)
        try:
            # A slot first (a fleet's cold /health would start every handshake at once), then
            # the handshake's own time: waiting for the slot is not the host being slow.
            async with HANDSHAKES.hold(), asyncio.timeout(host.connect_timeout):
                conn = await asyncssh.connect(host.host, **options)
        except asyncssh.HostKeyNotVerifiable as exc:
            where = host.known_hosts or "~/.ssh/known_hosts"
            raise HostKeyError(
                f"SSH host {host.name} ({host.address}): host key not verifiable against "
                f"{where} ({exc.reason}). If the host is new, add its key with "
                f"`ssh-keyscan -p {host.port or 22} {host.host} >> {where}` and check its "
                "fingerprint; if the key changed, find out why before replacing it"
            ) from None
        except asyncssh.PermissionDenied as exc:
            raise ExecutorError(
                f"{host.address} refused login as {host.username!r}: {exc.reason}"
            ) from None
        except TimeoutError:
            raise ExecutorError(
                f"{host.address} unreachable: no SSH handshake within {host.connect_timeout:g} s"
            ) from None
        except (OSError, asyncssh.Error) as exc:
            raise ExecutorError(f"{host.address} unreachable: {_describe(exc)}") from None
        self.connections_opened += 1
        log.info("SSH connected to %s (%s) as %s", host.name, host.address, host.username)
        return conn

    def _known(self, host: SSHHost) -> Any:
        """The host's known_hosts, parsed once per version of the file."""
        path = host.known_hosts
        assert path is not None
        if not path.is_file():
            raise HostKeyError(
                f"SSH host {host.name} ({host.address}): known_hosts file "
                f"{path} does not exist; add the host key with "
                f"`ssh-keyscan -p {host.port or 22} {host.host} >> {path}` "
                "and check its fingerprint"
            )
        version = _version(path)
        cached = self._known_hosts.get(path)
        if cached is None or cached[0] != version:
            cached = self._known_hosts[path] = (version, asyncssh.read_known_hosts(str(path)))
        return cached[1]

    def _keys(self, host: SSHHost) -> Any:
        """The host's private keys, loaded once per version of their files."""
        paths = host.client_keys
        assert paths is not None
        try:
            version = tuple(_version(p) for p in paths)
            cached = self._client_keys.get(paths)
            if cached is None or cached[0] != version:
                keys = asyncssh.load_keypairs([str(p) for p in paths])
                cached = self._client_keys[paths] = (version, keys)
        except (OSError, asyncssh.KeyImportError) as exc:
            raise ExecutorError(f"{host.address}: cannot load a key: {_describe(exc)}") from None
        return cached[1]

    async def forward_unix_socket(self, host: SSHHost, remote_path: str) -> Path:
        """A local unix socket forwarded to ``remote_path`` over the pooled connection.

        The local path is stable for (host, remote_path): when the connection was replaced
        the listener is recreated at the same path. The socket lives in a private (0700)
        directory, since a forwarded Docker socket is root on the remote host.
        """
        key = (host, remote_path)
        lock = self._forward_locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = await self.connection(host)
            fwd = self._forwards.get(key)
            if fwd is not None and fwd.conn is conn and not conn.is_closed():
                return fwd.path
            if fwd is not None:
                fwd.listener.close()
                del self._forwards[key]
            if self._socket_dir is None:
                self._socket_dir = Path(tempfile.mkdtemp(prefix="opsbot-ssh-"))
            digest = hashlib.sha256(f"{host}|{remote_path}".encode()).hexdigest()[:16]
            path = self._socket_dir / f"{digest}.sock"
            path.unlink(missing_ok=True)
            try:
                listener = await conn.forward_local_path(str(path), remote_path)
            except (OSError, asyncssh.Error) as exc:
                raise ExecutorError(
                    f"{host.address}: cannot forward {remote_path}: {_describe(exc)}"
                ) from None
            self._forwards[key] = _Forward(conn, listener, path)
            return path

    async def close(self) -> None:
        """Close every listener and connection and wait for them to finish."""
        self._closed = True
        for fwd in self._forwards.values():
            fwd.listener.close()
        for fwd in self._forwards.values():
            with contextlib.suppress(Exception):
                await fwd.listener.wait_closed()
        self._forwards.clear()
        conns = [s.conn for s in self._hosts.values() if s.conn is not None]
        for state in self._hosts.values():
            state.conn = None
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await conn.wait_closed()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None


class SSHExecutor:
    """Runs an argv on one SSH host through an :class:`SSHPool`."""

    def __init__(self, pool: SSHPool, host: SSHHost) -> None:
        self.pool = pool
        self.host = host

    def __repr__(self) -> str:
        return f"SSHExecutor({self.host.name}={self.host.username}@{self.host.address})"

    def command(self, argv: Sequence[str], timeout: float, *, backstop: bool = True) -> str:
        """The exact command string sent to the remote login shell."""
        args = argv_words(argv)
        if backstop and self.host.remote_timeout_wrapper:
            # One second past the local deadline: the local side signals first and the
            # remote timer is the backstop, so a timeout is never reported as exit 124.
            secs = math.ceil(timeout) + 1
            args = ["timeout", "-k", str(REMOTE_KILL_AFTER), str(secs), *args]
        return "exec " + shlex.join(args)

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        probe: bool = False,
    ) -> ExecResult:
        self.command(argv, timeout)  # an empty argv fails before anything is opened
        # The command's clock stops while it waits for a slot (this host's, a handshake's, a
        # session open's): its timeout and duration are the host's time, not opsbot's queue.
        async with waited(self.pool.semaphore(self.host)):
            with clock() as spent:
                process = await self._start(argv, timeout, stdin is not None, probe)
                return await self._finish(process, stdin, timeout, spent)

    async def _start(
        self, argv: Sequence[str], timeout: float, with_stdin: bool, probe: bool
    ) -> Any:
        """Open a session running the command; reconnect once if the connection was dead.

        A probe goes without the remote ``timeout`` process (one fork and exec fewer on the
        host, per check, every round) where the server delivers our signal to the process
        group (OpenSSH 7.9+): its deadline is then enforced from here. What a probe gives up
        is only the case of opsbot vanishing while a probe hangs."""
        stdin = asyncssh.PIPE if with_stdin else asyncssh.DEVNULL

        def create(conn: Any) -> Awaitable[Any]:
            backstop = not (probe and _signals_reach_the_group(conn))
            command = self.command(argv, timeout, backstop=backstop)
            return conn.create_process(command, encoding=None, stdin=stdin)  # type: ignore[no-any-return]

        return await self._open(
            create,
            what="session",
            purpose="the command",
        )

    async def _open(
        self, opener: Callable[[Any], Awaitable[Any]], *, what: str, purpose: str
    ) -> Any:
        """Open a channel on the pooled connection. Nothing ran yet when that fails, so a dead
        connection is dropped and the channel opened once more on a fresh one."""
        for attempt in (1, 2):
            conn = await self.pool.connection(self.host)
            try:
                async with SESSION_OPENS.hold(), asyncio.timeout(self.host.connect_timeout):
                    return await opener(conn)
            except _START_ERRORS as exc:
                broken = conn.is_closed() or not isinstance(exc, asyncssh.ChannelOpenError)
                if not broken:
                    raise ExecutorError(
                        f"{self.host.address}: {what} refused: {_describe(exc)}"
                    ) from None
                await self.pool.discard(self.host, conn)
                if attempt == 2:
                    raise ExecutorError(
                        f"{self.host.address}: connection lost before {purpose} started: "
                        f"{_describe(exc)}"
                    ) from None
                log.info(
                    "SSH connection to %s lost (%s); reconnecting",
                    self.host.address,
                    _describe(exc),
                )
        raise AssertionError("unreachable")

    async def _finish(
        self, process: Any, stdin: bytes | None, timeout: float, spent: Clock
    ) -> ExecResult:
        # communicate() buffers both streams inside asyncssh until the channel closes: no
        # reader tasks of our own (the output is kept whole either way).
        tasks = [] if stdin is None else [asyncio.ensure_future(_feed(process.stdin, stdin))]
        timed_out = False
        try:
            async with asyncio.timeout(max(0.0, timeout - spent.elapsed())):
                out, err = await process.communicate()
                await asyncio.gather(*tasks)
            if process.returncode is None and _lost(process):
                raise ConnectionError("the connection closed before the command's exit status")
        except TimeoutError:
            timed_out = True
            await self._stop(process, tasks)
            out, err = process.collect_output()
        except _CONNECTION_ERRORS as exc:
            await self._stop(process, tasks)
            raise ExecutorError(
                f"{self.host.address}: connection lost while the command ran "
                f"(its outcome is unknown): {_describe(exc)}"
            ) from None
        except BaseException:
            await asyncio.shield(self._stop(process, tasks))
            raise
        return ExecResult(
            exit_status=None if timed_out else process.returncode,
            stdout=bytes(out).decode("utf-8", errors="replace"),
            stderr=bytes(err).decode("utf-8", errors="replace"),
            duration=spent.elapsed(),
            timed_out=timed_out,
        )

    async def _stop(self, process: Any, tasks: Sequence[asyncio.Future[None]]) -> None:
        """End the remote process group: TERM, a moment, KILL, a moment, close the channel.

        sshd delivers the signal to the whole process group (see the module docstring); with
        the ``timeout`` wrapper a TERM is also forwarded by it, followed by its own KILL.
        """
        try:
            for sig in ("TERM", "KILL"):
                try:
                    process.send_signal(sig)
                except (OSError, asyncssh.Error):
                    break  # channel already closed
                try:
                    async with asyncio.timeout(SIGNAL_GRACE):
                        await process.wait_closed()
                    break
                except TimeoutError:
                    continue
                except _CONNECTION_ERRORS:
                    break
        finally:
            process.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- FileTransfer: SFTP over the same pooled connection ---------------------------------

    async def fetch(
        self, remote_path: str, local_path: Path, *, timeout: float | None = None
    ) -> int:
        """Stream ``remote_path`` into ``local_path`` (via a temporary name beside it)."""
        local_path = Path(local_path)
        temp = Path(temp_beside(local_path))
        what = f"{self.host.address}: cannot fetch {remote_path}"
        try:
            async with self.pool.semaphore(self.host), asyncio.timeout(timeout):
                sftp = await self._sftp()
                async with sftp, sftp.open(remote_path, "rb") as src:
                    out = await asyncio.to_thread(temp.open, "wb")
                    copied = 0
                    try:
                        while chunk := await src.read(CHUNK_SIZE):
                            await asyncio.to_thread(out.write, chunk)
                            copied += len(chunk)
                    finally:
                        await asyncio.to_thread(out.close)
            await asyncio.to_thread(os.replace, temp, local_path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                await asyncio.shield(asyncio.to_thread(temp.unlink, missing_ok=True))
            error = _transfer_error(exc, what, timeout)
            if error is exc:
                raise
            raise error from None
        return copied

    async def push(
        self, local_path: Path, remote_path: str, *, timeout: float | None = None
    ) -> int:
        """Stream ``local_path`` to ``remote_path`` (via a temporary name, then a rename)."""
        temp = temp_beside(remote_path)
        what = f"{self.host.address}: cannot push {remote_path}"
        try:
            async with self.pool.semaphore(self.host), asyncio.timeout(timeout):
                sftp = await self._sftp()
                async with sftp:
                    try:
                        copied = await _push_file(sftp, Path(local_path), temp)
                        try:
                            await sftp.posix_rename(temp, remote_path)
                        except asyncssh.SFTPOpUnsupported:
                            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                                await sftp.remove(remote_path)
                            await sftp.rename(temp, remote_path)
                    except BaseException:
                        with contextlib.suppress(Exception):
                            await asyncio.shield(sftp.remove(temp))
                        raise
        except BaseException as exc:
            error = _transfer_error(exc, what, timeout)
            if error is exc:
                raise
            raise error from None
        return copied

    async def _sftp(self) -> Any:
        """An SFTP session on the pooled connection; reconnect once if it was dead."""
        return await self._open(
            lambda conn: conn.start_sftp_client(), what="SFTP session", purpose="the transfer"
        )


async def _push_file(sftp: Any, source: Path, remote_path: str) -> int:
    src = await asyncio.to_thread(source.open, "rb")
    copied = 0
    try:
        async with sftp.open(remote_path, "wb") as out:
            while chunk := await asyncio.to_thread(src.read, CHUNK_SIZE):
                await out.write(chunk)
                copied += len(chunk)
    finally:
        await asyncio.to_thread(src.close)
    return copied


def _transfer_error(exc: BaseException, what: str, timeout: float | None) -> BaseException:
    """The exception to raise for a failed transfer (cancellation and our own pass through)."""
    if isinstance(exc, ExecutorError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, TimeoutError):
        return TransferError(f"{what}: timed out" + (f" after {timeout:g} s" if timeout else ""))
    if isinstance(exc, _CONNECTION_ERRORS):
        return TransferError(f"{what}: connection lost: {_describe(exc)}")
    if isinstance(exc, asyncssh.SFTPError | OSError):
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        return TransferError(f"{what}: {str(reason).strip()}")
    return exc


async def _feed(stream: Any, data: bytes) -> None:
    with contextlib.suppress(*_CONNECTION_ERRORS):
        stream.write(data)
        await stream.drain()
        stream.write_eof()


def _lost(process: Any) -> bool:
    conn = process.get_extra_info("connection")
    return conn is None or bool(conn.is_closed())


def _version(path: Path) -> tuple[int, int]:
    """What tells a changed file from the one read before: its mtime and size."""
    stat = path.stat()
    return stat.st_mtime_ns, stat.st_size


def _signals_reach_the_group(conn: Any) -> bool:
    """Whether the server delivers a channel signal to the session's process group."""
    version = str(conn.get_extra_info("server_version") or "")
    match = re.match(r"SSH-2\.0-OpenSSH_(\d+)\.(\d+)", version)
    return match is not None and (int(match[1]), int(match[2])) >= (7, 9)


def _config_option(ssh_config: bool | Path) -> Any:
    if ssh_config is False:
        return None
    if ssh_config is True:
        return ()
    return [str(ssh_config)]


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    text = str(reason or exc) or type(exc).__name__
    return text.strip()
