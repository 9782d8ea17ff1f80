"""Restart and rollback, planned then executed against real things, verified healthy after.

- containers on the lab dockerd (busybox httpd with an HTTP check), restarted and rolled back
  from ``opsbot-lab/busybox:2`` to the recorded known-good ``:1``;
- a process of the lab user behind the real sshd, restarted by a script that must outlive the
  SSH channel, and one whose restart leaves it dead (a short verify_deadline);
- the argv every other kind would run, as an approval card shows it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import tarfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsbot.actions import versions
from opsbot.actions.kinds import (
    Plan,
    execute,
    observe_version,
    plan_restart,
    plan_rollback,
)
from opsbot.config import Settings, load_config
from opsbot.errors import ExecutorError, UsageError
from opsbot.reach.targets import State
from opsbot.services import Services
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import PID_STATUS_SCRIPT, lab_user_dir
from tests.lab.dockerd import DockerLab, run_http_container
from tests.lab.ports import free_port, process_alive, wait_http
from tests.lab.sshd import SSHServer

SUFFIX = uuid.uuid4().hex[:8]
WEB = f"actions-web-{SUFFIX}"
ROLLY = f"actions-rolly-{SUFFIX}"
SLEEPY = f"actions-sleepy-{SUFFIX}"
BROKEN_IMAGE = "opsbot-lab/actions-broken:1"
RESTART_POLICY = {"Name": "on-failure", "MaximumRetryCount": 3}

# restart.sh NAME [broken]: stop NAME's process (pid file), start a new one that outlives the
# SSH channel (own session, no fd on the channel); "broken" leaves it stopped, as a bad deploy.
RESTART_SCRIPT = """#!/bin/sh
cd "$(dirname "$0")" || exit 1
name=$1
if [ -f "$name.pid" ]; then
  kill "$(cat "$name.pid")" 2>/dev/null
  rm -f "$name.pid"
fi
if [ "$2" = broken ]; then
  echo "FATAL: $name: config invalid, exiting" >> "$name.log"
  echo "started $name"
  exit 0
fi
setsid sh -c 'echo $$ > "$1.pid.new"; mv "$1.pid.new" "$1.pid"; exec tail -f /dev/null' \
  sh "$name" < /dev/null >> "$name.log" 2>&1 &
