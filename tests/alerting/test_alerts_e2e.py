"""Alerts end to end: sources → opsbot's webhook server / monitor → the incident chat.

The fake Bot API enforces Telegram's limits here (20 messages a minute in a group, 30 a
second overall) and answers 429 beyond them, as Telegram does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import pytest_asyncio

from opsbot.alerting.engine import ALERT_ENGINE
from tests.factories import (
    ALICE,
    ALICE_PRIVATE,
    INCIDENTS,
    OPSBOT_TOKEN,
    STRANGER,
    WEBHOOK_TOKEN,
    ChatSession,
    fake_fixture,
    module_config,
    opsbot_chat,
    post_alerts_webhook,
    web_on,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.alertmanager import AlertmanagerFactory, post_alerts, rfc3339
from tests.lab.dockerd import DockerLab, run_http_container
from tests.lab.ports import free_port

# Telegram's rate limits on
fake = fake_fixture(scope="module")


@pytest.fixture(scope="module")
def web_port(docker_lab: DockerLab) -> Iterator[int]:
    port = free_port()
    run_http_container(docker_lab, "alert-web", port)
    yield port
    with closing(docker_lab.client()) as client:
        client.containers.get("alert-web").remove(force=True)


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI,
    tmp_path_factory: pytest.TempPathFactory,
    docker_lab: DockerLab,
    web_port: int,
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "alerts")
    config["endpoints"] = {"lab-docker": {"type": "docker", "url": docker_lab.base_url}}
    config["targets"] = {
        "web": {
            "kind": "container",
            "endpoint": "lab-docker",
            "container": "alert-web",
            "status_check": False,  # one check, so one outage is one alert
            "checks": [
                {"type": "http", "url": f"http://127.0.0.1:{web_port}/health", "timeout": 1}
            ],
            "monitor": {"enabled": True, "interval": 0.5, "fail_after": 3, "recover_after": 2},
        },
        "quizbot": {"kind": "command", "actions": {"status": ["true"]}},
    }
    config["alerts"] = {"digest_interval": 5, "monitor": {"enabled": False}}
    config["web"] = web_on(WEBHOOK_TOKEN)
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


def webhook_url(chat: ChatSession, path: str) -> str:
    web = chat.services.settings.web
    return f"http://{web.host}:{web.port}{path}"


def alert_messages(chat: ChatSession, needle: str) -> list[FakeMessage]:
    return [m for m in chat.bot_messages(INCIDENTS) if needle in (m.text or "")]


async def test_alertmanager_firing_then_resolved_is_one_message_edited(
    chat: ChatSession, alertmanager_factory: AlertmanagerFactory
) -> None:
    url = webhook_url(chat, "/alerts/alertmanager")
    with alertmanager_factory(url, WEBHOOK_TOKEN) as am:
        labels = {"alertname": "QuizbotDown", "severity": "critical", "service": "quizbot"}
        annotations = {"summary": "quizbot answers 502 on /health"}
        begin = datetime.now(UTC) - timedelta(seconds=5)
        await post_alerts(am, [{"labels": labels, "annotations": annotations,
                                "startsAt": rfc3339(begin)}])  # fmt: skip
        posted = await chat.fake.wait_for_message(
            INCIDENTS.id, lambda m: "quizbot answers 502" in (m.text or ""), timeout=20
        )
        assert posted.text is not None and "CRITICAL · quizbot" in posted.text
        assert posted.reply_markup is not None
        await post_alerts(am, [{"labels": labels, "annotations": annotations,
                                "startsAt": rfc3339(begin), "endsAt": rfc3339()}])  # fmt: skip
        resolved = await chat.fake.wait_for_message(
            INCIDENTS.id,
            lambda m: m.message_id == posted.message_id and "RESOLVED" in (m.text or ""),
            timeout=20,
        )
    assert resolved.reply_markup is None or resolved.reply_markup.get("inline_keyboard") == []
    # One alert message, edited in place; besides it only the short recovery line.
    mentions = alert_messages(chat, "quizbot answers 502")
    assert [m.message_id for m in mentions if "CRITICAL" in (m.history[0] or "")] == [
        posted.message_id
    ]
    others = [m for m in mentions if m.message_id != posted.message_id]
    assert len(others) <= 1 and all(m.edits == 0 and m.reply_markup is None for m in others)


async def test_a_stopped_container_alerts_once_and_recovers_once(
    chat: ChatSession, docker_lab: DockerLab
) -> None:
    with closing(docker_lab.client()) as client:
        container = client.containers.get("alert-web")
        container.stop(timeout=1)
        try:
            alert = await chat.fake.wait_for_message(
                INCIDENTS.id, lambda m: "· web" in (m.text or "") and "CRITICAL" in (m.text or ""),
                timeout=30,
            )  # fmt: skip
            assert alert.text is not None and "3 checks in a row" in alert.text
        finally:
            container.start()
    recovered = await chat.fake.wait_for_message(
        INCIDENTS.id,
        lambda m: m.message_id == alert.message_id and "RESOLVED" in (m.text or ""),
        timeout=30,
    )
    assert recovered.text is not None
    await asyncio.sleep(2)  # healthy rounds keep running: nothing more is posted
    firing_posts = [m for m in alert_messages(chat, "· web") if "http" in (m.text or "")]
    assert [m.message_id for m in firing_posts] == [alert.message_id]


async def test_alert_buttons_ack_logs_and_silence_and_strangers_do_nothing(
    chat: ChatSession,
) -> None:
    response = await post_alerts_webhook(
        chat, {"target": "web", "severity": "warning", "summary": "slow answers on web"}
    )
    assert response.status_code == 202
    alert = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: "slow answers on web" in (m.text or ""), timeout=20
    )
    data = {
        b["text"]: b["callback_data"]
        for row in (alert.reply_markup or {})["inline_keyboard"]
        for b in row
    }
    assert set(data) == {"📜 Logs", "🔄 Restart", "🔕 Silence 1h", "👀 Ack", "🚨 Declare incident"}

    stranger = chat.tap(alert, data["👀 Ack"], user=STRANGER, chat=INCIDENTS)
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == stranger
    )
    await asyncio.sleep(0.5)
    assert "acked" not in (chat.fake.message(INCIDENTS.id, alert.message_id).text or "")  # type: ignore[union-attr]

    chat.tap(alert, data["👀 Ack"], user=ALICE, chat=INCIDENTS)
    await chat.fake.wait_for_message(
        INCIDENTS.id,
        lambda m: m.message_id == alert.message_id and "acked by alice" in (m.text or ""),
    )
    chat.tap(alert, data["📜 Logs"], user=ALICE, chat=INCIDENTS)
    logs = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: (m.text or "").startswith("📜 web"), timeout=20
    )
    assert logs.text is not None
    current = chat.fake.message(INCIDENTS.id, alert.message_id)
    assert current is not None
    chat.fake.tap_button(OPSBOT_TOKEN, INCIDENTS, ALICE, alert.message_id, data["🔕 Silence 1h"],
                         strict=False)  # fmt: skip
    await chat.fake.wait_for_message(
        INCIDENTS.id,
        lambda m: m.message_id == alert.message_id and "silenced" in (m.text or ""),
    )
    listed = await chat.ask("/silence list", user=ALICE, chat=ALICE_PRIVATE)
    assert listed.text is not None and "web" in listed.text


async def test_five_thousand_alerts_at_once_are_all_kept_and_never_flood(
    chat: ChatSession,
) -> None:
    """How fast a storm is taken in is bench/ingest.py's question; this one is what a person
    sees: every alert listable, one storm digest instead of a flood, no 429."""
    since = len(chat.fake.calls)
    for batch in range(50):
        body = [
            {"target": f"svc{i % 40}", "severity": "critical" if i % 7 == 0 else "warning",
             "summary": f"storm alert {batch * 100 + i}", "fingerprint": f"storm-{batch}-{i}"}
            for i in range(100)
        ]  # fmt: skip
        assert (await post_alerts_webhook(chat, body)).status_code == 202
    listed = await ALERT_ENGINE.of(chat.services).list(firing_only=False, limit=20_000)
    storm = [a for a in listed if a.summary.startswith("storm alert")]
    assert len(storm) == 5000  # every alert recorded and listable
    await chat.fake.wait_for_call(  # the digest goes out on the engine's tick
        "sendMessage",
        lambda c: "alert storm" in str(c.params.get("text")),
        timeout=30,
        since=since,
    )
    reply = await chat.ask("/alerts 5", user=ALICE, chat=ALICE_PRIVATE)
    assert reply.text is not None and "storm alert" in reply.text
    sends = [
        c
        for c in chat.fake.calls[since:]
        if c.method in ("sendMessage", "sendDocument")
        and int(c.params.get("chat_id", 0)) == INCIDENTS.id
    ]
    assert 1 <= len(sends) <= 20
    assert chat.fake.too_many_requests == []
    async with httpx.AsyncClient(timeout=10) as http:
        auth = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
        metrics = (await http.get(webhook_url(chat, "/metrics"), headers=auth)).text
    samples = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['opsbot_alerts_received_total{source="webhook"}'] >= 5000
    assert samples["opsbot_alerts_sent_total"] >= 1
    assert samples['opsbot_alerts_suppressed_total{reason="storm"}'] >= 1
    assert samples['opsbot_commands_total{outcome="ok",verb="alerts"}'] >= 1
