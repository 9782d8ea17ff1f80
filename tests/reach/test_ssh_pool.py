"""SSHPool against the lab's real OpenSSH sshd: sharing, host keys, failures, reconnects."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from opsbot.errors import ExecutorError, HostKeyError
from opsbot.reach.executors.ssh import SSHHost, SSHPool
from tests.factories import lab_ssh_host
from tests.lab.ports import free_port
from tests.lab.sshd import SSHServer, count_accepted_connections, start_sshd_fleet


@pytest.fixture
async def pool() -> AsyncIterator[SSHPool]:
    pool = SSHPool()
    yield pool
    await pool.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP port that accepts connections (kernel backlog) but never says a word."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_fifty_concurrent_runs_share_one_handshake(
    pool: SSHPool, sshd_server: SSHServer
) -> None:
    before = count_accepted_connections(sshd_server)
    executor = pool.executor(lab_ssh_host(sshd_server))
    results = await asyncio.gather(
        *(executor.run(["echo", str(i)], timeout=20) for i in range(50))
    )
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(50)]
    assert pool.connections_opened == 1
    assert count_accepted_connections(sshd_server) == before + 1
    # Reused afterwards too, also by an executor built from an equal SSHHost value.
    again = await pool.executor(lab_ssh_host(sshd_server)).run(["true"], timeout=10)
    assert again.ok
    assert pool.connections_opened == 1


@pytest.mark.parametrize("which", ["mismatched", "unknown"])
async def test_host_key_not_in_known_hosts_is_refused(
    pool: SSHPool, sshd_server: SSHServer, tmp_path: Any, which: str
) -> None:
    if which == "mismatched":
        known_hosts = sshd_server.known_hosts_wrong
    else:
        known_hosts = tmp_path / "known_hosts_empty"
        known_hosts.write_text("")
    canary = sshd_server.workdir / f"hostkey-{uuid.uuid4().hex[:8]}"
    executor = pool.executor(lab_ssh_host(sshd_server, known_hosts=known_hosts))
    with pytest.raises(HostKeyError) as caught:
        await executor.run(["touch", str(canary)], timeout=10)
    message = str(caught.value)
    assert f"{sshd_server.host}:{sshd_server.port}" in message
    assert "ssh-keyscan" in message
    assert str(known_hosts) in message
    assert not canary.exists()
    assert pool.connections_opened == 0


async def test_missing_known_hosts_file_is_a_host_key_error(
    pool: SSHPool, sshd_server: SSHServer, tmp_path: Any
) -> None:
    executor = pool.executor(lab_ssh_host(sshd_server, known_hosts=tmp_path / "nope"))
    with pytest.raises(HostKeyError, match="does not exist"):
        await executor.run(["true"], timeout=10)


async def test_insecure_flag_connects_and_warns(
    pool: SSHPool, sshd_server: SSHServer, caplog: pytest.LogCaptureFixture
) -> None:
    host = lab_ssh_host(
        sshd_server,
        name="trusting",
        known_hosts=sshd_server.known_hosts_wrong,
        insecure_no_host_key_check=True,
    )
    with caplog.at_level(logging.WARNING, logger="opsbot.reach.executors.ssh"):
        result = await pool.executor(host).run(["echo", "ok"], timeout=10)
    assert result.stdout == "ok\n"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("trusting" in r.getMessage() and "DISABLED" in r.getMessage() for r in warnings)


async def test_refused_port_is_an_executor_error(pool: SSHPool, sshd_server: SSHServer) -> None:
    port = free_port()
    executor = pool.executor(lab_ssh_host(sshd_server, port=port))
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=f"127.0.0.1:{port} unreachable") as caught:
        await executor.run(["true"], timeout=10)
    assert not isinstance(caught.value, HostKeyError)
    assert time.monotonic() - started < 2


async def test_silent_port_honours_connect_timeout(
    pool: SSHPool, sshd_server: SSHServer, silent_port: int
) -> None:
    executor = pool.executor(lab_ssh_host(sshd_server, port=silent_port, connect_timeout=1.0))
    started = time.monotonic()
    with pytest.raises(ExecutorError, match=f"127.0.0.1:{silent_port} unreachable"):
        await executor.run(["true"], timeout=10)
    assert 0.9 <= time.monotonic() - started < 2.5


async def test_reconnects_after_the_connection_was_closed(
    pool: SSHPool, sshd_server: SSHServer
) -> None:
    host = lab_ssh_host(sshd_server)
    executor = pool.executor(host)
    assert (await executor.run(["echo", "one"], timeout=10)).stdout == "one\n"
    conn = await pool.connection(host)
    conn.close()
    await conn.wait_closed()
    assert (await executor.run(["echo", "two"], timeout=10)).stdout == "two\n"
    assert pool.connections_opened == 2


# Walk up from the remote shell to sshd's per-connection "sshd: user@notty" process.
FIND_SSHD = (
    'p=$$; while [ "$p" -gt 1 ]; do '
    '[ "$(cat /proc/$p/comm)" = sshd ] && { echo "$p"; exit 0; }; '
    'p=$(cut -d" " -f4 /proc/$p/stat); done; exit 9'
)


async def connection_process(pool: SSHPool, host: SSHHost) -> int:
    """The pid of the sshd process serving the pool's connection (the lab runs locally)."""
    result = await pool.executor(host).run(["sh", "-c", FIND_SSHD], timeout=10)
    assert result.ok, result
    return int(result.stdout)


