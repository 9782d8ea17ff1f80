"""A deploy whose opsbot is SIGKILLed while it waits for the checks: the next opsbot on the
same store picks the run up (the reaper hands it to the deploy's recover once the dead run's
lease lapses), finishes the checks from the journal, and rolls back what is not healthy."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.actions.test_deploy_e2e import broken_image, registry, untag
from tests.factories import BOB, OPS, OPSBOT_TOKEN, OSCAR, base_config, start_opsbot
from tests.fakebotapi import FakeBotAPI
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.updates.conftest import new_repository, push
from tests.updates.lab_registry import LabRegistry

__all__ = ["registry"]
NAME = "dep-rec"


@pytest.fixture
def quiz(docker_lab: DockerLab, registry: LabRegistry) -> Iterator[dict[str, Any]]:
    repository = new_repository()
    push(docker_lab, registry, docker_lab.image_v1, repository, "2.0")
    push(docker_lab, registry, broken_image(docker_lab), repository, "2.1")
    image = f"{registry.host}/{repository}"
    with closing(docker_lab.client()) as client:
        client.images.remove(f"{image}:2.1")
    port = free_port()
    with closing(docker_lab.client()) as client:
        client.containers.run(
            f"{image}:2.0", ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name=NAME, detach=True, network_mode="host", init=True,
        )  # fmt: skip
        old_id = client.containers.get(NAME).attrs["Image"]
    yield {"image": image, "port": port, "old_id": old_id}
    with closing(docker_lab.client()) as client:
        client.containers.get(NAME).remove(force=True)
    untag(docker_lab, image)


async def test_a_killed_deploy_is_finished_and_rolled_back_by_the_next_opsbot(
    fake: FakeBotAPI, tmp_path: Path, docker_lab: DockerLab, registry: LabRegistry,
    quiz: dict[str, Any],
) -> None:  # fmt: skip
    config = base_config(fake, tmp_path / "data")
    config["endpoints"] = {"lab-docker": {"type": "docker", "url": docker_lab.base_url}}
    config["targets"] = {"quiz": {
        "kind": "container", "endpoint": "lab-docker", "container": NAME, "verify_deadline": 10,
        "checks": [{"type": "http", "url": f"http://127.0.0.1:{quiz['port']}/health"}],
        "updates": {"enabled": False, "registry": registry.url},
    }}  # fmt: skip
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))
    first = start_opsbot(path)
    try:
        await fake.wait_for_call("getUpdates", since=0, timeout=30)
        sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/deploy quiz 2.1")
        card = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"], timeout=30)
        request = (card.text or "").split("id ")[1].split()[0]
        fake.tap_button(OPSBOT_TOKEN, OPS, BOB, card.message_id, f"a:{request}")
        await fake.wait_for_message(
            OPS.id, lambda m: m.message_id == card.message_id
            and "deployed quizbot:2.1: waiting for healthy" in (m.text or ""), timeout=30,
        )  # fmt: skip
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    with closing(docker_lab.client()) as client:
        assert client.containers.get(NAME).attrs["Image"] != quiz["old_id"]  # 2.1 runs

    calls = len(fake.calls)
    second = start_opsbot(path)
    try:
        await fake.wait_for_call("getUpdates", since=calls, timeout=30)
        done = await fake.wait_for_message(
            OPS.id, lambda m: m.message_id == card.message_id
            and "deploy quiz — failed" in (m.text or ""), timeout=90,
        )  # fmt: skip
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    text = done.text or ""
    assert "⚠ opsbot stopped here; another opsbot took the run over" in text, text
    assert "✓ pulled quizbot:2.1" in text  # the dead run's own lines, kept
    assert "✗ still failing: http /health → 404" in text and "✓ healthy again" in text
    assert "back to quizbot:2.0, healthy again" in text
    with closing(docker_lab.client()) as client:
        assert client.containers.get(NAME).attrs["Image"] == quiz["old_id"]
    assert second.returncode == 0, stderr[-2000:]
