"""One pacing rule for the alert chat, through the whole bot (the outbox and its worker, the
alert engine, PTB polling a command), against a fake Bot API that counts edits against the
group limit and answers 429 beyond it, as Telegram does.

Telegram's minute is shrunk to ``WINDOW`` seconds on both sides (the fake's limit and
``telegram.group_window``), and the engine's intervals with it, so a storm that takes
minutes on Telegram takes seconds here; the rule checked is the same: at most 20 calls in
any window per group.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest_asyncio

from opsbot.alerting.delivery import alert_text
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.records import Alert
from opsbot.state.outbox import Priority
from tests.factories import (
    INCIDENTS,
    ChatSession,
    base_config,
    engine_of,
    fake_fixture,
    opsbot_chat,
)
from tests.fakebotapi import Call, FakeBotAPI, FakeMessage

WINDOW = 3.0  # Telegram's minute, shrunk
PER_WINDOW = 20
CHAT = INCIDENTS.id
TARGETS = ["quizbot", "paybot", "searchbot", "mailbot", "authbot", "mapbot"]


fake = fake_fixture(group_per_minute=PER_WINDOW, group_window=WINDOW, count_edits=True)


@pytest_asyncio.fixture
async def chat(fake: FakeBotAPI, tmp_path: Path) -> AsyncIterator[ChatSession]:
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {t: {"kind": "command", "actions": {"status": ["true"]}} for t in TARGETS}
    config["alerts"] = {
        "max_messages_per_minute": 15,
        "digest_interval": 2,
        "edit_interval": 1,
        "monitor": {"enabled": False},
    }
    async with opsbot_chat(fake, tmp_path, config) as session:
        yield session


def event(i: int, status: Literal["firing", "resolved"] = "firing") -> AlertEvent:
    severity = [Severity.critical, Severity.warning, Severity.info][i % 3]
    return AlertEvent("alertmanager", f"pace-{i}", status, severity, f"check {i} failing",
                      TARGETS[i % len(TARGETS)])  # fmt: skip


def chat_calls(fake: FakeBotAPI) -> list[Call]:
    """Calls that put or change something in the alert chat."""
    methods = {"sendmessage", "editmessagetext", "pinchatmessage", "senddocument"}
    return [
        c for c in fake.calls
        if c.method.lower() in methods and c.params.get("chat_id") == CHAT
        and "_fault" not in c.params
    ]  # fmt: skip


def busiest_window(calls: list[Call]) -> int:
    times = [c.at for c in calls]
    return max((sum(1 for t in times if first <= t < first + WINDOW) for first in times),
               default=0)  # fmt: skip


async def settled(chat: ChatSession, timeout: float = 45.0) -> list[Alert]:
    """Wait until every alert message shows its alert's final text and nothing is queued."""
    engine = engine_of(chat)
    deadline = time.monotonic() + timeout
    while True:
        alerts = await engine.list(firing_only=False, limit=10_000)
        stale = [a for a in alerts if a.message_id is not None and await shown(chat, a) is None]
        if not stale and not await chat.services.outbox.pending():
            return alerts
        assert time.monotonic() < deadline, f"{len(stale)} alert messages never got final"
        await asyncio.sleep(0.2)


async def shown(chat: ChatSession, alert: Alert) -> FakeMessage | None:
    """The alert's message, if it shows the alert's current text."""
    message_id = await chat.services.outbox.message_id(alert.message_id or 0)
    message = chat.fake.message(CHAT, message_id or 0)
    return message if message is not None and message.text == alert_text(alert) else None


def alert_posts(fake: FakeBotAPI) -> dict[str, int]:
    """How many messages of its own each alert id got (by the ``id X`` they end with)."""
    posts: dict[str, int] = {}
    for message in fake.bot_messages(CHAT):
        first = message.history[0] or ""
        if " · id " in first and first[:1] != "⏰":
            alert_id = first.rsplit(" id ", 1)[1].split()[0]
            posts[alert_id] = posts.get(alert_id, 0) + 1
    return posts


