"""/deploy of a pm2 process over the real sshd: ``deploy.argv`` (a runbook script taking the
version as its one argument, then ``pm2 restart``) with the version as one argv element; a
version that answers 500 on /health is deployed over with the one before."""

from __future__ import annotations

import pwd
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

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
from tests.lab.ports import free_port, require_binary, wait_until
from tests.lab.sshd import SSHServer
from tests.onboarding.lab_host import _answers, _as_lab_user

APP = """const fs = require("fs"), http = require("http");
const version = fs.readFileSync(process.env.VERSION_FILE, "utf8").trim();
http.createServer((req, res) => {
  res.writeHead(req.url === "/health" && version !== "2.1" ? 200 : 500); res.end(version);
}).listen(Number(process.env.PORT), "127.0.0.1");
"""
# The runbook's deploy: the version is "$1", one argument, quoted; never evaluated.
DEPLOY = """#!/bin/sh
set -eu
printf '%s\\n' "$1" > "$(dirname "$0")/web-version"
exec pm2 restart depweb
"""

fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture(scope="module")
def web(sshd_server: SSHServer) -> Iterator[dict[str, Any]]:
    pm2 = require_binary("pm2", "npm (then: npm install -g pm2)")
    work = sshd_server.workdir
    (work / "depweb.js").write_text(APP)
    (work / "web-version").write_text("2.0\n")
    (work / "web-deploy.sh").write_text(DEPLOY)
    (work / "web-deploy.sh").chmod(0o755)
    for name in ("depweb.js", "web-version", "web-deploy.sh"):
        subprocess.run(["chown", sshd_server.username, str(work / name)], check=True)
    port = free_port()
    _as_lab_user(sshd_server, [pm2, "start", str(work / "depweb.js"), "--name", "depweb"],
                 {"PORT": str(port), "VERSION_FILE": str(work / "web-version")})  # fmt: skip
    log = Path(pwd.getpwnam(sshd_server.username).pw_dir) / ".pm2" / "pm2.log"
    try:
        wait_until(lambda: _answers(port), what="the pm2 depweb process", log=log)
    except Exception:
        _as_lab_user(sshd_server, [pm2, "delete", "depweb"], {})
        raise
    yield {"port": port, "deploy": work / "web-deploy.sh", "version": work / "web-version"}
    _as_lab_user(sshd_server, [pm2, "delete", "depweb"], {})
    listed = subprocess.run(
        ["runuser", "-u", sshd_server.username, "--", "env", f"HOME={log.parent.parent}", pm2,
         "jlist"], capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if listed.stdout.strip().endswith("[]"):  # nobody else's processes: no daemon left behind
        _as_lab_user(sshd_server, [pm2, "kill"], {})


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, sshd_server: SSHServer,
    web: dict[str, Any],
) -> AsyncIterator[ChatSession]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("deploy-pm2")
    config = base_config(fake, tmp / "data")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {"web": {
        "kind": "pm2", "endpoint": "lab-ssh", "process": "depweb", "verify_deadline": 5,
        "checks": [{"type": "http", "url": f"http://127.0.0.1:{web['port']}/health"}],
        "deploy": {"argv": [str(web["deploy"]), "{version}"],
                   "current": ["cat", str(web["version"])]},
    }}  # fmt: skip
    async with running_opsbot(fake, write_config(tmp / "opsbot.yaml", config)) as session:
        yield session


async def approve(chat: ChatSession, card: FakeMessage, done: str) -> FakeMessage:
    request = (card.text or "").split("id ")[1].split()[0]
    chat.tap(card, f"a:{request}", user=BOB)
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=60,
    )  # fmt: skip


async def test_a_pm2_process_is_deployed_and_set_back_when_failing(
    chat: ChatSession, web: dict[str, Any]
) -> None:
    card = await chat.ask("/deploy web 2.1", user=OSCAR)
    assert f"on lab-ssh: {web['deploy']} 2.1" in (card.text or ""), card.text
    failed = await approve(chat, card, "deploy web — failed")
    lines = [x.split(" · took")[0] for x in (failed.text or "").splitlines() if x[:1] in "✓✗"]
    assert lines == [
        "✓ web-deploy.sh 2.1 (exit 0)", "✗ still failing: http /health → 500",
        "✓ back to 2.0: web-deploy.sh 2.0 (exit 0)", "✓ healthy again",
    ], lines  # fmt: skip
    assert Path(web["version"]).read_text() == "2.0\n"
    card = await chat.ask("/deploy web 2.2", user=OSCAR)
    done = await approve(chat, card, "deploy web — done")
    assert "deployed 2.2: healthy (http /health → 200)" in (done.text or ""), done.text
