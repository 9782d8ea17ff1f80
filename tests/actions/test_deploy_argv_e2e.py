"""/deploy of a command target over the real sshd: ``deploy.argv`` with its ``{version}``
element replaced by the version, one argv element, never through a shell; a version whose
status check fails is deployed over again with the version that ran before."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.factories import (
    BOB,
    OPS,
    OSCAR,
    ChatSession,
    base_config,
    fake_fixture,
    running_opsbot,
    ssh_endpoint,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.sshd import SSHServer

# deploy VERSION: records its argv as JSON (so one element is one element), then runs VERSION
APP = """#!/usr/bin/python3
import json, os, sys
here = os.path.dirname(os.path.abspath(__file__))
state = os.path.join(here, "app-current")
args = sys.argv[1:]
if args[0] == "deploy":
    with open(os.path.join(here, "app-deploys.log"), "a") as log:
        log.write(json.dumps(args[1:]) + "\\n")
    open(state, "w").write(args[1] + "\\n")
    print("now", args[1])
elif args[0] == "current":
    print(open(state).read().strip())
elif args[0] == "status":
    version = open(state).read().strip()
    print(("broken " if version == "2.1" else "running ") + version)
    sys.exit(1 if version == "2.1" else 0)
"""

fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture(scope="module")
def app(sshd_server: SSHServer) -> Path:
    script = sshd_server.workdir / "app.py"
    script.write_text(APP)
    script.chmod(0o755)
    for name in ("app-current", "app-deploys.log"):
        (sshd_server.workdir / name).write_text("2.0\n" if name == "app-current" else "")
        subprocess.run(["chown", sshd_server.username, str(sshd_server.workdir / name)],
                       check=True)  # fmt: skip
    return script


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, sshd_server: SSHServer,
    app: Path,
) -> AsyncIterator[ChatSession]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("deploy-argv")
    config = base_config(fake, tmp / "data")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    common = {"kind": "command", "endpoint": "lab-ssh", "verify_deadline": 3,
              "actions": {"status": [str(app), "status"]}}  # fmt: skip
    argv = [str(app), "deploy", "{version}"]
    config["targets"] = {
        "app": {**common, "deploy": {"argv": argv, "current": [str(app), "current"]}},
        "blind": {**common, "deploy": {"argv": argv}},
        "nodeploy": common,
    }
    async with running_opsbot(fake, write_config(tmp / "opsbot.yaml", config)) as session:
        yield session


def deploys(sshd_server: SSHServer) -> list[list[str]]:
    text = (sshd_server.workdir / "app-deploys.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


async def approve(chat: ChatSession, card: FakeMessage, done: str) -> FakeMessage:
    request = (card.text or "").split("id ")[1].split()[0]
    chat.tap(card, f"a:{request}", user=BOB)
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=60,
    )  # fmt: skip


def lines(message: FakeMessage) -> list[str]:
    return [line for line in (message.text or "").splitlines() if line[:1] in "✓✗"]


async def test_a_failing_version_is_deployed_over_with_the_one_before(
    chat: ChatSession, sshd_server: SSHServer, app: Path
) -> None:
    for command, words in {
        "/deploy app $(id)": "is not a version app takes",
        "/deploy app --help": "is not a version app takes",
        "/deploy app 2.0": "app runs 2.0 already",
        "/deploy nodeploy 2.0": "deploys with deploy.argv; none is configured",
    }.items():
        answer = await chat.ask(command, user=OSCAR)
        assert words in (answer.text or "") and not answer.reply_markup, (command, answer.text)
    assert deploys(sshd_server) == []

    card = await chat.ask("/deploy app 2.1", user=OSCAR)
    text = card.text or ""
    assert "deploy app on lab-ssh: 2.0 → 2.1" in text, text
    assert f"on lab-ssh: {app} deploy 2.1" in text and f"back to 2.0: {app} deploy 2.0" in text
    failed = await approve(chat, card, "deploy app — failed")
    shown = lines(failed)
    assert shown[0].startswith("✓ app.py deploy 2.1 (exit 0) · took"), shown
    assert shown[1].startswith("✗ still failing: status → ") and "broken 2.1" in shown[1]
    assert shown[2].startswith("✓ back to 2.0: app.py deploy 2.0 (exit 0) · took"), shown
    assert shown[3].startswith("✓ healthy again · took"), shown
    assert deploys(sshd_server) == [["2.1"], ["2.0"]]  # one element each time

    card = await chat.ask("/deploy app 2.2", user=OSCAR)
    done = await approve(chat, card, "deploy app — done")
    assert "deployed 2.2: healthy (status → running 2.2)" in (done.text or ""), done.text
    assert (sshd_server.workdir / "app-current").read_text() == "2.2\n"


async def test_without_deploy_current_the_last_healthy_deploy_is_what_runs(
    chat: ChatSession, sshd_server: SSHServer
) -> None:
    card = await chat.ask("/deploy blind 2.3", user=OSCAR)
    assert "unknown version → 2.3" in (card.text or "") and "not rolled back" in (card.text or "")
    await approve(chat, card, "deploy blind — done")
    again = await chat.ask("/deploy blind 2.3", user=OSCAR)
    assert "blind runs 2.3 already" in (again.text or ""), again.text
    card = await chat.ask("/deploy blind 2.4", user=OSCAR)
    assert "deploy blind on lab-ssh: 2.3 → 2.4" in (card.text or ""), card.text


async def test_history_says_who_deployed_what_and_how_it_ended(chat: ChatSession) -> None:
    shown = await chat.ask("/deploy app history", user=OSCAR)
    assert "🕘 app: the last 2 deploys, newest first (UTC)" in (shown.text or ""), shown.text
    rows = [line for line in (shown.text or "").splitlines() if line[:2] == "20"]
    assert rows[0].endswith("oscar (bob) 2.0 → 2.2 ✓ healthy"), rows  # 2.1 was rolled back
    assert rows[1].endswith("oscar (bob) 2.0 → 2.1 ✗ back to 2.0, healthy again"), rows
    nothing = await chat.ask("/deploy nodeploy history", user=OSCAR)
    assert "nodeploy: no deploys recorded yet" in (nothing.text or "")


async def test_a_freeze_or_an_open_incident_holds_deploys_unless_an_admin_overrides(
    chat: ChatSession, sshd_server: SSHServer
) -> None:
    from opsbot.incidents.state import INCIDENTS
    from tests.factories import ALICE

    refused = await chat.ask("/freeze 1h release day", user=OSCAR)
    assert "needs the admin role" in (refused.text or "")
    frozen = await chat.ask("/freeze 1h release day", user=ALICE)
    assert "🧊 change freeze by alice" in (frozen.text or "") and "release day" in frozen.text
    held = await chat.ask("/deploy app 3.0", user=OSCAR)
    assert "app not deployed: change freeze by alice" in (held.text or ""), held.text
    assert "override REASON" in (held.text or "") and not held.reply_markup
    mine = await chat.ask("/deploy app 3.0 override the fix", user=OSCAR)
    assert "override (past a change freeze or an open incident) is an admin's" in mine.text
    card = await chat.ask("/deploy app 3.0 override hotfix for the login bug", user=ALICE)
    text = card.text or ""
    assert "⚠️ override (change freeze by alice" in text and "hotfix for the login bug" in text
    await approve(chat, card, "deploy app — done")
    audit = await chat.services.store.tail("audit", "app", 20)
    overrides = [e for e in audit if e["event"] == "override"]
    assert overrides and overrides[0]["who"] == "alice"
    assert overrides[0]["reason"] == "hotfix for the login bug"
    assert "change freeze by alice" in overrides[0]["held"]
    rows = (await chat.ask("/deploy app history", user=OSCAR)).text or ""
    assert "alice (bob) 2.3 → 3.0 ✓ healthy [override: hotfix for the login bug]" in rows, rows
    lifted = await chat.ask("/unfreeze", user=ALICE)
    assert "change freeze lifted" in (lifted.text or "")

    incidents = INCIDENTS.bound(chat.services)
    assert incidents is not None
    declared = await incidents.declare("P2", "app logins fail", ["app"], "alice")
    held = await chat.ask("/deploy app 3.1", user=OSCAR)
    assert f"app not deployed: {declared.id} is open on app" in (held.text or ""), held.text
    await incidents.resolve(declared.id, "alice", "fixed")
    card = await chat.ask("/deploy app 3.1", user=OSCAR)
    assert "deploy app — approval needed" in (card.text or ""), card.text
    assert (sshd_server.workdir / "app-current").read_text() == "3.0\n"  # nothing ran yet
