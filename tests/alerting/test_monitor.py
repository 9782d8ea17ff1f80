"""The monitor against real things made unhealthy for real, and the metric check it can run.

- a container on the lab dockerd, stopped and started again (an HTTP check);
- a process of the lab user behind the real sshd, killed and started again (its status script);
- a Prometheus metric on a local server crossing warning, then critical, then back.

Each: one failed round says nothing, ``fail_after`` (3) failed rounds fire once, and
``recover_after`` (2) good rounds resolve once. Rounds are called directly, back to back.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.monitor import Monitor, fingerprint, on_conflict
from opsbot.alerting.scheduler import run_forever
from opsbot.config import Settings
from opsbot.reach.checks import check_target
from opsbot.reach.targets import State
from opsbot.services import Services
from tests.factories import PID_STATUS_SCRIPT, lab_user_dir, ssh_endpoint, write_config
from tests.lab.dockerd import DockerLab, run_http_container
from tests.lab.ports import free_port, process_alive, wait_http
from tests.lab.sshd import SSHServer

SUFFIX = uuid.uuid4().hex[:8]
WEB = f"monitor-web-{SUFFIX}"
HYSTERESIS = {"interval": 30, "fail_after": 3, "recover_after": 2}

# start.sh NAME: NAME's process in its own session (it outlives the SSH channel), pid in NAME.pid.
START_SCRIPT = """#!/bin/sh
cd "$(dirname "$0")" || exit 1
rm -f "$1.pid"
setsid sh -c 'echo $$ > "$1.pid.new"; mv "$1.pid.new" "$1.pid"; exec tail -f /dev/null' \
  sh "$1" < /dev/null > /dev/null 2>&1 &
