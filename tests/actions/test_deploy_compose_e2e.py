"""/deploy of a compose service with Debian's docker-compose on the lab dockerd: the tag goes
through an override file opsbot owns (the compose file is never changed), then ``pull`` and
``up -d --no-deps``; a tag whose health check fails is set back the same way."""

from __future__ import annotations

import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.actions.test_deploy_e2e import broken_image, registry, untag
from tests.factories import (
    BOB,
    OPS,
    OSCAR,
    ChatSession,
    base_config,
    fake_fixture,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port, require_binary
from tests.updates.conftest import new_repository, push
from tests.updates.lab_registry import LabRegistry

__all__ = ["registry"]  # the registry fixture, shared with the container's deploy tests
fake = fake_fixture(scope="module", group_per_minute=None)
PROJECT = "depcompose"


@pytest.fixture(scope="module")
def stack(
    docker_lab: DockerLab, registry: LabRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """``web`` running ``<registry>/<repo>:2.0`` through compose; 2.1 (broken) and 2.2 pushed."""
    repository = new_repository()
    push(docker_lab, registry, docker_lab.image_v1, repository, "2.0")
    push(docker_lab, registry, broken_image(docker_lab), repository, "2.1")
    push(docker_lab, registry, docker_lab.image_v2, repository, "2.2")
    image = f"{registry.host}/{repository}"
    with closing(docker_lab.client()) as client:
        for tag in ("2.0", "2.1", "2.2"):
            client.images.remove(f"{image}:{tag}")
    port = free_port()
    project = tmp_path_factory.mktemp("stack")
    compose_file = project / "docker-compose.yml"
    compose_file.write_text(json.dumps({"version": "2.4", "services": {"web": {
        "image": f"{image}:2.0", "network_mode": "host", "init": True,
        "command": ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
        "environment": {"QUIZ_MODE": "prod"},
    }}}))  # fmt: skip
    compose = ["env", f"DOCKER_HOST={docker_lab.base_url}",
               require_binary("docker-compose", "docker-compose"), "-p", PROJECT]  # fmt: skip
    base = [*compose, "-f", str(compose_file)]
    subprocess.run([*base, "up", "-d"], check=True, capture_output=True, timeout=120)
    yield {"image": image, "port": port, "file": compose_file, "compose": compose}
    subprocess.run([*base, "down"], check=False, capture_output=True, timeout=120)
    untag(docker_lab, image)


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, registry: LabRegistry,
    stack: dict[str, Any],
) -> AsyncIterator[ChatSession]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("deploy-compose")
    config = base_config(fake, tmp / "data")
    config["endpoints"] = {"here": {"type": "local"}}
    config["targets"] = {"stack": {
        "kind": "compose", "endpoint": "here", "file": str(stack["file"]), "service": "web",
        "compose_command": stack["compose"], "status_check": False, "verify_deadline": 5,
        "checks": [{"type": "http", "url": f"http://127.0.0.1:{stack['port']}/health"}],
        "updates": {"enabled": False, "registry": registry.url},
    }}  # fmt: skip
    async with running_opsbot(fake, write_config(tmp / "opsbot.yaml", config)) as session:
        yield session


def running(docker_lab: DockerLab) -> str:
    with closing(docker_lab.client()) as client:
        found = client.containers.list(filters={"label": f"com.docker.compose.project={PROJECT}"})
        assert len(found) == 1, found
        return str(found[0].attrs["Config"]["Image"])


async def approve(chat: ChatSession, card: FakeMessage, done: str) -> FakeMessage:
    request = (card.text or "").split("id ")[1].split()[0]
    chat.tap(card, f"a:{request}", user=BOB)
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=120,
    )  # fmt: skip


async def test_a_service_is_deployed_through_the_override_and_set_back_when_failing(
    chat: ChatSession, docker_lab: DockerLab, stack: dict[str, Any]
) -> None:
    file_before = Path(stack["file"]).read_text()
    override = Path(stack["file"]).parent / "opsbot-deploy.web.yml"
    for command, words in {
        "/deploy stack 9.9": ":9.9 in the registry",
        "/deploy stack 2.0": "already",
    }.items():
        answer = await chat.ask(command, user=OSCAR)
        assert words in (answer.text or "") and not answer.reply_markup, (command, answer.text)
    assert not override.exists()

    card = await chat.ask("/deploy stack 2.1", user=OSCAR)
    text = card.text or ""
    assert "deploy stack on here: quizbot:2.0 → quizbot:2.1" in text, text
    assert f"write {override}: services.web.image = {stack['image']}:2.1" in text
    assert f"-f {stack['file']} -f {override} up -d --no-deps web" in text
    failed = await approve(chat, card, "deploy stack — failed")
    lines = [x for x in (failed.text or "").splitlines() if x[:1] in "✓✗"]
    assert [x.split(" · took")[0] for x in lines] == [
        "✓ wrote opsbot-deploy.web.yml: quizbot:2.1", "✓ pulled quizbot:2.1",
        "✓ up -d --no-deps web", "✗ still failing: http /health → 404",
        "✓ wrote opsbot-deploy.web.yml: quizbot:2.0", "✓ back to quizbot:2.0", "✓ healthy again",
    ], lines  # fmt: skip
    assert running(docker_lab) == f"{stack['image']}:2.0"

    card = await chat.ask("/deploy stack 2.2", user=OSCAR)
    done = await approve(chat, card, "deploy stack — done")
    assert "deployed quizbot:2.2: healthy (http /health → 200)" in (done.text or "")
    assert running(docker_lab) == f"{stack['image']}:2.2"
    assert json.loads(override.read_text())["services"]["web"]["image"].endswith(":2.2")
    assert Path(stack["file"]).read_text() == file_before  # the user's file, untouched