i=0
while [ ! -f "$name.pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo "INFO: $name started as pid $(cat "$name.pid")" >> "$name.log"
echo "started $name as pid $(cat "$name.pid")"
"""


def write_config(path: Path, data: dict[str, Any]) -> Settings:
    """As tests.factories does, without importing the Telegram application."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def _http_container(lab: DockerLab, name: str, port: int, **options: Any) -> None:
    with closing(lab.client()) as client:
        client.containers.run(
            lab.image_v1, ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name=name, detach=True, network_mode="host", init=True, **options,
        )  # fmt: skip
    wait_http(f"http://127.0.0.1:{port}/health")


def _inspect(lab: DockerLab, name: str) -> dict[str, Any]:
    with closing(lab.client()) as client:
        attrs: dict[str, Any] = client.api.inspect_container(name)
        return attrs


def _leftovers(lab: DockerLab, name: str) -> list[str]:
    with closing(lab.client()) as client:
        return [c.name for c in client.containers.list(all=True) if c.name.startswith(name + "-")]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def ports(docker_lab: DockerLab) -> Iterator[dict[str, int]]:
    """WEB and ROLLY serve HTTP from :1; SLEEPY runs the image's own command (sh, on a tty)."""
    found = {"web": free_port(), "rolly": free_port()}
    run_http_container(docker_lab, WEB, found["web"])
    _http_container(
        docker_lab, ROLLY, found["rolly"], environment={"GREETING": "hello"},
        restart_policy=RESTART_POLICY, labels={"team": "ops"},
    )  # fmt: skip
    with closing(docker_lab.client()) as client:
        client.containers.run(
            docker_lab.image_v1, name=SLEEPY, detach=True, tty=True, stdin_open=True,
            network_mode="none", stop_signal="SIGKILL",  # no init: it would start anything
        )  # fmt: skip
        # An image whose default command does not exist: a container from it cannot start.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("README")
            info.size = 6
            tar.addfile(info, io.BytesIO(b"broken"))
        client.api.import_image_from_data(
            buf.getvalue(), repository=BROKEN_IMAGE.split(":")[0], tag="1",
            changes=['CMD ["/no-such-program"]'],
        )  # fmt: skip
    yield found
    with closing(docker_lab.client()) as client:
        for container in client.containers.list(all=True):
            if SUFFIX in container.name:
                container.remove(force=True)


@pytest.fixture(scope="module")
def app_dir(sshd_server: SSHServer) -> Iterator[Path]:
    """The scripts, and two processes of the lab user already running: app and broken."""
    scripts = {"restart.sh": RESTART_SCRIPT, "status.sh": PID_STATUS_SCRIPT}
    folder = lab_user_dir(sshd_server, f"actions-{SUFFIX}", scripts)
    for name in ("app", "broken"):
        subprocess.run(
            ["runuser", "-u", sshd_server.username, "--", "sh", str(folder / "restart.sh"), name],
            check=True, capture_output=True, timeout=20,
        )  # fmt: skip
    yield folder
    for pid_file in folder.glob("*.pid"):
        with suppress(ProcessLookupError, ValueError):
            os.kill(int(pid_file.read_text()), 15)


@pytest.fixture(scope="module")
def settings(
    tmp_path_factory: pytest.TempPathFactory,
    docker_lab: DockerLab,
    sshd_server: SSHServer,
    ports: dict[str, int],
    app_dir: Path,
) -> Settings:
    tmp = tmp_path_factory.mktemp("actions")

    def http(port: int) -> list[dict[str, Any]]:
        return [{"type": "http", "url": f"http://127.0.0.1:{port}/health", "timeout": 2}]

    def ssh_process(name: str, *restart: str, deadline: float = 10) -> dict[str, Any]:
        return {
            "kind": "command", "endpoint": "lab-ssh", "verify_deadline": deadline,
            "log_file": str(app_dir / f"{name}.log"),
            "actions": {
                "status": ["sh", str(app_dir / "status.sh"), name],
                "restart": ["sh", str(app_dir / "restart.sh"), name, *restart],
            },
        }  # fmt: skip

    docker = {"kind": "container", "endpoint": "lab-docker", "verify_deadline": 15}
    return write_config(tmp / "opsbot.yaml", {
        "data_dir": str(tmp / "data"),
        "endpoints": {
            "lab-docker": {"type": "docker", "url": docker_lab.base_url},
            "lab-ssh": {
                "type": "ssh", "host": sshd_server.host, "port": sshd_server.port,
                "user": sshd_server.username, "key_files": [str(sshd_server.client_key)],
                "known_hosts": str(sshd_server.known_hosts),
            },
        },
        "targets": {
            "web": {**docker, "container": WEB, "checks": http(ports["web"])},
            "rolly": {**docker, "container": ROLLY, "checks": http(ports["rolly"])},
            "fresh": {**docker, "container": WEB},  # same container, no history of its own
            "sleepy": {**docker, "container": SLEEPY},
            "app": ssh_process("app"),
            "broken": ssh_process("broken", "broken", deadline=2),
            "unit": {"kind": "systemd", "unit": "quizbot.service", "user_unit": True},
            "pm": {"kind": "pm2", "process": "quizbot"},
            "kube": {"kind": "k8s", "deployment": "quizbot", "namespace": "bots",
                     "context": "prod", "verify_deadline": 90},
            "comp": {"kind": "compose", "file": "/srv/quiz/compose.yaml", "service": "bot"},
            "custom": {"kind": "command", "actions": {
                "status": ["true"], "rollback": ["/srv/quiz/deploy", "--previous"]}},
        },
    })  # fmt: skip


@pytest.fixture(scope="module")
async def services(settings: Settings) -> AsyncIterator[Services]:
    built = Services.build(settings)
    yield built
    await built.close()


@pytest.fixture(scope="module")
async def store(settings: Settings) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(settings.data_dir / "actions-test.sqlite3")
    yield opened
    await opened.close()


class Progress:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def __call__(self, text: str) -> None:
        self.seen.append(text)


# --------------------------------------------------------------------------- plans


async def test_plans_show_the_exact_argv_of_each_kind(
    settings: Settings, services: Services, store: SQLiteStore
) -> None:
    targets = settings.targets

    async def restart_steps(name: str) -> tuple[str, ...]:
        planned = await plan_restart(name, targets[name], services, store)
        assert (planned.action, planned.target) == ("restart", name)
        return planned.steps

    assert await restart_steps("unit") == ("systemctl --user restart quizbot.service",)
    # The card's line: the action, the target, where, and the argv itself, once.
    pm = await plan_restart("pm", targets["pm"], services, store)
    assert pm.note == "restart pm on local: pm2 restart quizbot"
    kube_plan = await plan_restart("kube", targets["kube"], services, store)
    assert kube_plan.note == (
        "restart kube on local: a rolling restart of deployment quizbot in bots"
    )
    assert await restart_steps("pm") == ("pm2 restart quizbot",)
    assert await restart_steps("comp") == ("docker compose -f /srv/quiz/compose.yaml restart bot",)
    kube = ("kubectl --context prod -n bots",) * 2
    assert await restart_steps("kube") == (
        f"{kube[0]} rollout restart deployment/quizbot",
        f"{kube[1]} rollout status deployment/quizbot --timeout=90s",
    )
    undo = await plan_rollback("kube", targets["kube"], services, store)
    assert undo.steps[0] == "kubectl --context prod -n bots rollout undo deployment/quizbot"
    custom = await plan_rollback("custom", targets["custom"], services, store)
    assert custom.steps == ("/srv/quiz/deploy --previous",)
    assert custom.commands == (("/srv/quiz/deploy", "--previous"),)

    with pytest.raises(UsageError, match=r"needs actions\.restart"):
        await plan_restart("custom", targets["custom"], services, store)
    for name in ("unit", "pm"):
        with pytest.raises(UsageError, match=r"needs actions\.rollback"):
            await plan_rollback(name, targets[name], services, store)
    with pytest.raises(UsageError, match="compose file"):
        await plan_rollback("comp", targets["comp"], services, store)

    # What an approval request stores (asdict, through JSON) gives back the same plan.
    doc = json.loads(json.dumps(dataclasses.asdict(undo)))
    assert Plan.from_doc(doc) == undo
    assert Plan.from_doc(json.loads(json.dumps(custom.to_doc()))) == custom


# --------------------------------------------------------------------------- containers


async def test_restart_a_container_and_verify_it_healthy(
    settings: Settings, services: Services, store: SQLiteStore, docker_lab: DockerLab
) -> None:
    target = settings.targets["web"]
    before = await services.docker("lab-docker").container_status(WEB)
    planned = await plan_restart("web", target, services, store)
    assert planned.steps == (f"Docker API restart of container {WEB}",)
    # Said once, as a person would: what, where, how (and the container's state now).
    assert planned.note == (
        f"restart web on lab-docker: Docker API restart of container {WEB} (now running)"
    ), planned.note
    assert planned.from_version is not None and planned.from_version.startswith(
        f"{docker_lab.image_v1} (sha256:"
    )

    progress = Progress()
    result = await execute(planned, "web", target, services, store=store, progress=progress)

    assert result.ok, result
    # It names the check that proved it, not a second clock.
    assert re.fullmatch(
        r"healthy after \d+(\.\d)? m?s \(http /health → 200(; 1 more check OK)?\)", result.summary
    ), result.summary
    assert result.last_logs is None
    assert progress.seen[0] == "restarting…"
    assert result.output == f"container {WEB} restarted in {result.output.split()[-2]} s"
    after = await services.docker("lab-docker").container_status(WEB)
    assert after.running
    assert after.started_at is not None and before.started_at is not None
    assert after.started_at > before.started_at
    recorded = await versions.history(store, "web", 5)
    assert [(v.image, v.image_id) for v in recorded] == [(docker_lab.image_v1, after.image_id)]


async def test_rollback_without_a_known_good_version_is_refused(
    settings: Settings, services: Services, store: SQLiteStore
) -> None:
    with pytest.raises(UsageError, match="nothing to roll back to"):
        await plan_rollback("fresh", settings.targets["fresh"], services, store)
    # Seen healthy on its current image only: still nothing *else* to go back to.
    assert await observe_version("fresh", settings.targets["fresh"], services, store)
    assert not await observe_version("fresh", settings.targets["fresh"], services, store)
    with pytest.raises(UsageError, match="nothing to roll back to"):
        await plan_rollback("fresh", settings.targets["fresh"], services, store)


async def test_rollback_a_container_to_its_known_good_image(
    settings: Settings, services: Services, store: SQLiteStore, docker_lab: DockerLab
) -> None:
    target = settings.targets["rolly"]
    engine = services.docker("lab-docker")
    v1_id = await engine.image_id(docker_lab.image_v1)
    assert await observe_version("rolly", target, services, store)  # :1 seen healthy
    await engine.recreate_with_image(ROLLY, docker_lab.image_v2)  # a deploy of :2
    deployed = await engine.container_status(ROLLY)
    assert deployed.image == docker_lab.image_v2 and deployed.running

    planned = await plan_rollback("rolly", target, services, store)
    assert planned.from_version is not None
    assert planned.from_version.startswith(f"{docker_lab.image_v2} (sha256:")
    assert planned.to_version is not None
    assert planned.to_version.startswith(f"{docker_lab.image_v1} (sha256:")
    assert f"→ {docker_lab.image_v1}, recorded healthy just now" in planned.note
    assert planned.steps[0].startswith(
        f"Docker API: recreate container {ROLLY} on lab-docker with image {docker_lab.image_v1}"
    )

    # A plan made against another image than the one running now is not carried out.
    stale = dataclasses.replace(planned, from_image_id="sha256:" + "0" * 64)
    refused = await execute(stale, "rolly", target, services, store=store)
    assert not refused.ok and "changed since the plan" in refused.summary

    progress = Progress()
    result = await execute(planned, "rolly", target, services, store=store, progress=progress)

    assert result.ok, result
    assert result.summary.startswith("healthy after ")
    assert progress.seen[0] == f"rolling back to {planned.to_version}…"
    attrs = _inspect(docker_lab, ROLLY)
    assert attrs["Name"] == f"/{ROLLY}"
    assert attrs["Config"]["Image"] == docker_lab.image_v1 and attrs["Image"] == v1_id
    assert "GREETING=hello" in attrs["Config"]["Env"]
    assert attrs["Config"]["Labels"]["team"] == "ops"
    assert attrs["Config"]["Cmd"][0] == "httpd"
    assert attrs["HostConfig"]["RestartPolicy"] == RESTART_POLICY
    assert attrs["HostConfig"]["Init"] is True
    assert attrs["HostConfig"]["NetworkMode"] == "host"
    assert _leftovers(docker_lab, ROLLY) == []
    assert result.health is not None and result.health.state is State.OK
    newest = (await versions.history(store, "rolly", 1))[0]
    assert (newest.image, newest.image_id) == (docker_lab.image_v1, v1_id)


async def test_recreate_puts_the_old_container_back_when_the_new_one_cannot_start(
    services: Services, docker_lab: DockerLab, ports: dict[str, int]
) -> None:
    engine = services.docker("lab-docker")
    before = _inspect(docker_lab, SLEEPY)
    with pytest.raises(ExecutorError, match="the old container is back and running"):
        await engine.recreate_with_image(SLEEPY, BROKEN_IMAGE)
    after = _inspect(docker_lab, SLEEPY)
    assert after["Id"] == before["Id"]
    assert after["State"]["Running"]
    assert _leftovers(docker_lab, SLEEPY) == []
    with pytest.raises(ExecutorError, match="no image"):
        await engine.recreate_with_image(SLEEPY, "opsbot-lab/no-such-image:9")


# --------------------------------------------------------------------------- over SSH


async def test_restart_a_process_over_ssh_that_outlives_the_channel(
    settings: Settings, app_dir: Path, store: SQLiteStore
) -> None:
    target = settings.targets["app"]
    old_pid = int((app_dir / "app.pid").read_text())
    assert process_alive(old_pid)
    own = Services.build(settings)  # closed below: the process must survive the connection
    try:
        planned = await plan_restart("app", target, own, store)
        assert planned.steps == (f"sh {app_dir}/restart.sh app",)
        result = await execute(planned, "app", target, own, store=store)
    finally:
        await own.close()

    assert result.ok, result
    assert result.summary.startswith("healthy after ")
    assert "started app as pid" in result.output
    assert "$ sh" not in result.output  # one command: the card shows its argv already
    assert "(status → app running as pid " in result.summary, result.summary
    new_pid = int((app_dir / "app.pid").read_text())
    assert new_pid != old_pid
    assert not process_alive(old_pid)
    time.sleep(0.3)
    assert process_alive(new_pid), "the restarted process died with the SSH connection"
    assert Path(f"/proc/{new_pid}/cmdline").read_bytes().startswith(b"tail\0")


async def test_a_restart_that_leaves_the_target_down_reports_its_logs(
    settings: Settings, services: Services, store: SQLiteStore
) -> None:
    target = settings.targets["broken"]
    planned = await plan_restart("broken", target, services, store)
    progress = Progress()
    started = time.monotonic()
    result = await execute(planned, "broken", target, services, store=store, progress=progress)
    took = time.monotonic() - started

    assert not result.ok
    assert result.summary.startswith("still failing after 2"), result.summary
    assert "broken: no pid file" in result.summary
    assert result.last_logs is not None and "FATAL: broken: config invalid" in result.last_logs
    assert "started broken" in result.output
    waiting = [p for p in progress.seen if p.startswith("waiting for healthy… ")]
    assert waiting and all(p.startswith("waiting for healthy… (") for p in waiting), waiting
    assert 2 <= took < 6
