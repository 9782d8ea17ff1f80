"""The lab fixtures start real servers that answer."""

from __future__ import annotations

import subprocess
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import asyncssh
import pytest
import redis

from tests.lab.dockerd import DockerLab, run_http_container
from tests.lab.ports import free_port
from tests.lab.postgres import PostgresServer, postgres_bin_dir
from tests.lab.redis import RedisServer
from tests.lab.sshd import (
    SSHServer,
    count_accepted_connections,
    count_fleet_logins,
    start_sshd_fleet,
)


def test_redis_ping(redis_server: RedisServer) -> None:
    with closing(redis.Redis.from_url(redis_server.url)) as client:
        assert client.ping() is True
        client.set("lab", "ok")
        assert client.get("lab") == b"ok"


@asynccontextmanager
async def lab_login(
    server: SSHServer, known_hosts: Path
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """A login to the lab sshd as the lab user with its key, checking ``known_hosts``."""
    async with asyncssh.connect(
        server.host,
        port=server.port,
        username=server.username,
        client_keys=[str(server.client_key)],
        known_hosts=str(known_hosts),
    ) as conn:
        yield conn


async def test_ssh_runs_command_as_lab_user(sshd_server: SSHServer) -> None:
    before = count_accepted_connections(sshd_server)
    async with lab_login(sshd_server, sshd_server.known_hosts) as conn:
        for _ in range(3):
            result = await conn.run("id -un", check=True)
            assert str(result.stdout).strip() == "opsbot-lab"
        marker = sshd_server.canary_dir / "written-by-lab-user"
        await conn.run(f"echo hi > {marker}", check=True)
    assert marker.read_text() == "hi\n"
    assert count_accepted_connections(sshd_server) == before + 1


async def test_ssh_refuses_wrong_host_key(sshd_server: SSHServer) -> None:
    with pytest.raises(asyncssh.HostKeyNotVerifiable):
        async with lab_login(sshd_server, sshd_server.known_hosts_wrong):
            pass


async def test_ssh_fleet_one_sshd_many_hosts(tmp_path: Path) -> None:
    """A fleet's sshd answers on each of its addresses, each with its own known_hosts line."""
    with start_sshd_fleet(tmp_path, 3) as servers:
        assert len({(s.host, s.port) for s in servers}) == 3
        assert len({s.log_path for s in servers}) == 1  # one sshd
        known = asyncssh.read_known_hosts(str(servers[0].known_hosts))
        for server in servers:
            async with asyncssh.connect(
                server.host, port=server.port, username=server.username,
                client_keys=[str(server.client_key)], known_hosts=known,
                config=None, agent_path=None,
            ) as conn:  # fmt: skip
                seen = (await conn.run("echo $SSH_CONNECTION", check=True)).stdout
                assert seen.split()[2] == server.host  # the address it was reached on
        assert count_fleet_logins(servers) == 3


def test_docker_images_and_http_container(docker_lab: DockerLab) -> None:
    with closing(docker_lab.client()) as client:
        tags = {tag for image in client.images.list() for tag in image.tags}
        assert {docker_lab.image_v1, docker_lab.image_v2} <= tags
        out = client.containers.run(docker_lab.image_v2, ["cat", "/VERSION"], remove=True)
        assert out == b"2\n"
        port = free_port()
        cid = run_http_container(docker_lab, "lab-http", port)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
                assert resp.read() == b"ok"
        finally:
            client.containers.get(cid).remove(force=True)


def test_postgres_select_1(postgres_server: PostgresServer) -> None:
    bindir = postgres_bin_dir()
    ready = subprocess.run(
        [str(bindir / "pg_isready"), "-h", postgres_server.host, "-p", str(postgres_server.port)],
        capture_output=True,
        check=False,
    )
    assert ready.returncode == 0, ready
    select = subprocess.run(
        [str(bindir / "psql"), postgres_server.dsn, "-tAc", "SELECT 1"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert select.returncode == 0, select.stderr
    assert select.stdout.strip() == "1"