async def test_reconnects_after_the_server_dropped_the_connection(
    pool: SSHPool, sshd_server: SSHServer
) -> None:
    host = lab_ssh_host(sshd_server)
    os.kill(await connection_process(pool, host), signal.SIGKILL)
    assert (await pool.executor(host).run(["echo", "back"], timeout=10)).stdout == "back\n"
    assert pool.connections_opened == 2


async def test_reconnects_when_the_connection_hangs(pool: SSHPool, sshd_server: SSHServer) -> None:
    """A connection that stops answering (its sshd frozen) is replaced after connect_timeout."""
    host = lab_ssh_host(sshd_server, connect_timeout=1.0)
    pid = await connection_process(pool, host)
    os.kill(pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = await pool.executor(host).run(["echo", "back"], timeout=10)
        assert result.stdout == "back\n"
        assert 0.9 <= time.monotonic() - started < 3.0
        assert pool.connections_opened == 2
    finally:
        os.kill(pid, signal.SIGKILL)


async def test_connection_lost_while_running_is_an_error(
    pool: SSHPool, sshd_server: SSHServer
) -> None:
    """Not retried: the command may have had effects, so the caller learns it is unknown."""
    host = lab_ssh_host(sshd_server)
    pid = await connection_process(pool, host)
    run = asyncio.create_task(pool.executor(host).run(["sleep", "5"], timeout=10))
    await asyncio.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ExecutorError, match="outcome is unknown"):
        await run
    assert (await pool.executor(host).run(["true"], timeout=10)).ok


async def test_concurrency_limit_is_honoured(pool: SSHPool, sshd_server: SSHServer) -> None:
    executor = pool.executor(lab_ssh_host(sshd_server, max_concurrency=2))
    await executor.run(["true"], timeout=10)  # connect first: time only the commands
    started = time.monotonic()
    results = await asyncio.gather(*(executor.run(["sleep", "0.5"], timeout=10) for _ in range(6)))
    elapsed = time.monotonic() - started
    assert all(r.ok for r in results)
    assert 1.45 <= elapsed < 3.0


async def test_close_closes_connections(sshd_server: SSHServer) -> None:
    pool = SSHPool()
    host = lab_ssh_host(sshd_server)
    await pool.executor(host).run(["true"], timeout=10)
    conn = await pool.connection(host)
    await pool.close()
    assert conn.is_closed()
    with pytest.raises(ExecutorError, match="closed"):
        await pool.executor(host).run(["true"], timeout=10)


