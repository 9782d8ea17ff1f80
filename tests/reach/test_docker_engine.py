"""DockerEngine against the lab's real dockerd: status, logs, restart, SSH-forwarded engine."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing

import pytest

from opsbot.errors import ExecutorError
from opsbot.reach.executors.docker import DockerEngine
from opsbot.reach.executors.ssh import SSHPool
from tests.factories import lab_ssh_host
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.lab.sshd import SSHServer

LOG_SCRIPT = "seq 1 1000 | sed 's/^/line /'; sleep 0.3; echo to-stderr >&2; exec sleep 3600"


@pytest.fixture(scope="module")
def containers(docker_lab: DockerLab) -> Iterator[dict[str, str]]:
    """A sleeper and a container that printed 1000 numbered lines then one on stderr."""
    suffix = uuid.uuid4().hex[:8]
    names = {"sleeper": f"opsbot-sleeper-{suffix}", "logger": f"opsbot-logger-{suffix}"}
    commands = {"sleeper": ["sleep", "3600"], "logger": ["sh", "-c", LOG_SCRIPT]}
    with closing(docker_lab.client()) as client:
        started = [
            client.containers.run(
                docker_lab.image_v1,
                commands[key],
                name=name,
                detach=True,
                init=True,
                network_mode="none",
            )
            for key, name in names.items()
        ]
        try:
            yield names
        finally:
            for container in started:
                container.remove(force=True)


@pytest.fixture(scope="module")
async def engine(docker_lab: DockerLab) -> AsyncIterator[DockerEngine]:
    engine = DockerEngine("lab", docker_lab.base_url, timeout=30)
    yield engine
    await engine.close()


async def test_ping(engine: DockerEngine) -> None:
    latency = await engine.ping()
    assert 0 <= latency < 5


async def test_status_of_a_running_container(
    engine: DockerEngine, containers: dict[str, str], docker_lab: DockerLab
) -> None:
    status = await engine.container_status(containers["sleeper"])
    assert status.exists
    assert status.state == "running"
    assert status.running
    assert status.health is None  # no healthcheck
    assert status.image == docker_lab.image_v1
    assert status.image_id is not None and status.image_id.startswith("sha256:")
    assert status.started_at is not None and status.started_at.tzinfo is not None
    assert status.restart_count == 0
    assert status.exit_code == 0


async def test_status_of_a_missing_container(engine: DockerEngine) -> None:
    status = await engine.container_status("opsbot-no-such-container")
    assert not status.exists
    assert status.state is None


async def test_logs_tail_is_cut_by_the_engine(
    engine: DockerEngine, containers: dict[str, str]
) -> None:
    name = containers["logger"]
    for _ in range(100):
        if "to-stderr" in await engine.container_logs(name, tail=1):
            break
        await asyncio.sleep(0.05)
    text = await engine.container_logs(name, tail=11)
    expected = [f"line {i}" for i in range(991, 1001)] + ["to-stderr"]
    assert text.splitlines() == expected
    assert (await engine.container_logs(name, tail=1)).splitlines() == ["to-stderr"]
    stamped = await engine.container_logs(name, tail=2, timestamps=True)
    first, second = stamped.splitlines()
    assert first.endswith(" line 1000") and first[:4].isdigit() and "T" in first
    assert second.endswith(" to-stderr")


async def test_logs_of_a_missing_container(engine: DockerEngine) -> None:
    with pytest.raises(ExecutorError, match="no container"):
        await engine.container_logs("opsbot-no-such-container", tail=5)


async def test_restart_changes_started_at(
    engine: DockerEngine, containers: dict[str, str]
) -> None:
    name = containers["sleeper"]
    before = await engine.container_status(name)
    await engine.restart_container(name, timeout=2)
    after = await engine.container_status(name)
    assert after.state == "running"
    assert before.started_at is not None and after.started_at is not None
    assert after.started_at > before.started_at


async def test_restart_of_a_missing_container(engine: DockerEngine) -> None:
    with pytest.raises(ExecutorError, match="no container"):
        await engine.restart_container("opsbot-no-such-container", timeout=1)


async def test_engine_through_the_ssh_pool(
    docker_lab: DockerLab, sshd_server: SSHServer, containers: dict[str, str]
) -> None:
    """The lab user is in the docker group: its forwarded socket reaches the engine."""
    pool = SSHPool()
    host = lab_ssh_host(sshd_server)
    engine = DockerEngine("remote", ssh=(pool, host, str(docker_lab.socket_path)))
    try:
        assert await engine.ping() >= 0
        status = await engine.container_status(containers["sleeper"])
        assert status.exists and status.state == "running"
        result = await engine.executor(containers["sleeper"]).run(["cat", "/VERSION"], timeout=10)
        assert result.stdout == "1\n"
        logs = await engine.container_logs(containers["logger"], tail=1)
        assert logs.splitlines() == ["to-stderr"]
        # An SSH-side executor shares the same single connection.
        await pool.executor(host).run(["true"], timeout=10)
        assert pool.connections_opened == 1
    finally:
        await engine.close()
        await pool.close()


@pytest.mark.parametrize("where", ["unix", "tcp"])
async def test_unreachable_engine(where: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if where == "unix":
        url = f"unix://{tmp_path_factory.mktemp('nodocker')}/docker.sock"
    else:
        url = f"tcp://127.0.0.1:{free_port()}"
    engine = DockerEngine("gone", url, timeout=3)
    with pytest.raises(ExecutorError, match=r"Docker engine gone .* unreachable"):
        await engine.container_status("anything")
    with pytest.raises(ExecutorError, match="unreachable"):
        await engine.ping()
    await engine.close()


async def test_concurrent_execs(engine: DockerEngine, containers: dict[str, str]) -> None:
    executor = engine.executor(containers["sleeper"])
    results = await asyncio.gather(
        *(executor.run(["echo", str(i)], timeout=20) for i in range(10))
    )
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(10)]
    assert all(r.ok for r in results)


async def test_exec_in_a_missing_container(engine: DockerEngine) -> None:
    with pytest.raises(ExecutorError, match="no container"):
        await engine.executor("opsbot-no-such-container").run(["true"], timeout=5)
