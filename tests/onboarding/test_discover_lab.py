"""``opsbot discover`` on the lab host, as a user runs it: a real process, its stdout (the
draft) and stderr (the report), over the real sshd and dockerd (see ``lab_host.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsbot.config import load_config
from tests.factories import (
    VIC,
    base_config,
    fake_fixture,
    running_opsbot,
    ssh_endpoint,
    write_config,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.lab.sshd import SSHServer
from tests.onboarding.lab_host import CANARY, NOT_DRAFTED, UNITS, LabHost, lab_host

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def host(
    docker_lab: DockerLab, sshd_server: SSHServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LabHost]:
    with lab_host(docker_lab, sshd_server, tmp_path_factory.mktemp("lab-host")) as made:
        yield made


def lab_endpoints(sshd_server: SSHServer, docker_lab: DockerLab) -> dict[str, Any]:
    """The endpoints discover reaches in the lab: ``lab`` (its sshd) and ``lab-docker`` (the
    lab's Docker engine through it)."""
    return {
        "lab": ssh_endpoint(sshd_server),
        "lab-docker": {"type": "docker", "via_ssh": "lab",
                       "remote_socket": str(docker_lab.socket_path)},
    }  # fmt: skip


@pytest.fixture(scope="module")
def config(
    docker_lab: DockerLab, sshd_server: SSHServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    path = tmp_path_factory.mktemp("discover") / "opsbot.yaml"
    keyless = ssh_endpoint(sshd_server, key_files=[str(path.parent / "nokey")])
    endpoints = {**lab_endpoints(sshd_server, docker_lab), "keyless": keyless}
    path.write_text(json.dumps({"endpoints": endpoints}))
    # A real key the lab user never authorized: the login is refused.
    key = str(path.parent / "nokey")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
    return path


def discover(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "opsbot", "discover", *args],
        capture_output=True, text=True, timeout=90, cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": "/root"},
    )  # fmt: skip


def problems_of(done: subprocess.CompletedProcess[str]) -> list[str]:
    """The one-line problems a discover that failed printed (never a traceback)."""
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("problem:")]


def drafted(stdout: str, tmp: Path) -> Any:
    """The draft as opsbot check reads it: it must load as a configuration."""
    path = tmp / "draft.yaml"
    path.write_text(stdout)
    load_config(path)
    return yaml.safe_load(stdout)


def test_the_lab_host_is_drafted_whole(
    host: LabHost, config: Path, tmp_path: Path, sshd_server: SSHServer
) -> None:
    done = discover("lab", "lab-docker", "--config", str(config))
    assert done.returncode == 0, done.stderr
    assert CANARY not in done.stdout + done.stderr  # no environment value, no file's contents
    assert "Traceback" not in done.stderr
    draft = drafted(done.stdout, tmp_path)
    targets = draft["targets"]
    assert targets["web"] == {
        "kind": "compose", "endpoint": "lab", "file": str(host.compose_file),
        "service": "web", "compose_command": ["docker-compose"],
        "checks": [{"type": "http", "url": f"http://127.0.0.1:{host.web_port}/health"}],
    }  # fmt: skip
    assert targets["worker"]["kind"] == "compose" and "checks" not in targets["worker"]
    assert targets["plain"] == {
        "kind": "container", "endpoint": "lab-docker", "container": "plain",
        "status_check": True,  # its HEALTHCHECK, read by the container's status
        "checks": [{"type": "tcp", "host": "127.0.0.1", "port": host.plain_port}],
    }  # fmt: skip
    assert targets["api"] == {
        "kind": "pm2", "endpoint": "lab", "process": "api",
        "checks": [{"type": "http", "url": f"http://127.0.0.1:{host.api_port}/health"}],
    }  # fmt: skip
    assert targets["jobs"] == {"kind": "pm2", "endpoint": "lab", "process": "jobs"}
    for unit in UNITS:
        name = unit.removesuffix(".service")
        assert targets[name] == {"kind": "systemd", "endpoint": "lab", "unit": unit}
    assert not any("worker@" in n or "vendor" in n for n in targets), NOT_DRAFTED
    assert targets["quizbot"] == {"kind": "k8s", "endpoint": "lab", "deployment": "quizbot",
                                  "namespace": "bots"}  # fmt: skip
    assert targets["site"]["namespace"] == "web"
    assert draft["endpoints"]["lab"]["host"] == sshd_server.host
    assert draft["endpoints"]["lab-docker"]["via_ssh"] == "lab"
    # Each entry says where it came from; the report counts them on stderr.
    cited = "# from lab-docker: docker ps (running, opsbot-lab/busybox:1), compose project quiz"
    assert cited in done.stdout
    assert f"# from lab: port {host.api_port} answered HTTP 200" in done.stdout
    assert "✅ lab: 2 pm2 process(es), 2 systemd unit(s), 2 deployment(s)" in done.stderr
    assert "✅ lab-docker: 3 container(s)" in done.stderr
    assert "systemctl does not answer" in done.stderr  # no systemd runs here: files only