async def test_forward_unix_socket_is_reused(pool: SSHPool, sshd_server: SSHServer) -> None:
    """The forwarded socket reaches a unix socket on the far side, over the pooled connection."""
    host = lab_ssh_host(sshd_server)
    remote = sshd_server.workdir / f"echo-{uuid.uuid4().hex[:6]}.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"echo:" + await reader.readline())
        await writer.drain()
        writer.close()

    server = await asyncio.start_unix_server(echo, path=str(remote))
    remote.chmod(0o777)  # sshd connects to it as the lab user
    try:
        path = await pool.forward_unix_socket(host, str(remote))
        assert await pool.forward_unix_socket(host, str(remote)) == path
        assert oct(path.parent.stat().st_mode & 0o777) == "0o700"
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"hello\n")
        await writer.drain()
        assert await reader.read() == b"echo:hello\n"
        writer.close()
        await writer.wait_closed()
        assert pool.connections_opened == 1
        # After a reconnect the listener comes back at the same path.
        conn = await pool.connection(host)
        conn.close()
        await conn.wait_closed()
        assert await pool.forward_unix_socket(host, str(remote)) == path
        reader, writer = await asyncio.open_unix_connection(str(path))
        writer.write(b"again\n")
        assert await reader.read() == b"echo:again\n"
        writer.close()
        await writer.wait_closed()
        assert pool.connections_opened == 2
    finally:
        server.close()
        await server.wait_closed()
        remote.unlink(missing_ok=True)


async def test_a_probe_runs_without_the_remote_timeout_process_and_still_dies_on_time(
    pool: SSHPool, sshd_server: SSHServer
) -> None:
    """Health probes skip the `timeout` wrapper (OpenSSH delivers our signal to the group);
    anything else keeps it as the backstop for a vanished client."""
    executor = pool.executor(lab_ssh_host(sshd_server))
    parent = ["sh", "-c", "cat /proc/$PPID/comm"]
    assert (await executor.run(parent, timeout=5)).stdout.strip() == "timeout"
    assert (await executor.run(parent, timeout=5, probe=True)).stdout.strip() == "sshd"

    marker = f"{uuid.uuid4().int % 10**6 + 10**6}.5"  # a sleep nobody else runs
    started = time.monotonic()
    result = await executor.run(["sh", "-c", f"sleep {marker}"], timeout=1, probe=True)
    assert result.timed_out and time.monotonic() - started < 3
    deadline = time.monotonic() + 3
    while _running(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _running(f"sleep {marker}"), "the hung probe outlived its deadline"


def _running(cmdline: str) -> bool:
    for proc in os.listdir("/proc"):
        try:
            with open(f"/proc/{proc}/cmdline", "rb") as f:
                if f.read().replace(b"\0", b" ").strip().decode() == cmdline:
                    return True
        except (FileNotFoundError, NotADirectoryError, PermissionError, ProcessLookupError):
            continue
    return False


async def test_a_fleets_known_hosts_is_parsed_once_and_again_when_it_changes(
    pool: SSHPool, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asyncssh given a path parses known_hosts on every connect: a 1,000-line file a thousand
    times for a fleet's cold /health. The pool parses it once, and again once it changed."""
    import asyncssh

    parsed: list[str] = []
    real = asyncssh.read_known_hosts

    def counting(path: str) -> Any:
        parsed.append(path)
        return real(path)

    monkeypatch.setattr(asyncssh, "read_known_hosts", counting)
    with start_sshd_fleet(tmp_path / "fleet", 3) as servers:
        known = tmp_path / "known_hosts"
        known.write_text(servers[0].known_hosts.read_text())
        hosts = [lab_ssh_host(s, name=f"h{i}", known_hosts=known) for i, s in enumerate(servers)]
        results = await asyncio.gather(
            *(pool.executor(h).run(["true"], timeout=10) for h in hosts)
        )
        assert all(r.ok for r in results) and pool.connections_opened == 3
        assert parsed == [str(known)]
        # The operator replaces a key: the next handshake reads the file again and refuses.
        known.write_text(servers[0].known_hosts_wrong.read_text())
        await pool.discard(hosts[1], await pool.connection(hosts[1]))
        with pytest.raises(HostKeyError):
            await pool.executor(hosts[1]).run(["true"], timeout=10)
        assert parsed == [str(known)] * 2
