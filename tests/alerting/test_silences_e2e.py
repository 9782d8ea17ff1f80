"""Silences end to end: a silenced alert hides no new outage, and every silence, unsilence
and ack, tapped or typed, is one audit entry. Its own bot and chat: the steps' edits would
spend the incident chat's minute that test_alerts_e2e's storm test counts on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from tests.factories import (
    ALICE,
    ALICE_PRIVATE,
    INCIDENTS,
    OPSBOT_TOKEN,
    WEBHOOK_TOKEN,
    ChatSession,
    fake_fixture,
    module_config,
    opsbot_chat,
    post_alerts_webhook,
    web_on,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage

# Telegram's rate limits on
fake = fake_fixture(scope="module")


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "silences")
    config["targets"] = {"web": {"kind": "command", "actions": {"status": ["true"]}}}
    config["alerts"] = {"monitor": {"enabled": False}}
    config["web"] = web_on(WEBHOOK_TOKEN)
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


def _data(message: FakeMessage) -> dict[str, str]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return {b["text"]: b["callback_data"] for row in rows for b in row}


async def _audited(chat: ChatSession, since: float, count: int) -> list[dict[str, object]]:
    """The audit entries since ``since`` once ``count`` of them are there (each is written
    just after its reply)."""
    deadline = time.monotonic() + 10
    while True:
        entries = [
            e for e in await chat.services.audit.entries(limit=1000)
            if float(str(e["ts"])) >= since and e["event"] in ("tap", "command")
        ]  # fmt: skip
        if len(entries) >= count or time.monotonic() > deadline:
            return entries
        await asyncio.sleep(0.05)


async def test_a_silenced_alert_hides_no_new_outage_and_every_step_is_audited_once(
    chat: ChatSession,
) -> None:
    since = time.time()
    body = {"target": "web", "severity": "critical", "summary": "web: disk full",
            "fingerprint": "e2e-disk"}  # fmt: skip
    assert (await post_alerts_webhook(chat, body)).status_code == 202
    card = await chat.fake.wait_for_message(INCIDENTS.id, _alert_text("web: disk full"))
    tap = _data(card)
    chat.fake.tap_button(OPSBOT_TOKEN, INCIDENTS, ALICE, card.message_id, tap["🔕 Silence 1h"])
    card = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: m.message_id == card.message_id
        and "silenced by alice until " in (m.text or ""))  # fmt: skip
    assert (card.text or "").endswith("(this alert only)") and "🔔 Unsilence" in _data(card)

    # a different failure of the same target, four minutes later or now: posted
    other = {"target": "web", "severity": "critical", "summary": "web: 5xx rate 12%",
             "fingerprint": "e2e-5xx"}  # fmt: skip
    assert (await post_alerts_webhook(chat, other)).status_code == 202
    second = await chat.fake.wait_for_message(INCIDENTS.id, _alert_text("web: 5xx rate 12%"))
    assert "silenced" not in (second.text or "")

    chat.fake.tap_button(OPSBOT_TOKEN, INCIDENTS, ALICE, card.message_id, tap_un(card))
    card = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: m.message_id == card.message_id
        and "silenced" not in (m.text or ""))  # fmt: skip
    chat.fake.tap_button(OPSBOT_TOKEN, INCIDENTS, ALICE, card.message_id, tap["👀 Ack"])
    await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: m.message_id == card.message_id
        and "acked by alice" in (m.text or ""))  # fmt: skip

    typed = await chat.ask("/silence web 30m maintenance", user=ALICE, chat=ALICE_PRIVATE)
    assert "every alert of web, whatever the check" in (typed.text or "")
    await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: m.message_id == second.message_id
        and (m.text or "").endswith("(every alert of web)"))  # fmt: skip
    silence_id = (typed.text or "").split(" · id ")[1].split()[0]
    # ids typed on a phone, in any case
    ended = await chat.ask(f"/unsilence {silence_id.lower()}", user=ALICE, chat=ALICE_PRIVATE)
    assert "ended by alice" in (ended.text or "")
    alert_id = _data(second)["👀 Ack"].partition(":")[2]
    acked = await chat.ask(f"/ack {alert_id.lower()}", user=ALICE, chat=ALICE_PRIVATE)
    assert (acked.text or "").startswith(f"👀 {alert_id}: ") and "Acked by alice" in acked.text

    entries = await _audited(chat, since, 6)

    def words(args: object) -> tuple[str, ...]:  # a tap's {"alert": ID, "for": "1h"} or argv
        return tuple(map(str, args.values() if isinstance(args, dict) else args))  # type: ignore[call-overload]

    steps = sorted((str(e["event"]), str(e["verb"]), words(e["args"])) for e in entries)
    first_id = tap["👀 Ack"].partition(":")[2]
    assert steps == sorted([
        ("tap", "silence", (first_id, "1h")),
        ("tap", "unsilence", (first_id,)),
        ("tap", "ack", (first_id,)),
        ("command", "silence", ("web", "30m", "maintenance")),
        ("command", "unsilence", (silence_id.lower(),)),
        ("command", "ack", (alert_id.lower(),)),
    ])  # fmt: skip
    assert all(e["who"] == "alice" for e in entries)
    taps = [e for e in entries if e["event"] == "tap"]
    assert all(e["target"] == "web" and e["alert"] == first_id for e in taps)
    assert all(str(e["identity"]).startswith("web · ") for e in taps)


def tap_un(card: FakeMessage) -> str:
    return _data(card)["🔔 Unsilence"]


def _alert_text(text: str) -> Callable[[FakeMessage], bool]:
    return lambda m: text in (m.text or "") and "CRITICAL" in (m.text or "")
