"""Incidents over real components: a SQLite store file and a real ``telegram.Bot`` talking HTTP
to the fake Bot API. The incident chat is a forum (a topic per incident) or a plain group.
The engine's clock is injected where minutes must pass (reminders, durations, throttling).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import Literal

import pytest
from telegram import Bot

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Role, Settings
from opsbot.errors import UsageError
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.incidents.postmortem import postmortem
from opsbot.incidents.records import normalize_id
from opsbot.incidents.state import Incidents
from opsbot.incidents.timeline import note_alerts
from opsbot.incidents.verbs import VERB_SPEC, incident_verb
from opsbot.redact import Redactor
from opsbot.services import Services
from opsbot.state.store import Store
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.verbs.registry import Caller
from tests.factories import INCIDENTS, Clock, base_config, fake_fixture, write_config
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage

CHAT = INCIDENTS.id
SECTIONS = (
    "## Incident Report: ",
    "**Date:** ",
    "**Duration:** ",
    "**Severity:** ",
    "**Status:** ",
    "### Timeline",
    "### Impact",
    "### Root Cause",
    "### Resolution",
    "### Action Items",
    "### Lessons Learned",
)


fake = fake_fixture()


@pytest.fixture
def forum(fake: FakeBotAPI) -> FakeBotAPI:
    fake.add_chat(Chat(CHAT, "supergroup", "incidents", is_forum=True))
    return fake


@pytest.fixture
def plain(fake: FakeBotAPI) -> FakeBotAPI:
    fake.add_chat(Chat(CHAT, "supergroup", "incidents"))
    return fake


def make_settings(fake: FakeBotAPI, tmp_path: Path) -> Settings:
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {
        "quizbot": {"kind": "command", "actions": {"status": ["true"]}},
        "paybot": {"kind": "command", "actions": {"status": ["true"]}},
    }
    config["alerts"] = {"reminder_interval": 900, "monitor": {"enabled": False}}
    return write_config(tmp_path / "c.yaml", config)


async def fake_health(targets: Sequence[str]) -> str:
    return ", ".join(f"{t} failing" for t in targets)


def incidents_for(
    store: Store, settings: Settings, bot: Bot, clock: Clock | None = None
) -> Incidents:
    notifier = TelegramNotifier(bot, Redactor(settings.secrets()))
    return Incidents(store, settings, notifier, clock=clock or time.time, health=fake_health)


def card(fake: FakeBotAPI, message_id: int | None) -> FakeMessage:
    assert message_id is not None
    message = fake.message(CHAT, message_id)
    assert message is not None and message.text is not None
    return message


def sends(fake: FakeBotAPI) -> int:
    return len(fake.calls_to("sendMessage"))


# --------------------------------------------------------------------------- declare


async def test_declare_in_a_forum_opens_a_topic_and_pins_the_card(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings = make_settings(forum, tmp_path)
    incidents = incidents_for(sqlite_store, settings, bot)
    first = await incidents.declare("p1", "payments failing", ["PAYBOT"], "alice")
    assert first.id == "INC-1" and first.severity == "P1" and first.state == "open"
    assert first.targets == ("paybot",) and first.commander == "alice"
    assert first.thread_id is not None and first.chat_id == CHAT
    topics = forum.topics(CHAT)
    assert topics[first.thread_id].name == "INC-1 P1 payments failing"
    message = card(forum, first.card_message_id)
    assert message.pinned and message.thread_id == first.thread_id
    assert message.text is not None
    assert message.text.startswith("🟠 INC-1 · P1 · payments failing")
    assert "Commander: alice" in message.text and "Targets: paybot" in message.text
    assert "Health: paybot failing" in message.text
    assert "declared — P1 payments failing" in message.text

    second = await incidents.declare("P3", "slow quiz loading", [], "bob")
    assert second.id == "INC-2" and second.thread_id not in (None, first.thread_id)
    assert await incidents.by_thread(CHAT, first.thread_id) == await incidents.get("inc-1")
    assert (await incidents.by_thread(CHAT, second.thread_id)) == await incidents.get("#2")
    assert await incidents.by_thread(CHAT, 999_999) is None


async def test_declare_in_a_plain_group_posts_the_card_in_the_chat(
    plain: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings = make_settings(plain, tmp_path)
    incidents = incidents_for(sqlite_store, settings, bot)
    incident = await incidents.declare("P0", "everything is down", ["quizbot"], "alice")
    assert incident.thread_id is None and plain.topics(CHAT) == {}
    message = card(plain, incident.card_message_id)
    assert message.pinned and message.thread_id is None
    assert message.text is not None and message.text.startswith("🔴 INC-1 · P0")
    with pytest.raises(UsageError, match="severity must be one of"):
        await incidents.declare("P5", "nope", [], "alice")
    with pytest.raises(UsageError, match="needs a title"):
        await incidents.declare("P2", "   ", [], "alice")


# --------------------------------------------------------------------------- the life


async def test_every_change_edits_the_same_card_and_resolve_drafts_a_postmortem(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings = make_settings(forum, tmp_path)
    clock = Clock()
    incidents = incidents_for(sqlite_store, settings, bot, clock)
    incident = await incidents.declare("P2", "payments failing", ["paybot"], "alice")
    card_id = incident.card_message_id
    posted = sends(forum)
    edits = card(forum, card_id).edits

    async def step(change: Awaitable[object]) -> str:
        nonlocal edits
        assert card(forum, card_id).edits == edits
        clock.advance(60)
        await change
        message = card(forum, card_id)
        assert message.edits == edits + 1, forum.dump_calls()
        edits = message.edits
        assert message.text is not None
        return message.text

    text = await step(incidents.ack("INC-1", "bob"))
    assert "👀 acknowledged" in text and "bob · ack" in text
    text = await step(incidents.update("INC-1", "bob", "card provider returns 502"))
    assert "Last update: " in text and "bob: card provider returns 502" in text
    text = await step(incidents.set_severity("INC-1", "bob", "p1"))
    assert text.startswith("🟠 INC-1 · P1 ·") and "P2 → P1" in text
    text = await step(incidents.assign("INC-1", "bob", "carol"))
    assert "Commander: carol" in text
    text = await step(incidents.mitigated("INC-1", "carol", "switched to the backup provider"))
    assert "🩹 mitigated" in text
    text = await step(incidents.resolve("INC-1", "carol", "provider fixed their API"))
    assert text.startswith("✅ INC-1") and "✅ resolved after 6 min" in text
    assert "Summary: provider fixed their API" in text

    assert sends(forum) == posted  # edits only: no second card, no other message
    assert len(forum.bot_messages(CHAT)) == 1
    done = await incidents.get("INC-1")
    assert done is not None and done.state == "resolved" and done.card_message_id == card_id
    kinds = [e.kind for e in done.timeline]
    assert kinds == ["declared", "ack", "update", "severity", "assign", "mitigated", "resolved"]

    draft = postmortem(done)
    positions = [draft.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert draft.startswith("## Incident Report: INC-1 payments failing")
    assert "**Severity:** P1 (declared P2)" in draft and "**Status:** Resolved" in draft
    assert "**Duration:** 6 min" in draft
    assert "Acknowledged by bob" in draft and "Update from bob: card provider returns 502" in draft
    assert "Resolved by carol: provider fixed their API" in draft
    assert "- Services impacted: paybot" in draft and "- Time to acknowledge: 1 min" in draft
    assert "_TODO: " in draft.split("### Root Cause")[1].split("###")[0]
    assert "provider fixed their API" in draft.split("### Resolution")[1]
    assert "- [ ] Update runbook with new procedures" in draft

    clock.advance(60)
    reopened = await incidents.reopen("INC-1", "dave", "502s are back")
    assert reopened.state == "open" and reopened.resolved_at is None
    assert card(forum, card_id).edits == edits + 1 and sends(forum) == posted


async def test_invalid_transitions_are_refused(
    plain: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    incidents = incidents_for(sqlite_store, make_settings(plain, tmp_path), bot)
    await incidents.declare("P2", "queue backlog", ["quizbot"], "alice")
    with pytest.raises(UsageError, match="INC-1 is open, not resolved"):
        await incidents.reopen("INC-1", "bob")
    await incidents.ack("INC-1", "bob")
    with pytest.raises(UsageError, match="already acknowledged"):
        await incidents.ack("INC-1", "bob")
    with pytest.raises(UsageError, match="already P2"):
        await incidents.set_severity("INC-1", "bob", "P2")
    with pytest.raises(UsageError, match="already the commander"):
        await incidents.assign("INC-1", "bob", "@alice")
    await incidents.resolve("INC-1", "bob")
    for refused in (
        incidents.resolve("INC-1", "bob"),
        incidents.ack("INC-1", "bob"),
        incidents.mitigated("INC-1", "bob"),
        incidents.update("INC-1", "bob", "more"),
    ):
        with pytest.raises(UsageError, match="INC-1 is"):
            await refused
    with pytest.raises(UsageError, match="no incident INC-9"):
        await incidents.ack("INC-9", "bob")
    with pytest.raises(UsageError, match="not an incident id"):
        await incidents.ack("payments", "bob")
    assert normalize_id("inc-07") == "INC-7" and normalize_id("#12") == "INC-12"


# --------------------------------------------------------------------------- timeline


async def test_automatic_timeline_for_involved_targets_only(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    incidents = incidents_for(sqlite_store, make_settings(forum, tmp_path), bot, clock)
    pay = await incidents.declare("P1", "payments failing", ["paybot"], "alice")
    both = await incidents.declare("P2", "everything slow", ["paybot", "quizbot"], "alice")
    pay_edits = card(forum, pay.card_message_id).edits

    clock.advance(30)
    noted = await incidents.note("paybot", "alice", "action", "restart paybot: ok in 4.2 s")
    assert sorted(i.id for i in noted) == ["INC-1", "INC-2"]
    pay_card = card(forum, pay.card_message_id)
    assert pay_card.edits == pay_edits + 1
    assert "alice · action — restart paybot: ok in 4.2 s" in str(pay_card.text)
    assert "restart paybot" in str(card(forum, both.card_message_id).text)

    noted = await incidents.note("quizbot", "alertmanager", "alert", "quizbot webhook backlog")
    assert [i.id for i in noted] == ["INC-2"]
    assert await incidents.note("nobody", "x", "alert", "unrelated") == []
    current = await incidents.get("INC-1")
    assert current is not None and "webhook backlog" not in str(current.timeline)

    # A second note within EDIT_INTERVAL is recorded at once but shown by the next tick.
    await incidents.note("paybot", "alice", "command", "/logs paybot 50")
    held = card(forum, pay.card_message_id)
    assert held.edits == pay_edits + 1 and "/logs paybot 50" not in str(held.text)
    clock.advance(11)
    await incidents.tick()
    flushed = card(forum, pay.card_message_id)
    assert flushed.edits == pay_edits + 2 and "/logs paybot 50" in str(flushed.text)
    # The monitor's transitions are shown at once (and the health checked again).
    await incidents.note("paybot", "alertmanager", "recovery", "paybot 5xx rate back to 0")
    assert "5xx rate back" in str(card(forum, pay.card_message_id).text)

    await incidents.resolve("INC-1", "alice", "fixed")
    resolved_card = card(forum, pay.card_message_id).text
    clock.advance(60)
    noted = await incidents.note("paybot", "alice", "command", "/logs paybot")
    assert [i.id for i in noted] == ["INC-2"]
    after = await incidents.get("INC-1")
    assert after is not None and after.timeline[-1].kind == "resolved"
    assert card(forum, pay.card_message_id).text == resolved_card
    draft = postmortem(after)
    assert "Actions taken (from the timeline):" in draft
    assert "alice: restart paybot: ok in 4.2 s" in draft
    assert "Recovery (alertmanager): paybot 5xx rate back to 0" in draft


async def test_the_card_health_follows_the_monitor_and_resolve_unpins_it(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    healthy: set[str] = set()

    async def health(targets: Sequence[str]) -> str:
        return ", ".join(("✅ " if t in healthy else "❌ ") + t for t in targets)

    settings = make_settings(forum, tmp_path)
    notifier = TelegramNotifier(bot, Redactor(settings.secrets()))
    incidents = Incidents(sqlite_store, settings, notifier, clock=clock, health=health)
    declared = await incidents.declare("P1", "quiz down", ["quizbot"], "alice")
    assert "Health: ❌ quizbot" in str(card(forum, declared.card_message_id).text)

    clock.advance(2)  # well within EDIT_INTERVAL and the minute's refresh: not waited for
    healthy.add("quizbot")
    await incidents.note("quizbot", "monitor", "recovery", "quizbot: http /health: ok")
    shown = card(forum, declared.card_message_id)
    assert "Health: ✅ quizbot" in str(shown.text) and "❌" not in str(shown.text)
    assert (await incidents.get("INC-1")).health == "✅ quizbot"  # type: ignore[union-attr]

    clock.advance(2)
    healthy.clear()
    await incidents.note("quizbot", "monitor", "alert", "quizbot: http /health: refused")
    assert "Health: ❌ quizbot" in str(card(forum, declared.card_message_id).text)

    assert card(forum, declared.card_message_id).pinned
    await incidents.resolve("INC-1", "alice", "restarted")
    assert not card(forum, declared.card_message_id).pinned  # resolved: no longer on top
    await incidents.reopen("INC-1", "bob", "again")
    assert card(forum, declared.card_message_id).pinned


# --------------------------------------------------------------------------- reminders



async def test_two_alerts_of_one_target_recovering_together_are_both_on_the_timeline(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings = make_settings(forum, tmp_path)
    notifier = TelegramNotifier(bot, Redactor(settings.secrets()))
    incidents = Incidents(sqlite_store, settings, notifier, clock=Clock())
    await incidents.declare("P2", "quiz down", ["quizbot"], "alice")

    def event(check: str, status: Literal["firing", "resolved"]) -> AlertEvent:
        summary = f"quizbot: {check}: {'HTTP 200' if status == 'resolved' else 'refused'}"
        fingerprint = AlertEvent.make_fingerprint("quizbot", check)
        return AlertEvent("monitor", fingerprint, status, Severity.critical, summary, "quizbot")

    await note_alerts(incidents, [event("http /health", "firing"), event("tcp :5432", "firing")])
    both = [event("tcp :5432", "resolved"), event("http /health", "resolved")]
    await note_alerts(incidents, both)
    incident = await incidents.get("INC-1")
    assert incident is not None
    assert [(e.kind, e.text) for e in incident.timeline][-2:] == [
        ("alert", "critical: quizbot: http /health: refused; "
                  "critical: quizbot: tcp :5432: refused"),
        ("recovery", "quizbot: tcp :5432: HTTP 200; quizbot: http /health: HTTP 200"),
    ]  # fmt: skip

async def test_unacknowledged_p1_is_reminded_until_acked(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    settings = make_settings(forum, tmp_path)
    incidents = incidents_for(sqlite_store, settings, bot, clock)
    other = incidents_for(sqlite_store, settings, bot, clock)  # a second replica
    incident = await incidents.declare("P1", "payments failing", ["paybot"], "alice")
    await incidents.declare("P2", "minor glitch", ["quizbot"], "alice")  # never reminded

    def reminders() -> list[FakeMessage]:
        return [m for m in forum.bot_messages(CHAT) if (m.text or "").startswith("⏰")]

    clock.advance(899)
    await incidents.tick()
    assert reminders() == []
    clock.advance(2)
    await asyncio.gather(incidents.tick(), other.tick())
    first = reminders()
    assert len(first) == 1 and first[0].thread_id == incident.thread_id
    assert "INC-1 P1 payments failing: still unacknowledged after 15 min" in str(first[0].text)
    assert "/incident ack INC-1" in str(first[0].text)
    # the card's duration was refreshed on the way (at most once a minute)
    assert "for 14 min" in str(card(forum, incident.card_message_id).text)

    await asyncio.gather(incidents.tick(), other.tick())
    assert len(reminders()) == 1
    clock.advance(901)
    await asyncio.gather(incidents.tick(), other.tick())
    assert len(reminders()) == 2

    await incidents.ack("INC-1", "bob")
    clock.advance(3600)
    await asyncio.gather(incidents.tick(), other.tick())
    assert len(reminders()) == 2


async def test_p0_is_reminded_twice_as_often(
    plain: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    incidents = incidents_for(sqlite_store, make_settings(plain, tmp_path), bot, clock)
    await incidents.declare("P0", "all down", [], "alice")
    clock.advance(451)
    await incidents.tick()
    texts = [m.text or "" for m in plain.bot_messages(CHAT)]
    assert sum(1 for t in texts if t.startswith("⏰ INC-1 P0")) == 1


# --------------------------------------------------------------------------- replicas, restarts


async def test_incidents_survive_a_restart(plain: FakeBotAPI, bot: Bot, tmp_path: Path) -> None:
    settings = make_settings(plain, tmp_path)
    path = tmp_path / "restart.sqlite3"
    first_store = SQLiteStore(path)
    try:
        before = await incidents_for(first_store, settings, bot).declare(
            "P1", "payments failing", ["paybot"], "alice"
        )
        await incidents_for(first_store, settings, bot).update("INC-1", "bob", "investigating")
    finally:
        await first_store.close()
    second_store = SQLiteStore(path)
    try:
        restarted = incidents_for(second_store, settings, bot)
        after = await restarted.get("INC-1")
        assert after is not None and after.card_message_id == before.card_message_id
        assert [e.kind for e in after.timeline] == ["declared", "update"]
        await restarted.ack("INC-1", "bob")
        assert "👀 acknowledged" in str(card(plain, before.card_message_id).text)
        nxt = await restarted.declare("P3", "next one", [], "alice")
        assert nxt.id == "INC-2"
        listed = await restarted.list()
        assert [i.id for i in listed] == ["INC-2", "INC-1"]
    finally:
        await second_store.close()


async def test_two_replicas_racing_updates_append_each_once_on_one_card(
    forum: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings = make_settings(forum, tmp_path)
    one = incidents_for(sqlite_store, settings, bot)
    two = incidents_for(sqlite_store, settings, bot)
    incident = await one.declare("P1", "payments failing", ["paybot"], "alice")
    posted = sends(forum)
    texts = [f"update {n}" for n in range(12)]
    await asyncio.gather(
        *(
            (one if n % 2 else two).update("INC-1", "bob" if n % 2 else "carol", text)
            for n, text in enumerate(texts)
        )
    )
    final = await two.get("INC-1")
    assert final is not None
    updates = [e.text for e in final.timeline if e.kind == "update"]
    assert sorted(updates) == sorted(texts)  # each exactly once
    assert sends(forum) == posted and len(forum.bot_messages(CHAT)) == 1
    shown = card(forum, incident.card_message_id)
    assert shown.text == final.card_text  # the card ends showing the latest state

    # concurrent declarations get distinct ids
    declared = await asyncio.gather(
        *(one.declare("P3", f"n{n}", [], "x") for n in range(3)),
        *(two.declare("P3", f"m{n}", [], "y") for n in range(3)),
    )
    assert sorted(i.number for i in declared) == [2, 3, 4, 5, 6, 7]


# --------------------------------------------------------------------------- the verb


async def test_the_incident_verb(forum: FakeBotAPI, bot: Bot, tmp_path: Path) -> None:
    settings = make_settings(forum, tmp_path)
    services = Services.build(settings)
    operator = Caller("oscar", Role.operator, user_id=1004, chat_id=-1001000000100)
    viewer = Caller("vic", Role.viewer, user_id=1003, chat_id=-1001000000100)
    assert VERB_SPEC[0] == "incident" and VERB_SPEC[1] is Role.viewer
    try:
        incidents = incidents_for(services.store, settings, bot)

        async def run(caller: Caller, *words: str) -> str:
            return (await incident_verb(incidents, services, caller, list(words))).text

        declared = await run(operator, "P1", "payments", "failing", "paybot", "QUIZBOT")
        assert declared.startswith("🟠 INC-1 declared (P1): payments failing")
        assert "targets paybot, quizbot" in declared and "own topic" in declared
        only = await run(operator, "p3", "paybot")
        assert "INC-2 declared (P3): paybot" in only

        with pytest.raises(UsageError, match="needs the operator role"):
            await run(viewer, "P1", "nope")
        with pytest.raises(UsageError, match="needs the operator role"):
            await run(viewer, "ack", "INC-1")
        listed = await incident_verb(incidents, services, viewer, ["list"])
        assert "2 open incidents" in listed.text
        assert listed.block.splitlines()[0].startswith("🔵 INC-2 P3 open")
        shown = await incident_verb(incidents, services, viewer, ["show", "INC-1"])
        assert shown.text.startswith("🟠 INC-1 · P1") and "declared" in shown.block

        # The hint names the open incidents, not a made-up id.
        with pytest.raises(UsageError, match=r"/incident ack INC-2 … \(INC-2, INC-1 open;"):
            await run(operator, "ack")
        inc1 = await incidents.get("INC-1")
        assert inc1 is not None
        in_topic = Caller("oscar", Role.operator, 1004, chat_id=CHAT, thread_id=inc1.thread_id)
        assert "INC-1 acknowledged by oscar" in await run(in_topic, "ack")
        assert "INC-1 updated" in await run(in_topic, "update", "5", "pods", "restarted")
        assert "is now P0" in await run(in_topic, "severity", "P0")
        assert "alice is the commander of INC-1" in await run(operator, "assign", "1", "@ALICE")
        assert "INC-1 mitigated" in await run(operator, "mitigated", "#1", "rolled", "back")
        resolved = await incident_verb(
            incidents, services, in_topic, ["resolve", "bad", "deploy", "rolled", "back"]
        )
        assert resolved.text.startswith("✅ INC-1 resolved after")
        assert resolved.document is not None
        assert resolved.document.filename == "INC-1-postmortem.md"
        draft = resolved.document.content.decode()
        assert "Update from oscar: 5 pods restarted" in draft
        assert "bad deploy rolled back" in draft.split("### Resolution")[1]
        with pytest.raises(UsageError, match="already resolved"):
            await run(operator, "resolve", "INC-1")
        assert "reopened" in await run(operator, "reopen", "INC-1")
        with pytest.raises(UsageError, match="usage"):
            await run(operator, "frobnicate")
        with pytest.raises(UsageError, match="usage"):
            await run(operator, "severity", "INC-1", "P9")
        card_message = card(forum, inc1.card_message_id)
        assert "🔥 open, unacknowledged" in str(card_message.text)
        assert len([m for m in forum.bot_messages(CHAT) if m.pinned]) == 2
    finally:
        await services.close()
