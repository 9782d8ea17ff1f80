"""/deploy TARGET VERSION end to end on a container: images pushed to a real docker-registry
(Debian's), pulled by the lab dockerd; the operator Oscar asks, the admin Bob approves by
tapping the card; a version whose health check fails is rolled back to the image that ran
before, verified; a good one stays, its container keeping env, mounts and restart policy."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from typing import Any

import docker.errors
import pytest
import pytest_asyncio

from tests.factories import (
    BOB,
    INCIDENTS,
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
from tests.lab.ports import LabError, free_port
from tests.updates.conftest import new_repository, push
from tests.updates.lab_registry import LabRegistry, start_registries

fake = fake_fixture(scope="module", group_per_minute=None)
NAME = "dep-quiz"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRegistry]:
    with start_registries(tmp_path_factory.mktemp("deploy-registry")) as registries:
        yield registries


def broken_image(docker_lab: DockerLab) -> str:
    """The lab image without /www/health: its httpd answers 404 there."""
    with closing(docker_lab.client()) as client:
        made = client.containers.run(docker_lab.image_v1, ["rm", "/www/health"], detach=True,
                                     network_mode="none")  # fmt: skip
        if made.wait(timeout=30)["StatusCode"] != 0:
            raise LabError("could not remove /www/health in the lab image")
        made.commit("opsbot-lab/broken", "1")
        made.remove()
    return "opsbot-lab/broken:1"


@pytest.fixture(scope="module")
def quiz(
    docker_lab: DockerLab, registry: LabRegistry, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A container running ``<registry>/<repo>:2.0``; 2.1 (broken) and 2.2 pushed too."""
    repository = new_repository()
    push(docker_lab, registry, docker_lab.image_v1, repository, "2.0")
    push(docker_lab, registry, broken_image(docker_lab), repository, "2.1")
    push(docker_lab, registry, docker_lab.image_v2, repository, "2.2")
    image = f"{registry.host}/{repository}"
    with closing(docker_lab.client()) as client:  # only what the registry gives is run
        for tag in ("2.0", "2.1", "2.2"):
            client.images.remove(f"{image}:{tag}")
    data = tmp_path_factory.mktemp("quiz-data")
    (data / "answers.txt").write_text("42\n")
    port = free_port()
    with closing(docker_lab.client()) as client:
        client.images.pull(image, tag="2.0")
        client.containers.run(
            f"{image}:2.0", ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name=NAME, detach=True, network_mode="host", init=True,
            environment={"QUIZ_MODE": "prod"}, volumes={str(data): {"bind": "/data"}},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        )  # fmt: skip
    yield {"image": image, "port": port}
    with closing(docker_lab.client()) as client:
        client.containers.get(NAME).remove(force=True)
    untag(docker_lab, image)


def untag(docker_lab: DockerLab, image: str) -> None:
    """Drop the registry's names from the lab images (pushed and pulled, they share the ids of
    ``image_v1`` and ``image_v2``, whose tags other tests read)."""
    with closing(docker_lab.client()) as client:
        for tag in ("2.0", "2.1", "2.2"):
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(f"{image}:{tag}")


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, docker_lab: DockerLab,
    registry: LabRegistry, quiz: dict[str, Any],
) -> AsyncIterator[ChatSession]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("deploy")
    config = base_config(fake, tmp / "data")
    config["endpoints"] = {"lab-docker": {"type": "docker", "url": docker_lab.base_url}}

    def target(**more: Any) -> dict[str, Any]:
        return {
            "kind": "container", "endpoint": "lab-docker", "container": NAME,
            "verify_deadline": 6,
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{quiz['port']}/health"}],
            "updates": {"enabled": False, "registry": registry.url}, **more,
        }  # fmt: skip

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    config["targets"] = {
        "quiz": target(backups=[{"type": "files", "paths": ["/data"], "remote_dir": "/tmp/b"}]),
        "quiz-down": target(updates={"enabled": False, "registry": dead}),
        "quiz-locked": target(updates={"enabled": False, "registry": registry.token_url}),
        "quiz-strict": target(deploy={"versions": r"^2\.\d+$"}),
    }
    settings = write_config(tmp / "opsbot.yaml", config)
    async with running_opsbot(fake, settings) as session:
        yield session


def running(docker_lab: DockerLab) -> dict[str, Any]:
    with closing(docker_lab.client()) as client:
        return dict(client.containers.get(NAME).attrs)


def request_id(card: FakeMessage) -> str:
    return (card.text or "").split("id ")[1].split()[0]


