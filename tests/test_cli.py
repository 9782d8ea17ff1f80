"""The `opsbot` command as a user runs it: schema, console, check and run, as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import ALICE, OPS, OPSBOT_TOKEN, OPSBOT_USERNAME, PEOPLE, ssh_endpoint
from tests.fakebotapi import FakeBotAPI
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.lab.sshd import SSHServer

REPO = Path(__file__).resolve().parent.parent


def opsbot(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
           stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-m", "opsbot", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        env=env or clean_env(),
        timeout=timeout,
    )


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")}
    env["PYTHONPATH"] = str(REPO)  # this checkout's opsbot, whatever is installed
    return {**env, **extra}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI(group_per_minute=None) as api:
        api.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        yield api


def test_schema_is_json_for_editors() -> None:
    done = opsbot("schema")
    assert done.returncode == 0
    schema = json.loads(done.stdout)
    assert {"telegram", "people", "endpoints", "targets"} <= set(schema["properties"])


def test_console_runs_scripted_commands_from_stdin(tmp_path: Path) -> None:
    config = tmp_path / "local.yaml"
    config.write_text((REPO / "config" / "local.yaml").read_text())
    done = opsbot(
        "console", "--config", str(config), cwd=tmp_path,
        stdin="/health\n# a comment\n/logs machine 3\n/logs nosuch\n/help\n",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Health: 2 targets, 1 failing" in done.stdout
    assert "❌ python" in done.stdout and "connection refused" in done.stdout
    assert "📜 machine · last 3 lines" in done.stdout
    assert "unknown target 'nosuch'" in done.stdout
    assert "You are console (admin)" in done.stdout
    assert (tmp_path / "data" / "opsbot.sqlite3").exists()  # the audit trail's store


def test_a_bad_config_exits_with_the_field_and_line_not_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("targets:\n  quizbot:\n    kind: pm2\n")
    for command in ("console", "check", "run"):
        done = opsbot(command, "--config", str(config))
        assert done.returncode == 2
        assert "line 2: targets.quizbot.process: Field required" in done.stderr
        assert "Traceback" not in done.stderr


def test_run_without_a_token_says_what_to_do(tmp_path: Path) -> None:
    done = opsbot("run", "--config", str(REPO / "config" / "local.yaml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "telegram.token is not set" in done.stderr and "opsbot console" in done.stderr


def test_check_reports_each_endpoint_and_fails_on_any_failure(
    tmp_path: Path, sshd_server: SSHServer, docker_lab: DockerLab, fake: FakeBotAPI
) -> None:
    ssh = ssh_endpoint(sshd_server)
    config = {
        "telegram": {"token": OPSBOT_TOKEN, "api_url": fake.url},
        "endpoints": {
            "good-ssh": ssh,
            "spoofed-ssh": {**ssh, "known_hosts": str(sshd_server.known_hosts_wrong)},
            "closed-ssh": {**ssh, "port": free_port(), "connect_timeout": 3},
            "docker": {"type": "docker", "url": docker_lab.base_url},
            "docker-via-ssh": {
                "type": "docker",
                "via_ssh": "good-ssh",
                "remote_socket": str(docker_lab.socket_path),
            },
            "gone-docker": {"type": "docker", "url": f"unix://{tmp_path}/none.sock"},
        },
    }
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    started = time.monotonic()
    done = opsbot("check", "--config", str(path))
    assert time.monotonic() - started < 30
    assert done.returncode == 1, done.stdout + done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:] if line.strip()}
    assert " ok " in rows["good-ssh"] and "host key ok" in rows["good-ssh"]
    assert "FAILED" in rows["spoofed-ssh"] and "host key" in rows["spoofed-ssh"].lower()
    assert "FAILED" in rows["closed-ssh"] and "unreachable" in rows["closed-ssh"]
    assert " ok " in rows["docker"] and " ok " in rows["docker-via-ssh"]
    assert "FAILED" in rows["gone-docker"]
    assert " ok " in rows["telegram"] and f"@{OPSBOT_USERNAME}" in rows["telegram"]
    assert done.stdout.strip().endswith("5 ok, 3 failed")
    assert OPSBOT_TOKEN not in done.stdout + done.stderr


def test_check_on_the_example_config_names_every_unreachable_endpoint(tmp_path: Path) -> None:
    env = clean_env(
        HOME=str(tmp_path),  # no ~/.ssh here: each SSH endpoint fails before any network use
        OPSBOT_TELEGRAM__TOKEN="123456:" + "A" * 35,
        OPSBOT_TELEGRAM__API_URL=f"http://127.0.0.1:{free_port()}",
    )
    done = opsbot("check", "--config", str(REPO / "config" / "opsbot.example.yaml"), env=env)
    assert done.returncode == 1
    failed = [line.split()[0] for line in done.stdout.splitlines() if " FAILED " in line]
    expected = {"faceswap-vps", "chauffeur-vps", "quiz-vps", "k8s-bastion", "db-internal",
                "quiz-docker"}  # fmt: skip
    assert expected | {"telegram"} == set(failed)
    assert "A" * 35 not in done.stdout


def test_run_serves_the_chat_logs_no_secret_and_stops_cleanly(
    tmp_path: Path, fake: FakeBotAPI
) -> None:
    config = {
        "telegram": {"api_url": fake.url, "ops_chat_id": OPS.id, "poll_timeout": 1},
        "people": PEOPLE,
        "data_dir": str(tmp_path / "data"),
        "log_level": "DEBUG",
        "targets": {"machine": {"kind": "command", "actions": {"status": ["true"]}}},
    }
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))
    env = clean_env(OPSBOT_TELEGRAM__TOKEN=OPSBOT_TOKEN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "opsbot", "run", "--config", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not fake.calls_to("getUpdates") and time.monotonic() < deadline:
            time.sleep(0.05)
        sent = fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/health")
        deadline = time.monotonic() + 20
        replies: list[str | None] = []
        while not replies and time.monotonic() < deadline:
            replies = [
                m.text for m in fake.bot_messages(OPS.id) if m.message_id > sent["message_id"]
            ]
            time.sleep(0.05)
        assert replies and replies[0] is not None and "✅ machine" in replies[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr[-2000:]
    assert (tmp_path / "data" / "heartbeat").exists(), stderr[-3000:]
    assert "DEBUG" in stderr  # it did log, at length
    assert OPSBOT_TOKEN not in stderr + stdout
    assert OPSBOT_TOKEN.split(":")[1] not in stderr + stdout