async def test_a_storm_with_a_command_typed_in_it_stays_within_the_group_limit(
    chat: ChatSession,
) -> None:
    engine, outbox = engine_of(chat), chat.services.outbox
    await engine.ingest([event(i) for i in range(300)])  # 300 new alerts on six targets
    while any(e.kind == "send" and e.priority < Priority.alert for e in await outbox.pending()):
        await asyncio.sleep(0.05)  # the critical ones are posted (edits of them follow)
    await engine.ingest([event(i) for i in range(300)])  # repeats: counters to edit
    await engine.ingest([event(i, "resolved") for i in range(0, 300, 3)])  # a third resolve
    queued = [e for e in await outbox.pending() if e.kind == "edit"]

    typed_at, typed = len(chat.fake.calls), time.monotonic()
    command = chat.send("/alerts 3", chat=INCIDENTS)
    reply = await chat.fake.wait_for_message(
        CHAT, lambda m: m.reply_to_message_id == command["message_id"], timeout=10
    )
    alerts = await settled(chat)
    storm = await engine.storms.current(CHAT)
    while storm is not None and not storm.final_shown:  # the storm ends after a quiet interval
        await asyncio.sleep(0.2)
        storm = await engine.storms.current(CHAT)

    # The command was answered at once, ahead of the alert edits queued before it.
    assert len(queued) >= 5 and all(e.priority >= Priority.final for e in queued)
    assert reply.text is not None and reply.text.startswith("🚨 ")
    calls = chat.fake.calls
    reply_at = next(i for i, c in enumerate(calls) if c.method == "sendMessage" and
                    c.params.get("reply_parameters", {}).get("message_id")
                    == command["message_id"])  # fmt: skip
    overtaken = [c for c in calls[typed_at:reply_at] if c.params.get("chat_id") == CHAT]
    assert len(overtaken) <= 1  # at most one already in flight
    assert any(c.method == "editMessageText" for c in calls[reply_at:])

    busiest = busiest_window(chat_calls(chat.fake))
    latency = calls[reply_at].at - typed
    print(f"storm: {len(chat_calls(chat.fake))} calls, busiest {WINDOW:g} s window {busiest}, "
          f"{len(queued)} edits queued when the command was typed, answered in {latency:.2f} s")
    # One pacing rule: never more than 20 calls (sends and edits) in a window, never a 429.
    assert chat.fake.too_many_requests == []
    assert busiest_window(chat_calls(chat.fake)) <= PER_WINDOW

    # Every alert with a message shows its final text (counts, resolves); one message each.
    with_message = [a for a in alerts if a.message_id is not None]
    # 14 within the alert cap (its last slot is the digest's), then critical ones while the
    # window keeps room for them, leaving three slots to replies and one to the digest
    assert 10 <= len(with_message) <= 16 and len(alerts) == 300
    for alert in with_message:
        assert await shown(chat, alert) is not None
    assert sorted(alert_posts(chat.fake)) == sorted(a.id for a in with_message)
    assert set(alert_posts(chat.fake).values()) == {1}
    assert sum(a.digested for a in alerts) == 300 - len(with_message)
    digest = await chat.fake.wait_for_message(CHAT, lambda m: "storm over" in (m.text or ""))
    assert [m for m in chat.fake.bot_messages(CHAT) if "alert storm" in (m.history[0] or "")
            ] == [digest]  # fmt: skip
    assert digest.text is not None and digest.text.startswith("🌤 alert storm over: 600 alerts")
    assert "100 resolved" in digest.text


async def test_a_bot_api_outage_during_alert_delivery_loses_and_doubles_nothing(
    chat: ChatSession,
) -> None:
    engine, fake = engine_of(chat), chat.fake
    await engine.ingest([event(i) for i in range(3)])
    await settled(chat)
    fake.set_down(True)  # every call answers 502 Bad Gateway
    try:
        await engine.ingest([event(i) for i in range(10)])  # 7 new, 3 repeated
        await engine.ingest([event(i) for i in range(10)])
        await engine.ingest([event(i, "resolved") for i in (0, 4, 5)])
        await asyncio.sleep(WINDOW)  # the worker keeps failing, the engine keeps ticking
        assert len(fake.bot_messages(CHAT)) == 3
    finally:
        fake.set_down(False)
    alerts = await settled(chat)

    assert len(alerts) == 10 and all(a.message_id is not None for a in alerts)
    for alert in alerts:
        assert await shown(chat, alert) is not None, alert
    assert alert_posts(fake) == {a.id: 1 for a in alerts}  # nothing lost, nothing doubled
    # Recovery lines: at most one per resolved alert (one is skipped when the chat's window
    # and queue are full, as the outage left them: its message says RESOLVED all the same).
    recovered = [(m.text or "").rsplit("(id ", 1)[1].rstrip(")")
                 for m in fake.bot_messages(CHAT) if "recovered" in (m.text or "")]  # fmt: skip
    assert len(set(recovered)) == len(recovered) >= 1
    assert set(recovered) <= {a.id for a in alerts if a.status == "resolved"}
    assert sum(a.status == "resolved" for a in alerts) == 3
    assert fake.too_many_requests == []
    assert busiest_window(chat_calls(fake)) <= PER_WINDOW