async def approve(chat: ChatSession, card: FakeMessage, done: str) -> FakeMessage:
    chat.tap(card, f"a:{request_id(card)}", user=BOB)
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=90,
    )  # fmt: skip


async def test_bad_input_says_why_runs_nothing_and_files_no_card(
    chat: ChatSession, docker_lab: DockerLab
) -> None:
    before = running(docker_lab)["Id"]
    said = {
        "/deploy nosuch 2.2": "unknown target 'nosuch'",
        "/deploy quiz 1.2;rm -rf /": "usage: /deploy TARGET VERSION",  # two words after quiz
        "/deploy quiz 1.2;rm": "'1.2;rm' is not a version quiz takes",
        "/deploy quiz ../x": "'../x' is not a version quiz takes",
        "/deploy quiz -h": "'-h' is not a version quiz takes",
        "/deploy quiz-strict 3.0": r"matching ^2\.\d+$",
        "/deploy quiz 9.9": ":9.9 in the registry",
        "/deploy quiz 2.0": "already",
        "/deploy quiz-down 2.2": "the registry did not answer",
        "/deploy quiz-locked 2.2": "401 Unauthorized",
    }
    for command, words in said.items():
        answer = await chat.ask(command, user=OSCAR)
        assert answer.text is not None and words in answer.text, (command, answer.text)
        assert "approval needed" not in answer.text and not answer.reply_markup, command
    assert running(docker_lab)["Id"] == before  # nothing ran


async def test_a_failing_version_is_rolled_back_to_what_ran(
    chat: ChatSession, docker_lab: DockerLab, quiz: dict[str, Any]
) -> None:
    old = running(docker_lab)
    card = await chat.ask("/deploy quiz 2.1", user=OSCAR)
    text = card.text or ""
    assert "deploy quiz — approval needed" in text, text
    assert "deploy quiz on lab-docker: quizbot:2.0 → quizbot:2.1\nbackup first" in text, text
    assert f"POST /images/create?fromImage={quiz['image']}&tag=2.1" in text  # the exact call
    assert "recreate dep-quiz with quizbot:2.1: same name, env, mounts, networks, " in text
    assert "POST /containers/create, /containers/dep-quiz/stop, /rename (both), /start" in text
    failed = await approve(chat, card, "deploy quiz — failed")
    shown = failed.text or ""
    assert "approved by bob" in shown
    assert "back to quizbot:2.0, healthy again" in shown, shown
    lines = card_lines(failed)
    assert any(re.fullmatch(r"✓ backup files: .*, verified · took .+", x) for x in lines), lines
    assert any(re.fullmatch(r"✓ pulled quizbot:2\.1 · took \d+(\.\d)? m?s", x) for x in lines)
    assert "✗ still failing: http /health → 404 · took 6." in "\n".join(lines), lines
    assert any(x.startswith("✓ back to quizbot:2.0 · took") for x in lines), lines
    assert any(x.startswith("✓ healthy again · took") for x in lines), lines
    assert all(len(x) < 80 for x in lines), lines
    now = running(docker_lab)
    assert now["Image"] == old["Image"] and now["Config"]["Image"] == old["Config"]["Image"]
    copy = await chat.fake.wait_for_message(INCIDENTS.id, lambda m: "deploy quiz" in m.text)
    assert copy.text is not None and "healthy again" in copy.text and copy.text.startswith("❌")


async def test_a_good_version_stays_with_the_container_settings_kept(
    chat: ChatSession, docker_lab: DockerLab, quiz: dict[str, Any]
) -> None:
    old = running(docker_lab)
    card = await chat.ask("/deploy quiz 2.2", user=OSCAR)
    done = await approve(chat, card, "deploy quiz — done")
    assert "deployed quizbot:2.2: healthy (http /health → 200)" in (done.text or ""), done.text
    lines = card_lines(done)
    assert any(x.startswith("✓ recreated dep-quiz with quizbot:2.2 · took") for x in lines)
    now = running(docker_lab)
    assert now["Config"]["Image"] == f"{quiz['image']}:2.2" and now["Image"] != old["Image"]
    assert "QUIZ_MODE=prod" in now["Config"]["Env"]
    assert now["HostConfig"]["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}
    assert [m["Destination"] for m in now["Mounts"]] == ["/data"]
    assert now["Name"] == f"/{NAME}"
    again = await chat.ask("/deploy quiz 2.2", user=OSCAR)
    assert "runs" in (again.text or "") and "already" in (again.text or "")


def card_lines(message: FakeMessage) -> list[str]:
    """The card's step lines, as shown (text and its block)."""
    return [line for line in (message.text or "").splitlines() if line[:1] in "✓✗"]