def test_json_is_the_same_draft(host: LabHost, config: Path) -> None:
    done = discover("lab-docker", "--config", str(config), "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert set(data["config"]["targets"]) == {"web", "worker", "plain"}
    assert CANARY not in done.stdout


def test_unreachable_and_refused_are_one_line_each_beside_a_partial_draft(
    host: LabHost, config: Path, tmp_path: Path
) -> None:
    closed = free_port()
    done = discover("lab-docker", f"ssh://opsbot-lab@127.0.0.1:{closed}", "keyless",
                    "--config", str(config), "--timeout", "15")  # fmt: skip
    problems = problems_of(done)
    assert len(problems) == 2, done.stderr
    assert f"127.0.0.1:{closed} unreachable" in problems[0]
    assert "refused login as 'opsbot-lab'" in problems[1]
    draft = drafted(done.stdout, tmp_path)  # what could be read: lab-docker's containers
    assert set(draft["targets"]) == {"web", "worker", "plain"}


def test_a_word_naming_no_endpoint_runs_nothing(config: Path) -> None:
    done = discover("lab", "http://example.org", "--config", str(config))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("opsbot: unknown endpoint 'http://example.org': name one of")


fake = fake_fixture(scope="module", group_per_minute=None)


async def test_discover_in_the_chat_answers_the_draft_and_writes_nothing(
    host: LabHost, config: Path, fake: FakeBotAPI, tmp_path: Path
) -> None:
    data = base_config(fake, tmp_path / "data")
    data["endpoints"] = json.loads(config.read_text())["endpoints"]
    settings = write_config(tmp_path / "opsbot.yaml", data)
    before = (tmp_path / "opsbot.yaml").read_text()
    async with running_opsbot(fake, settings) as chat:
        reply = await chat.ask("/discover lab-docker", timeout=60)
        text = reply.text or ""
        assert "✅ lab-docker: 3 container(s)" in text, text
        assert "drafted 3 target(s)" in text and "Nothing was written" in text
        assert "kind: compose" in text and f"http://127.0.0.1:{host.web_port}/health" in text
        assert CANARY not in text
        refused = await chat.ask("/discover lab-docker", user=VIC)
        assert refused.text == "/discover needs the admin role: alice, bob have it"
        unknown = await chat.ask("/discover ssh://root@10.0.0.1")
        assert "unknown endpoint 'ssh://root@10.0.0.1'; known endpoints:" in (unknown.text or "")
    assert (tmp_path / "opsbot.yaml").read_text() == before


def test_merge_adds_only_what_is_new_and_keeps_the_file(
    host: LabHost, config: Path, tmp_path: Path
) -> None:
    endpoints = json.loads(config.read_text())["endpoints"]
    mine = tmp_path / "opsbot.yaml"
    mine.write_text(
        "# our inventory, by hand\n"
        + yaml.safe_dump({"endpoints": endpoints, "targets": {"web": {
            "kind": "compose", "endpoint": "lab", "file": str(host.compose_file),
            "service": "web", "description": "hand-written"}}}, sort_keys=False)
    )  # fmt: skip
    shown = discover("lab-docker", "--config", str(config), "--merge", str(mine))
    assert shown.returncode == 0, shown.stderr
    assert "+  worker:" in shown.stdout and "not written" in shown.stderr
    assert "hand-written" in mine.read_text() and "worker" not in mine.read_text()
    done = discover("lab-docker", "--config", str(config), "--merge", str(mine), "--yes")
    assert done.returncode == 0, done.stderr
    text = mine.read_text()
    assert text.startswith("# our inventory, by hand\n") and "description: hand-written" in text
    merged = load_config(mine)
    assert {"web", "worker", "plain"} <= set(merged.targets)
    assert merged.targets["web"].description == "hand-written"  # already there: left alone
    assert CANARY not in done.stdout + done.stderr + text