i=0
while [ ! -f "$1.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
test -f "$1.pid"
"""

METRICS = """\
# HELP bot_errors_total Handler errors.
# TYPE bot_errors_total counter
bot_errors_total{handler="start"} 4
bot_errors_total{handler="quiz"} 8
# HELP bot_memory_usage_bytes Resident memory.
# TYPE bot_memory_usage_bytes gauge
bot_memory_usage_bytes 900000000
# HELP bot_active_users Users seen in the last 5 minutes.
# TYPE bot_active_users gauge
bot_active_users 3
"""


# --------------------------------------------------------------------------- a metrics server


@dataclass
class MetricsServer:
    """Serves whatever text the test puts at a path: the operated bot's /metrics."""

    url: str
    pages: dict[str, tuple[int, str]] = field(default_factory=dict)

    def serve(self, path: str, text: str, status: int = 200) -> str:
        self.pages[path] = (status, text)
        return self.url + path

    def errors(self, path: str, value: float) -> str:
        return self.serve(path, f'bot_errors_total{{handler="quiz"}} {value}\n')


@pytest.fixture(scope="module")
def metrics() -> Iterator[MetricsServer]:
    server_box: list[MetricsServer] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, text = server_box[0].pages.get(self.path, (404, "not found\n"))
            body = text.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server_box.append(MetricsServer(f"http://127.0.0.1:{server.server_address[1]}"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server_box[0]
    server.shutdown()
    server.server_close()


# --------------------------------------------------------------------------- helpers


@contextlib.asynccontextmanager
async def monitoring(
    tmp_path: Path,
    targets: dict[str, Any],
    endpoints: dict[str, Any] | None = None,
    firing: dict[str, Severity] | None = None,
) -> AsyncIterator[tuple[Monitor, list[AlertEvent]]]:
    """A Monitor on real Services, its ingest a list (what the alert engine would receive)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    settings = write_config(tmp_path / "opsbot.yaml", {
        "data_dir": str(tmp_path / "data"),
        "alerts": {"monitor": HYSTERESIS},
        "endpoints": endpoints or {},
        "targets": targets,
    })  # fmt: skip
    services = Services.build(settings)
    ingested: list[AlertEvent] = []

    async def ingest(events: list[AlertEvent]) -> None:
        ingested.extend(events)

    try:
        yield Monitor(settings, services, ingest, firing=firing), ingested
    finally:
        await services.close()


async def rounds(monitor: Monitor, name: str, count: int) -> list[list[AlertEvent]]:
    """What each of `count` rounds emitted."""
    return [await monitor.round(name) for _ in range(count)]


def emitted(per_round: list[list[AlertEvent]]) -> list[int]:
    return [len(events) for events in per_round]


# --------------------------------------------------------------------------- (a) a container


@pytest.fixture(scope="module")
def web_port(docker_lab: DockerLab) -> Iterator[int]:
    port = free_port()
    run_http_container(docker_lab, WEB, port)
    yield port
    with closing(docker_lab.client()) as client:
        client.containers.get(WEB).remove(force=True)


def _stop(lab: DockerLab) -> None:
    with closing(lab.client()) as client:
        client.containers.get(WEB).stop(timeout=2)


def _start(lab: DockerLab, url: str) -> None:
    with closing(lab.client()) as client:
        client.containers.get(WEB).start()
    wait_http(url)


async def test_a_stopped_container_fires_once_after_three_rounds_and_resolves_once(
    tmp_path: Path, docker_lab: DockerLab, web_port: int
) -> None:
    url = f"http://127.0.0.1:{web_port}/health"
    target = {
        "kind": "container", "endpoint": "lab-docker", "container": WEB,
        "status_check": False,  # the HTTP check alone: one check, one alert
        "checks": [{"type": "http", "url": url, "timeout": 2}],
    }  # fmt: skip
    endpoints = {"lab-docker": {"type": "docker", "url": docker_lab.base_url}}
    async with monitoring(tmp_path, {"web": target}, endpoints) as (monitor, ingested):
        assert emitted(await rounds(monitor, "web", 2)) == [0, 0]

        await asyncio.to_thread(_stop, docker_lab)  # a blip: down for one round only
        assert emitted(await rounds(monitor, "web", 1)) == [0]
        await asyncio.to_thread(_start, docker_lab, url)
        assert emitted(await rounds(monitor, "web", 2)) == [0, 0]

        await asyncio.to_thread(_stop, docker_lab)
        down = await rounds(monitor, "web", 5)
        assert emitted(down) == [0, 0, 1, 0, 0]
        [fired] = down[2]
        assert (fired.status, fired.severity, fired.source) == ("firing", "critical", "monitor")
        assert fired.summary == "web: http /health: connection failed (3 checks in a row)"
        assert fired.target == "web"
        assert fired.fingerprint == fingerprint("web", f"http {url}")

        await asyncio.to_thread(_start, docker_lab, url)
        up = await rounds(monitor, "web", 3)
        assert emitted(up) == [0, 1, 0]
        [resolved] = up[1]
        assert (resolved.status, resolved.severity) == ("resolved", "critical")
        assert resolved.summary == "web: http /health: HTTP 200 (recovered, 2 checks in a row)"
        assert resolved.fingerprint == fired.fingerprint
        assert resolved.starts_at == fired.starts_at
        assert ingested == [fired, resolved]


# --------------------------------------------------------------------------- (b) a process


@pytest.fixture(scope="module")
def app_dir(sshd_server: SSHServer) -> Iterator[Path]:
    """The scripts, and the lab user's process `app` already running."""
    scripts = {"start.sh": START_SCRIPT, "status.sh": PID_STATUS_SCRIPT}
    folder = lab_user_dir(sshd_server, f"monitor-{SUFFIX}", scripts)
    _start_app(sshd_server, folder)
    yield folder
    with suppress(ProcessLookupError, ValueError, FileNotFoundError):
        os.kill(int((folder / "app.pid").read_text()), 15)


def _start_app(server: SSHServer, folder: Path) -> None:
    argv = ["runuser", "-u", server.username, "--", "sh", str(folder / "start.sh"), "app"]
    subprocess.run(argv, check=True, capture_output=True, timeout=20)


def _kill_app(folder: Path) -> int:
    pid = int((folder / "app.pid").read_text())
    os.kill(pid, 9)
    deadline = time.monotonic() + 10
    while process_alive(pid) and time.monotonic() < deadline:  # no kill -0: a zombie would pass
        time.sleep(0.01)
    return pid


async def test_a_killed_process_behind_ssh_fires_once_and_resolves_once_restarted(
    tmp_path: Path, sshd_server: SSHServer, app_dir: Path
) -> None:
    target = {
        "kind": "command", "endpoint": "lab-ssh",
        "actions": {"status": ["sh", str(app_dir / "status.sh"), "app"]},
    }  # fmt: skip
    endpoints = {"lab-ssh": ssh_endpoint(sshd_server)}
    async with monitoring(tmp_path, {"app": target}, endpoints) as (monitor, ingested):
        assert emitted(await rounds(monitor, "app", 2)) == [0, 0]

        await asyncio.to_thread(_kill_app, app_dir)  # a blip: restarted after one round
        assert emitted(await rounds(monitor, "app", 1)) == [0]
        await asyncio.to_thread(_start_app, sshd_server, app_dir)
        assert emitted(await rounds(monitor, "app", 2)) == [0, 0]

        pid = await asyncio.to_thread(_kill_app, app_dir)
        down = await rounds(monitor, "app", 4)
        assert emitted(down) == [0, 0, 1, 0]
        [fired] = down[2]
        assert (fired.status, fired.severity) == ("firing", "critical")
        assert fired.summary in (
            f"app: status: exit 1: app: pid {pid} is {how} (3 checks in a row)"
            for how in ("gone", "a zombie")
        )

        await asyncio.to_thread(_start_app, sshd_server, app_dir)
        new_pid = int((app_dir / "app.pid").read_text())
        up = await rounds(monitor, "app", 3)
        assert emitted(up) == [0, 1, 0]
        [resolved] = up[1]
        assert resolved.status == "resolved"
        assert resolved.summary == (
            f"app: status: app running as pid {new_pid} (recovered, 2 checks in a row)"
        )
        assert resolved.fingerprint == fired.fingerprint == fingerprint("app", "status")
        assert ingested == [fired, resolved]


# --------------------------------------------------------------------------- (c) a metric


def errors_target(url: str, **monitor: Any) -> dict[str, Any]:
    check = {"type": "metric", "url": url, "metric": "bot_errors_total", "warning": 5,
             "critical": 10, "timeout": 2}  # fmt: skip
    target: dict[str, Any] = {"kind": "command", "checks": [check]}
    if monitor:
        target["monitor"] = {**HYSTERESIS, **monitor}
    return target


async def test_a_metric_warns_then_escalates_eases_and_resolves_each_after_its_streak(
    tmp_path: Path, metrics: MetricsServer
) -> None:
    path = f"/quiz-{SUFFIX}/metrics"
    url = metrics.errors(path, 3)
    label = "metric bot_errors_total"
    async with monitoring(tmp_path, {"quizbot": errors_target(url)}) as (monitor, ingested):
        seen: list[AlertEvent] = []
        for value, expected in [
            (3, [0, 0]),
            (7, [0]),  # one warning round: a blip
            (3, [0]),
            (7, [0, 0, 1, 0]),  # warning, three rounds in a row: fires as a warning
            (12, [0, 0, 1, 0]),  # critical three rounds in a row: escalates
            (12.5, [0]),
            (7, [0, 1, 0]),  # no worse than warning two rounds: eases
            (3, [0, 1, 0]),  # good two rounds: resolves
            (3, [0, 0]),
        ]:
            metrics.errors(path, value)
            per_round = await rounds(monitor, "quizbot", len(expected))
            assert emitted(per_round) == expected, value
            seen += [event for events in per_round for event in events]

        assert seen == ingested
        assert [(e.status, e.severity, e.summary) for e in seen] == [
            ("firing", "warning",
             f"quizbot: {label}: bot_errors_total = 7 (> 5) (3 checks in a row)"),
            ("firing", "critical",
             f"quizbot: {label}: bot_errors_total = 12 (> 10) (3 checks in a row)"),
            ("firing", "warning",
             f"quizbot: {label}: bot_errors_total = 7 (> 5) (11 checks in a row)"),
            ("resolved", "warning",
             f"quizbot: {label}: bot_errors_total = 3 (recovered, 2 checks in a row)"),
        ]  # fmt: skip
        assert {e.fingerprint for e in seen} == {fingerprint("quizbot", label)}
        assert len({e.starts_at for e in seen}) == 1  # one incident, from its first bad round


async def test_a_restarted_monitor_resolves_what_was_firing_before(
    tmp_path: Path, metrics: MetricsServer
) -> None:
    url = metrics.errors(f"/restarted-{SUFFIX}/metrics", 1)
    key = fingerprint("quizbot", "metric bot_errors_total")
    targets = {"quizbot": errors_target(url)}
    async with monitoring(tmp_path / "fresh", targets) as (monitor, _):
        assert emitted(await rounds(monitor, "quizbot", 3)) == [0, 0, 0]
    firing = {key: Severity.critical}
    async with monitoring(tmp_path / "again", targets, firing=firing) as (monitor, ingested):
        assert emitted(await rounds(monitor, "quizbot", 3)) == [0, 1, 0]
        [resolved] = ingested
        assert (resolved.fingerprint, resolved.status, resolved.severity) == (
            key, "resolved", "critical"
        )  # fmt: skip


async def test_schedule_lists_monitored_targets_with_their_own_settings(
    tmp_path: Path, metrics: MetricsServer
) -> None:
    url = metrics.errors(f"/schedule-{SUFFIX}/metrics", 20)
    targets = {
        "quizbot": errors_target(url),
        "payments": errors_target(url, interval=5, fail_after=1),
        "muted": errors_target(url, enabled=False),
        "bare": {"kind": "systemd", "unit": "bare.service", "status_check": False},
    }
    async with monitoring(tmp_path, targets) as (monitor, _):
        assert monitor.schedule() == [("quizbot", 30.0), ("payments", 5.0)]
        assert emitted(await rounds(monitor, "payments", 2)) == [1, 0]  # fail_after: 1


async def test_run_forever_runs_rounds_at_the_interval_until_stopped(
    tmp_path: Path, metrics: MetricsServer
) -> None:
    url = metrics.errors(f"/forever-{SUFFIX}/metrics", 20)
    targets = {"quizbot": errors_target(url, interval=0.02)}
    async with monitoring(tmp_path, targets) as (monitor, ingested):
        stop = asyncio.Event()
        task = asyncio.create_task(run_forever(monitor, stop))
        async with asyncio.timeout(5):
            while not ingested:
                await asyncio.sleep(0.01)
        stop.set()
        async with asyncio.timeout(2):
            await task
        [fired] = ingested
        assert fired.summary.endswith("(3 checks in a row)")


def test_a_second_poller_on_the_token_is_a_critical_alert_of_its_own() -> None:
    fired = on_conflict("opsbot_test_bot")
    assert (fired.status, fired.severity, fired.source) == ("firing", "critical", "telegram")
    assert fired.summary == "another poller is using @opsbot_test_bot's token (409 Conflict)"
    again = on_conflict("@opsbot_test_bot", resolved=True)
    assert again.status == "resolved"
    assert again.fingerprint == fired.fingerprint
    assert on_conflict("quiz_prod_bot").fingerprint != fired.fingerprint


# --------------------------------------------------------------------------- the metric check


@pytest.fixture(scope="module")
async def metric_services(
    tmp_path_factory: pytest.TempPathFactory, metrics: MetricsServer
) -> AsyncIterator[tuple[Settings, Services]]:
    tmp = tmp_path_factory.mktemp("metric-check")
    url = metrics.serve("/metrics", METRICS)
    cases: dict[str, dict[str, Any]] = {
        "errors": {"metric": "bot_errors_total", "warning": 5, "critical": 10},
        "start": {"metric": "bot_errors_total", "labels": {"handler": "start"}, "warning": 5},
        "quiz": {"metric": "bot_errors_total", "labels": {"handler": "quiz"}, "warning": 5,
                 "critical": 10},
        "memory": {"metric": "bot_memory_usage_bytes", "warning": 858993459,
                   "critical": 966367641},  # 80 % and 90 % of 1 GiB
        "users": {"metric": "bot_active_users", "below": True, "warning": 5, "critical": 1},
        "missing": {"metric": "bot_restarts_total", "warning": 1},
        "unlabelled": {"metric": "bot_errors_total", "labels": {"handler": "nope"}},
        "broken": {"metric": "bot_errors_total", "url": metrics.serve("/500", "oops", 500)},
        "garbage": {"metric": "up", "url": metrics.serve("/html", "<html>hi</html>\n")},
        "refused": {"metric": "up", "url": f"http://127.0.0.1:{free_port()}/metrics"},
    }  # fmt: skip
    settings = write_config(tmp / "opsbot.yaml", {
        "data_dir": str(tmp / "data"),
        "targets": {
            name: {"kind": "command", "checks": [{"type": "metric", "url": url, **case}]}
            for name, case in cases.items()
        },
    })  # fmt: skip
    services = Services.build(settings)
    yield settings, services
    await services.close()


@pytest.mark.parametrize(
    ("name", "state", "detail"),
    [
        ("errors", State.FAIL, "bot_errors_total = 12 (> 10)"),
        ("start", State.OK, "bot_errors_total = 4"),
        ("quiz", State.WARN, "bot_errors_total = 8 (> 5)"),
        ("memory", State.WARN, "bot_memory_usage_bytes = 900000000 (> 858993459)"),
        ("users", State.WARN, "bot_active_users = 3 (< 5)"),
        ("missing", State.FAIL, "no metric bot_restarts_total"),
        ("unlabelled", State.FAIL, "no metric bot_errors_total"),
        ("broken", State.FAIL, "HTTP 500"),
        ("garbage", State.FAIL, "cannot parse the metrics text"),
        ("refused", State.FAIL, "connection failed"),
    ],
)
async def test_metric_check_sums_matching_samples_against_thresholds(
    metric_services: tuple[Settings, Services], name: str, state: State, detail: str
) -> None:
    settings, services = metric_services
    health = await check_target(name, settings.targets[name], services)
    [result] = health.checks
    assert (result.state, result.detail) == (state, detail)
    assert result.name.startswith("metric ")
    if name == "quiz":
        assert result.name == 'metric bot_errors_total{handler="quiz"}'
