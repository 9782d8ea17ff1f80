"""A container target on a Docker engine reached over TCP with --tlsverify (the lab's dockerd).

/health, /restart and /rollback go through the same chat flows as on the unix socket; a client
certificate signed by another CA, or a missing file, is a clear line in the chat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import pytest
import pytest_asyncio

from opsbot.errors import ExecutorError
from opsbot.reach.executors.docker import DockerEngine, DockerTLS
from tests.factories import BOB, OPS, OSCAR, ChatSession, fake_fixture, module_config, opsbot_chat
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.lab.tls import ClientCert

CONTAINER = "tls-quiz"


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture(scope="module")
def port(docker_lab: DockerLab) -> Iterator[int]:
    """busybox httpd from :1, started through the TLS endpoint itself."""
    port = free_port()
    with closing(docker_lab.tls_client()) as client:
        client.containers.run(
            docker_lab.image_v1,
            ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name=CONTAINER,
            detach=True,
            network_mode="host",
            init=True,
        )
    yield port
    with closing(docker_lab.client()) as client:
        client.containers.get(CONTAINER).remove(force=True)


def _tls(cert: ClientCert) -> dict[str, str]:
    return {
        "ca_cert": str(cert.ca_cert),
        "client_cert": str(cert.client_cert),
        "client_key": str(cert.client_key),
    }


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, docker_lab: DockerLab, port: int
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "tls")
    config["endpoints"] = {
        "tls-docker": {
            "type": "docker", "url": docker_lab.tls_url, "tls": _tls(docker_lab.pki.client),
        },
        "rogue-docker": {
            "type": "docker", "url": docker_lab.tls_url, "tls": _tls(docker_lab.pki.rogue),
            "timeout": 5,
        },
    }  # fmt: skip
    check = {"type": "http", "url": f"http://127.0.0.1:{port}/health"}
    config["targets"] = {
        "quiz": {
            "kind": "container", "endpoint": "tls-docker", "container": CONTAINER,
            "verify_deadline": 20, "checks": [check],
        },
        "intruder": {
            "kind": "container", "endpoint": "rogue-docker", "container": CONTAINER,
            "verify_deadline": 5, "checks": [],
        },
    }  # fmt: skip
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


async def _approve(chat: ChatSession, card: FakeMessage, done: str) -> FakeMessage:
    assert card.text is not None and "approval needed" in card.text, card.text
    request_id = card.text.split("id ")[1].split()[0]
    chat.tap(card, f"a:{request_id}", user=BOB)
    return await chat.fake.wait_for_message(
        OPS.id,
        lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=60,
    )


async def test_health_restart_and_rollback_over_tls(
    chat: ChatSession, docker_lab: DockerLab
) -> None:
    healthy = await chat.ask("/health quiz")
    assert healthy.text is not None and healthy.text.startswith("✅ quiz"), healthy.text
    assert "busybox:1" in healthy.text  # read from the engine over TLS

    with closing(docker_lab.client()) as client:
        started = client.containers.get(CONTAINER).attrs["State"]["StartedAt"]
    card = await chat.ask("/restart quiz", user=OSCAR)
    done = await _approve(chat, card, "restart quiz — done")
    assert done.text is not None and "healthy after" in done.text
    with closing(docker_lab.client()) as client:
        assert client.containers.get(CONTAINER).attrs["State"]["StartedAt"] != started

    # A deploy of :2 (over TLS too), then the rollback to the known-good :1.
    engine = DockerEngine(
        "deploy",
        docker_lab.tls_url,
        tls=DockerTLS(
            ca_cert=docker_lab.pki.ca_cert,
            client_cert=docker_lab.pki.client.client_cert,
            client_key=docker_lab.pki.client.client_key,
        ),
    )
    try:
        await engine.recreate_with_image(CONTAINER, docker_lab.image_v2)
    finally:
        await engine.close()
    healthy = await chat.ask("/health quiz")
    assert healthy.text is not None and "busybox:2" in healthy.text, healthy.text
    card = await chat.ask("/rollback quiz", user=OSCAR)
    assert card.text is not None and "busybox:2" in card.text and "busybox:1" in card.text
    done = await _approve(chat, card, "rollback quiz — done")
    assert done.text is not None and "healthy after" in done.text
    with closing(docker_lab.client()) as client:
        assert client.containers.get(CONTAINER).image.tags == [docker_lab.image_v1]


async def test_a_client_certificate_from_another_ca_is_a_clear_error(chat: ChatSession) -> None:
    reply = await chat.ask("/health intruder", timeout=30)
    assert reply.text is not None and reply.text.startswith("❌ intruder"), reply.text
    detail = reply.text
    assert "TLS" in detail and "certificate" in detail, detail
    assert "Traceback" not in detail


async def test_tls_errors_name_the_cause(docker_lab: DockerLab, tmp_path: Path) -> None:
    rogue = docker_lab.pki.rogue
    engine = DockerEngine(
        "rogue", docker_lab.tls_url, timeout=5,
        tls=DockerTLS(ca_cert=rogue.ca_cert, client_cert=rogue.client_cert,
                      client_key=rogue.client_key),
    )  # fmt: skip
    with pytest.raises(ExecutorError, match=r"rogue .*TLS.*certificate") as refused:
        await engine.ping()
    assert "Traceback" not in str(refused.value)
    await engine.close()

    missing = DockerEngine(
        "missing", docker_lab.tls_url, timeout=5,
        tls=DockerTLS(ca_cert=tmp_path / "nope.pem", client_cert=rogue.client_cert,
                      client_key=rogue.client_key),
    )  # fmt: skip
    with pytest.raises(ExecutorError, match=r"bad TLS settings.*nope\.pem"):
        await missing.ping()
    await missing.close()

    untrusted = DockerEngine(  # the server's certificate is not from the CA we trust
        "untrusted", docker_lab.tls_url, timeout=5,
        tls=DockerTLS(ca_cert=docker_lab.pki.ca_cert.parent / "rogue-ca.pem",
                      client_cert=docker_lab.pki.client.client_cert,
                      client_key=docker_lab.pki.client.client_key),
    )  # fmt: skip
    with pytest.raises(ExecutorError, match=r"TLS.*server certificate"):
        await untrusted.ping()
    await untrusted.close()
