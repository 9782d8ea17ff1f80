"""One contract for every Executor: local subprocess, SSH to the lab sshd, docker exec.

Each case runs against real components (tests/lab): nothing is mocked. The "process is gone"
checks read ``/proc/*/cmdline`` through the same executor (busybox-static has no pgrep) and
look for ``sleep\0N`` with a marker N that no other process uses.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from opsbot.reach.executors import Executor
from opsbot.reach.executors.docker import DockerEngine
from opsbot.reach.executors.local import LocalExecutor
from opsbot.reach.executors.ssh import SSHPool
from tests.factories import lab_ssh_host
from tests.lab.dockerd import DockerLab, sleeping_container
from tests.lab.sshd import SSHServer

_markers = itertools.count()


def sleep_marker() -> str:
    """A sleep duration no other process on the machine uses, e.g. '47.3192'."""
    return f"{random.randint(40, 89)}.{next(_markers)}{random.randint(100, 999)}"


@dataclass(frozen=True)
class Subject:
    name: str
    executor: Executor
    canary_dir: str  # a writable, empty dir where injected shell syntax would create files


@pytest.fixture(scope="module")
def exec_container(docker_lab: DockerLab) -> Iterator[str]:
    with sleeping_container(docker_lab, "opsbot-exec") as container:
        container.exec_run(["mkdir", "-p", "/tmp/canary"])
        yield container.name


@pytest.fixture(scope="module")
async def docker_engine(docker_lab: DockerLab) -> AsyncIterator[DockerEngine]:
    engine = DockerEngine("lab", docker_lab.base_url, timeout=30)
    yield engine
    await engine.close()


@pytest.fixture(params=["local", "ssh", "docker"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Subject:
    if request.param == "local":
        return Subject("local", LocalExecutor(), str(tmp_path))
    if request.param == "ssh":
        server: SSHServer = request.getfixturevalue("sshd_server")
        pool: SSHPool = request.getfixturevalue("ssh_pool")
        host = lab_ssh_host(server)
        # Our own dir beside the lab's shared canary_dir, which other tests expect empty.
        canary = server.workdir / f"canary-{uuid.uuid4().hex[:8]}"
        canary.mkdir()
        canary.chmod(0o777)
        request.addfinalizer(lambda: shutil.rmtree(canary, ignore_errors=True))
        return Subject("ssh", pool.executor(host), str(canary))
    engine: DockerEngine = request.getfixturevalue("docker_engine")
    container: str = request.getfixturevalue("exec_container")
    return Subject("docker", engine.executor(container), "/tmp/canary")


async def gone(subject: Subject, marker: str) -> bool:
    """Whether no process runs ``sleep <marker>`` where the subject runs commands."""
    script = "cat /proc/[0-9]*/cmdline 2>/dev/null; true"
    probe = await subject.executor.run(["sh", "-c", script], timeout=10)
    assert probe.ok, probe
    assert "sh\0-c\0" in probe.stdout  # the probe sees command lines (at least its own)
    return f"sleep\0{marker}" not in probe.stdout


async def test_echo_argv_round_trip(subject: Subject) -> None:
    result = await subject.executor.run(["echo", "hello", "world"], timeout=10)
    assert result.ok, result
    assert result.stdout == "hello world\n"
    assert result.stderr == ""
    assert result.exit_status == 0
    assert not result.timed_out
    assert result.duration >= 0


async def test_hostile_arguments_arrive_verbatim(subject: Subject) -> None:
    canary = subject.canary_dir
    args = [
        "two words",
        'it\'s "quoted"',
        f"a; touch {canary}/semicolon",
        f"$(touch {canary}/dollar)",
        f"`touch {canary}/backtick`",
        f"x\ntouch {canary}/newline",
        f"| touch {canary}/pipe",
        f"&& touch {canary}/and",
        f"> {canary}/redirect",
        "$HOME ${PATH} ~ *",
        "",
        "-n",
        "\\back\\slash",
        "ünïcødé ✓",
    ]
    result = await subject.executor.run(["printf", "[%s]\\n", *args], timeout=10)
    assert result.ok, result
    assert result.stdout == "".join(f"[{arg}]\n" for arg in args)
    listing = await subject.executor.run(["ls", "-A", canary], timeout=10)
    assert listing.ok, listing
    assert listing.stdout == ""


async def test_non_zero_exit_status(subject: Subject) -> None:
    result = await subject.executor.run(["sh", "-c", "exit 3"], timeout=10)
    assert result.exit_status == 3
    assert not result.ok
    assert not result.timed_out


async def test_stdout_and_stderr_are_separate(subject: Subject) -> None:
    result = await subject.executor.run(
        ["sh", "-c", "echo to-out; echo to-err >&2; exit 1"], timeout=10
    )
    assert (result.exit_status, result.stdout, result.stderr) == (1, "to-out\n", "to-err\n")


async def test_missing_program(subject: Subject) -> None:
    result = await subject.executor.run(["no-such-program-opsbot"], timeout=10)
    assert result.exit_status in (126, 127), result
    assert "no-such-program-opsbot" in result.stderr + result.stdout


async def test_stdin_is_passed(subject: Subject) -> None:
    data = "".join(f"line {i} ✓\n" for i in range(20000)).encode()  # ~260 kB
    result = await subject.executor.run(["cat"], timeout=20, stdin=data)
    assert result.ok, result.stderr
    assert result.stdout.encode() == data


async def test_large_output_is_intact(subject: Subject) -> None:
    result = await subject.executor.run(["seq", "1", "160000"], timeout=30)
    expected = "".join(f"{i}\n" for i in range(1, 160001))
    assert len(expected) > 1_000_000
    assert result.ok, result.stderr
    assert result.stdout == expected


async def test_timeout_ends_the_process(subject: Subject) -> None:
    marker = sleep_marker()
    started = time.monotonic()
    run = asyncio.create_task(
        subject.executor.run(["sh", "-c", f"echo started; exec sleep {marker}"], timeout=1.5)
    )
    await asyncio.sleep(0.6)
    assert not await gone(subject, marker)  # the probe does see it while it runs
    result = await run
    elapsed = time.monotonic() - started
    assert result.timed_out, result
    assert result.exit_status is None
    assert not result.ok
    assert "started" in result.stdout  # output read before the deadline is kept
    assert 1.4 <= elapsed < 3.5
    assert await gone(subject, marker)


@pytest.mark.parametrize("subject", ["local", "ssh"], indirect=True)
async def test_timeout_ends_the_whole_process_tree(subject: Subject) -> None:
    """Children too, even ones that ignore SIGTERM (docker exec: the direct process only)."""
    marker = sleep_marker()
    script = f"trap '' TERM; sleep {marker} & sleep {marker}; wait"
    started = time.monotonic()
    result = await subject.executor.run(["sh", "-c", script], timeout=1)
    assert result.timed_out, result
    assert time.monotonic() - started < 3.0
    for _ in range(30):
        if await gone(subject, marker):
            break
        await asyncio.sleep(0.1)
    assert await gone(subject, marker)


@pytest.mark.parametrize("subject", ["local", "ssh"], indirect=True)
async def test_cancelled_run_ends_the_process(subject: Subject) -> None:
    """A caller that gives up (task cancelled) does not leave the command running."""
    marker = sleep_marker()
    run = asyncio.create_task(subject.executor.run(["sleep", marker], timeout=30))
    await asyncio.sleep(0.5)
    assert not await gone(subject, marker)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    for _ in range(20):
        if await gone(subject, marker):
            break
        await asyncio.sleep(0.1)
    assert await gone(subject, marker)
