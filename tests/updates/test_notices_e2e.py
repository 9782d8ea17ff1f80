"""Update notices end to end: a container on the lab dockerd runs an image pulled from a real
docker-registry; newer images pushed there are announced in the ops chat (the fake Bot API)
once, whichever replica looks and however often, across a restart; Ignore and Deploy do what
they say; a registry that is down or refuses the login shows in /health, announces nothing
and is asked again at the next check."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from opsbot.state.outbox import Priority
from opsbot.updates.notices import CHECKS, NOTICES, Notice, UpdateChecker, notice_id
from tests.factories import (
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    ChatSession,
    Clock,
    base_config,
    fake_fixture,
    opsbot_chat,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port, require_binary
from tests.updates.conftest import new_repository, push, remove_container, run_container
from tests.updates.lab_registry import PASSWORD, USERNAME, LabRegistry

fake = fake_fixture(OPS, group_per_minute=None)
EVERY = 6 * 3600.0  # the default schedule


@pytest.fixture
def running(docker_lab: DockerLab, lab_registry: LabRegistry) -> Iterator[tuple[str, str]]:
    """A container running ``<registry>/<repository>:1.4`` as pushed: (container, repository)."""
    repository = new_repository()
    push(docker_lab, lab_registry, docker_lab.image_v1, repository, "1.4")
    name = f"upd-{uuid.uuid4().hex[:6]}"
    run_container(docker_lab, f"{lab_registry.host}/{repository}:1.4", name)
    yield name, repository
    remove_container(docker_lab, name)


def config(fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, container: str,
           updates: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    data = base_config(fake, tmp_path)
    data["endpoints"] = {"lab-docker": {"type": "docker", "url": docker_lab.base_url}}
    data["targets"] = {"quizbot": {"kind": "container", "endpoint": "lab-docker",
                                   "container": container, "updates": updates}}  # fmt: skip
    return data


@asynccontextmanager
async def opsbot(fake: FakeBotAPI, tmp_path: Path, data: dict[str, Any]
                 ) -> AsyncIterator[ChatSession]:  # fmt: skip
    async with opsbot_chat(fake, tmp_path, data) as chat:
        yield chat


def replica(chat: ChatSession, clock: Clock) -> UpdateChecker:
    """A checker on the same store, as another replica (or the same one restarted) has."""
    return UpdateChecker(chat.services, chat.services.notifier(Priority.alert), now=clock)


def notices_in(chat: ChatSession) -> list[FakeMessage]:
    return [m for m in chat.bot_messages(OPS) if (m.text or "").startswith("⬆️")]


async def wait_for_notice(chat: ChatSession, words: str) -> FakeMessage:
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: words in (m.text or ""), timeout=20, token=OPSBOT_TOKEN
    )


def data_of(message: FakeMessage, label: str) -> str:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return next(str(b["callback_data"]) for row in rows for b in row if label in b["text"])


async def tap(chat: ChatSession, message: FakeMessage, data: str) -> str:
    """Oscar (an operator) taps; the toast he saw."""
    query = chat.tap(message, data, user=OSCAR)
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == query
    )
    answer = chat.fake.answers(query) or {}
    return str(answer.get("text") or "")


async def test_a_newer_tag_is_announced_once_then_ignored_for_good(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    running: tuple[str, str],
) -> None:  # fmt: skip
    container, repository = running
    digest = push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5")
    push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5-alpine")  # other shape
    data = config(fake, tmp_path, docker_lab, container, {"registry": lab_registry.url})
    clock = Clock()
    async with opsbot(fake, tmp_path, data) as chat:
        first, second = replica(chat, clock), replica(chat, clock)
        await asyncio.gather(first.tick(), second.tick())  # two replicas, one slot
        card = await wait_for_notice(chat, f"{repository}:1.5 is out")
        assert card.text == (f"⬆️ quizbot: {lab_registry.host}/{repository}:1.5 is out "
                             f"(sha256:{digest[7:19]}…); running 1.4")  # fmt: skip
        clock.advance(EVERY)  # the next check: the same image is not news
        await replica(chat, clock).tick()
        assert len(notices_in(chat)) == 1

        toast = await tap(chat, card, data_of(card, "Ignore"))
        assert toast == "1.5 ignored: it will not be announced again."
        ignored = await wait_for_notice(chat, "ignored by oscar")
        assert ignored.message_id == card.message_id and not ignored.reply_markup

    # a restart (a fresh process over the same store): 1.5 stays quiet, 1.6 is news
    push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.6")
    clock.advance(EVERY)
    async with opsbot(fake, tmp_path, data) as chat:
        await replica(chat, clock).tick()
        await wait_for_notice(chat, f"{repository}:1.6 is out")
        texts = [m.text or "" for m in notices_in(chat)]
        assert sum(":1.5 is out" in t for t in texts) == 1  # the one ignored, never again
        assert sum(":1.6 is out" in t for t in texts) == 1


async def test_a_moved_tag_is_a_notice_and_deploy_files_the_deploy_command(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    running: tuple[str, str],
) -> None:  # fmt: skip
    container, repository = running
    moved = push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.4")  # re-pushed
    data = config(fake, tmp_path, docker_lab, container, {"registry": lab_registry.url})
    async with opsbot(fake, tmp_path, data) as chat:
        await replica(chat, Clock()).tick()
        card = await wait_for_notice(chat, "the tag 1.4 has moved")
        assert f"is now sha256:{moved[7:19]}…" in (card.text or "")
        assert len(notices_in(chat)) == 1  # nothing newer than 1.4 was pushed

        await tap(chat, card, data_of(card, "Deploy"))
        answer = await chat.fake.wait_for_message(
            OPS.id, lambda m: m.reply_to_message_id == card.message_id, timeout=20,
            token=OPSBOT_TOKEN,
        )  # fmt: skip
        # the tap filed /deploy quizbot 1.4: its approval card (the moved tag is pulled anew)
        assert "deploy quizbot — approval needed" in (answer.text or ""), answer.text
        assert "quizbot:1.4 → quizbot:1.4" in (answer.text or "")
        stored = await chat.services.store.scan(NOTICES)
        assert [d.value["state"] for d in stored.values()] == ["announced"]


async def test_a_registry_that_is_down_shows_in_health_and_is_asked_again(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    running: tuple[str, str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    container, repository = running
    push(docker_lab, lab_registry, docker_lab.image_v2, repository, "2.0")
    port = free_port()  # nothing listens here yet
    data = config(fake, tmp_path, docker_lab, container, {"registry": f"http://127.0.0.1:{port}"})
    clock = Clock()
    caplog.set_level(logging.WARNING, logger="opsbot.updates.notices")
    async with opsbot(fake, tmp_path, data) as chat:
        for _ in range(3):  # three checks, all failing
            await replica(chat, clock).tick()
            clock.advance(EVERY)
        health = await chat.ask("/health quizbot")
        assert "⚠️ update check failing since" in (health.text or "")
        assert f"http://127.0.0.1:{port} unreachable" in (health.text or "")
        failed = [r for r in caplog.records if "update check failed" in r.getMessage()]
        assert len(failed) == 1  # said once when it started failing, not at every check
        assert notices_in(chat) == []

        async with forwarding(port, lab_registry.url):  # the registry is back
            await replica(chat, clock).tick()
            await wait_for_notice(chat, f"{repository}:2.0 is out")
        health = await chat.ask("/health quizbot")
        assert "update check" not in (health.text or "")


async def test_a_refused_login_shows_unauthorized_and_never_the_password(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    running: tuple[str, str], caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    container, repository = running
    push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5")
    secret = tmp_path / "registry-password"
    updates = {"registry": lab_registry.token_url, "username": USERNAME,
               "password_file": str(secret)}  # fmt: skip
    data = config(fake, tmp_path, docker_lab, container, updates)
    caplog.set_level(logging.DEBUG)
    secret.write_text("not-the-password-4411\n")
    async with opsbot(fake, tmp_path, data) as chat:
        await replica(chat, Clock()).tick()
        health = await chat.ask("/health quizbot")
        assert "401 Unauthorized with the configured login" in (health.text or "")
        assert notices_in(chat) == []
    assert "not-the-password-4411" not in caplog.text

    secret.write_text(PASSWORD + "\n")  # the right login: token auth, then the notice
    clock = Clock()
    clock.advance(EVERY)
    async with opsbot(fake, tmp_path, data) as chat:
        await replica(chat, clock).tick()
        await wait_for_notice(chat, f"{repository}:1.5 is out")
    assert PASSWORD not in caplog.text


@asynccontextmanager
async def forwarding(port: int, url: str) -> AsyncIterator[None]:
    """127.0.0.1:``port`` forwarded to the registry at ``url`` (it comes back up there)."""
    host, _, target = url.removeprefix("http://").partition(":")

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(target))
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer),
                             return_exceptions=True)  # fmt: skip

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()


@pytest.fixture
def compose_service(docker_lab: DockerLab, lab_registry: LabRegistry, tmp_path: Path
                    ) -> Iterator[tuple[list[str], Path, str]]:  # fmt: skip
    """A compose project (Debian's docker-compose, on the lab dockerd) whose service ``bot``
    runs ``<registry>/<repository>:1.4``: (compose command, file, repository)."""
    repository = new_repository()
    push(docker_lab, lab_registry, docker_lab.image_v1, repository, "1.4")
    compose = ["env", f"DOCKER_HOST={docker_lab.base_url}",
               require_binary("docker-compose", "docker-compose")]  # fmt: skip
    file = tmp_path / "compose.yaml"
    file.write_text(json.dumps({"version": "2.4", "services": {"bot": {
        "image": f"{lab_registry.host}/{repository}:1.4", "command": ["sleep", "3600"],
        "init": True, "network_mode": "none"}}}))  # fmt: skip
    command = [*compose, "-p", f"upd{uuid.uuid4().hex[:6]}"]  # as the target names it
    project = [*command, "-f", str(file)]
    subprocess.run([*project, "up", "-d"], check=True, capture_output=True, timeout=120)
    yield command, file, repository
    subprocess.run([*project, "down", "-t", "0"], check=False, capture_output=True, timeout=120)


async def test_a_compose_service_is_read_through_its_compose_command(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    compose_service: tuple[list[str], Path, str],
) -> None:  # fmt: skip
    command, file, repository = compose_service
    push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5")
    data = base_config(fake, tmp_path)
    data["targets"] = {"quizbot": {
        "kind": "compose", "file": str(file), "service": "bot", "compose_command": command,
        "updates": {"registry": lab_registry.url}}}  # fmt: skip
    async with opsbot(fake, tmp_path, data) as chat:
        await replica(chat, Clock()).tick()
        checked = await chat.services.store.get(CHECKS, "quizbot")
        assert checked is not None and checked.value["error"] is None
        card = await wait_for_notice(chat, f"{repository}:1.5 is out")
        assert (card.text or "").endswith("running 1.4")


async def test_a_bot_api_outage_still_announces_once(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    running: tuple[str, str],
) -> None:  # fmt: skip
    container, repository = running
    push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5")
    data = config(fake, tmp_path, docker_lab, container, {"registry": lab_registry.url})
    clock = Clock()
    async with opsbot(fake, tmp_path, data) as chat:
        fake.fail_next("sendMessage", "Bad Gateway", error_code=502, times=2)
        await replica(chat, clock).tick()
        await wait_for_notice(chat, f"{repository}:1.5 is out")  # the outbox retried it
        clock.advance(EVERY)
        await replica(chat, clock).tick()
        assert len(notices_in(chat)) == 1


async def test_a_notice_a_crash_left_unqueued_is_sent_at_the_next_check(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry,
    running: tuple[str, str],
) -> None:  # fmt: skip
    container, repository = running
    digest = push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5")
    data = config(fake, tmp_path, docker_lab, container, {"registry": lab_registry.url})
    clock = Clock()
    async with opsbot(fake, tmp_path, data) as chat:
        # What a replica killed between filing the notice and queueing it leaves behind:
        key = notice_id("quizbot", "1.5")
        left = Notice(key, "quizbot", f"{lab_registry.host}/{repository}", "1.5", digest, "1.4",
                      moved=False)  # fmt: skip
        store = chat.services.store
        assert await store.create(NOTICES, key, {**left.to_doc(), "queued": False})
        await replica(chat, clock).tick()
        await wait_for_notice(chat, f"{repository}:1.5 is out")
        stored = await store.get(NOTICES, key)
        assert stored is not None and stored.value["queued"] is True
        clock.advance(EVERY)
        await replica(chat, clock).tick()
        assert len(notices_in(chat)) == 1
