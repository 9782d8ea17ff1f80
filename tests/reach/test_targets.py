"""Target kinds: the argv each kind runs for status and logs, and how results are read."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import TypeAdapter

from opsbot.config import Target
from opsbot.reach.executors import ExecResult
from opsbot.reach.targets import State, logs_argv, parse_status, status_argv

TARGET = TypeAdapter(Target)


def target(**fields: Any) -> Any:
    return TARGET.validate_python(fields)


def result(stdout: str = "", exit_status: int = 0, stderr: str = "") -> ExecResult:
    return ExecResult(exit_status, stdout, stderr, 0.1)


COMPOSE = target(kind="compose", file="/srv/q/docker-compose.prod.yml", service="telegram-bot")
SYSTEMD = target(kind="systemd", unit="psychochauffeur-bot.service")
PM2 = target(kind="pm2", process="telegram-faceswap-bot")
K8S = target(kind="k8s", deployment="ajudadorabot", namespace="bots", context="prod")


def test_argv_per_kind_matches_the_runbooks() -> None:
    assert logs_argv(COMPOSE, 200) == [
        "docker", "compose", "-f", "/srv/q/docker-compose.prod.yml",
        "logs", "--no-color", "--tail", "200", "telegram-bot",
    ]  # fmt: skip
    assert logs_argv(SYSTEMD, 50) == [
        "journalctl", "-u", "psychochauffeur-bot.service", "-n", "50", "--no-pager",
        "-o", "short-iso",
    ]  # fmt: skip
    assert logs_argv(PM2, 100) == [
        "pm2", "logs", "telegram-faceswap-bot", "--nostream", "--raw", "--lines", "100",
    ]  # fmt: skip
    assert logs_argv(K8S, 30) == [
        "kubectl", "--context", "prod", "-n", "bots", "logs", "deployment/ajudadorabot",
        "--tail=30",
    ]  # fmt: skip
    assert status_argv(SYSTEMD) == ["systemctl", "is-active", "psychochauffeur-bot.service"]
    assert status_argv(PM2) == ["pm2", "jlist"]


def test_overrides_and_log_files_replace_the_kind() -> None:
    custom = target(
        kind="systemd",
        unit="x",
        actions={"status": ["/opt/x/health.sh"], "logs": ["/opt/x/logs.sh", "--n={lines}"]},
    )
    assert status_argv(custom) == ["/opt/x/health.sh"]
    assert logs_argv(custom, 7) == ["/opt/x/logs.sh", "--n=7"]
    tailed = target(kind="pm2", process="p", log_file="/var/log/p/error.log")
    assert logs_argv(tailed, 5) == ["tail", "-n", "5", "/var/log/p/error.log"]


@pytest.mark.parametrize(
    ("stdout", "state"),
    [
        ('{"State": "running", "Health": "healthy"}', State.OK),
        ('{"State": "running", "Health": "starting"}', State.WARN),
        ('{"State": "exited", "Health": ""}', State.FAIL),
        ('[{"State": "running"}, {"State": "restarting"}]', State.FAIL),
        ("", State.FAIL),
    ],
)
def test_compose_status(stdout: str, state: State) -> None:
    assert parse_status(COMPOSE, result(stdout)).state is state


@pytest.mark.parametrize(
    ("stdout", "exit_status", "state"),
    [("active\n", 0, State.OK), ("activating\n", 3, State.WARN), ("failed\n", 3, State.FAIL)],
)
def test_systemd_status(stdout: str, exit_status: int, state: State) -> None:
    assert parse_status(SYSTEMD, result(stdout, exit_status)).state is state


def test_pm2_status_reads_jlist() -> None:
    online = [
        {"name": "telegram-faceswap-bot", "pm2_env": {"status": "online", "restart_time": 3}}
    ]
    status = parse_status(PM2, result(json.dumps(online)))
    assert status.state is State.OK and "3 restarts" in status.detail
    stopped = [{"name": "telegram-faceswap-bot", "pm2_env": {"status": "stopped"}}]
    assert parse_status(PM2, result(json.dumps(stopped))).state is State.FAIL
    assert "no pm2 process" in parse_status(PM2, result("[]")).detail
    assert parse_status(PM2, result("not json")).state is State.FAIL


def test_k8s_status_counts_ready_replicas() -> None:
    def deployment(ready: int, wanted: int) -> str:
        return json.dumps({"status": {"replicas": wanted, "readyReplicas": ready}})

    assert parse_status(K8S, result(deployment(3, 3))).state is State.OK
    assert parse_status(K8S, result(deployment(1, 3))).state is State.WARN
    assert parse_status(K8S, result(deployment(0, 3))).detail == "0/3 ready"


def test_timeouts_and_failures_are_failures() -> None:
    timed_out = ExecResult(None, "", "", 5.0, timed_out=True)
    assert parse_status(SYSTEMD, timed_out).state is State.FAIL
    command = target(kind="command", actions={"status": ["check"]})
    failed = parse_status(command, result("", 2, "boom\nmore"))
    assert failed.state is State.FAIL and failed.detail == "exit 2: boom"
