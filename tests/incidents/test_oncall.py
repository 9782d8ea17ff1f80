"""On-call: rotation maths (handover, DST), overrides that expire, /oncall in the chat, and
escalation over the real SQLite store and a real ``telegram.Bot`` talking to the fake Bot API,
with an injected clock: each step pages once, at its minute, stops on ack, and is on the
incident's timeline."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from telegram import Bot

from opsbot.alerting.engine import AlertEngine
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Role, Rotation, Settings, load_config
from opsbot.errors import ConfigError, UsageError
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.handlers.outbox_worker import OutboxWorker
from opsbot.incidents import oncall
from opsbot.incidents.escalation import Escalator
from opsbot.incidents.oncall_verbs import oncall_verb
from opsbot.incidents.state import Incidents
from opsbot.redact import Redactor
from opsbot.services import Services
from opsbot.state.outbox import Outbox, Priority
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.verbs.registry import Caller
from tests.factories import (
    ALICE,
    BOB,
    INCIDENTS,
    OPSBOT_TOKEN,
    OPSBOT_USERNAME,
    OSCAR,
    VIC,
    Clock,
    base_config,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import Chat, FakeBotAPI

MINUTE = 60.0
IDS = {"alice": ALICE.id, "bob": BOB.id, "oscar": OSCAR.id}


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()  # type: ignore[misc]


# --------------------------------------------------------------------------- rotation maths


def test_weekly_rotation_hands_over_at_local_time_across_spring_dst() -> None:
    rotation = Rotation(
        people=["alice", "bob", "oscar"],
        handover="weekly",
        at="09:00",
        timezone="Europe/Berlin",
        start=date(2026, 3, 23),  # a Monday; DST begins Sunday 29 March
    )
    before = oncall.shift_at(rotation, utc(2026, 3, 23, 7, 59))  # 08:59 CET
    assert (before.index, before.primary, before.secondary) == (-1, "oscar", "alice")
    first = oncall.shift_at(rotation, utc(2026, 3, 23, 8, 0))  # 09:00 CET
    assert (first.index, first.primary, first.secondary) == (0, "alice", "bob")
    assert first.start == datetime(2026, 3, 23, 8, 0, tzinfo=UTC)
    # the next handover is 09:00 CEST = 07:00 UTC: this shift is an hour short
    assert first.end == datetime(2026, 3, 30, 7, 0, tzinfo=UTC)
    assert (first.end - first.start).total_seconds() == 7 * 86400 - 3600
    assert oncall.shift_at(rotation, utc(2026, 3, 30, 6, 59)).primary == "alice"
    after = oncall.shift_at(rotation, utc(2026, 3, 30, 7, 0))
    assert (after.primary, after.secondary) == ("bob", "oscar")
    assert oncall.shift_at(rotation, utc(2026, 4, 13, 7, 0)).primary == "alice"  # 3 weeks on


def test_daily_rotation_across_autumn_dst_and_a_single_person() -> None:
    rotation = Rotation(
        people=["alice", "bob"],
        handover="daily",
        at="09:00",
        timezone="Europe/Berlin",
        start=date(2026, 10, 1),
    )
    saturday = oncall.shift_at(rotation, utc(2026, 10, 24, 7, 0))  # 09:00 CEST
    assert saturday.primary == "bob" and saturday.index == 23
    # Sunday 25 October: clocks go back, 09:00 CET is 08:00 UTC; that shift lasts 25 hours
    assert saturday.end == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    assert (saturday.end - saturday.start).total_seconds() == 25 * 3600
    assert oncall.shift_at(rotation, utc(2026, 10, 25, 7, 59)).primary == "bob"
    assert oncall.shift_at(rotation, utc(2026, 10, 25, 8, 0)).primary == "alice"
    alone = Rotation(people=["alice"], handover="daily")
    assert oncall.shift_at(alone, time.time()).secondary is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"oncall": {"rotation": {"people": ["alice", "zed"]}}}, "'zed' is not one of people"),
        ({"oncall": {"rotation": {"people": ["alice"]}, "contacts": ["zed"]}}, "oncall.contacts"),
        (
            {"oncall": {"rotation": {"people": ["alice"], "timezone": "Mars/Olympus"}}},
            "unknown time zone 'Mars/Olympus'",
        ),
        ({"oncall": {"rotation": {"people": ["alice"], "at": "25:00"}}}, "oncall.rotation.at"),
        (
            {"status_page": {"components": [{"name": "API", "targets": ["nope"]}]}},
            "status_page.components.0.targets: unknown target 'nope'",
        ),
        (
            {"status_page": {"public": False, "components": []}},
            "status_page.public: false needs web.token",
        ),
    ],
)
def test_bad_oncall_and_status_page_settings_are_named(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    config = {
        "people": [{"id": 1, "name": "alice"}],
        "targets": {"api": {"kind": "command", "actions": {"status": ["true"]}}},
        **change,
    }
    with pytest.raises(ConfigError, match=re.escape(message)):
        write_config(tmp_path / "c.yaml", config)


def test_an_unquoted_handover_time_is_read_as_meant(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "people: [{id: 1, name: alice}]\noncall: {rotation: {people: [alice], at: 9:30}}\n"
    )
    settings = load_config(path)
    assert settings.oncall is not None and settings.oncall.rotation.at == "09:30"


# --------------------------------------------------------------------------- /oncall


def oncall_settings(fake: FakeBotAPI, tmp_path: Path, **oncall_config: Any) -> Settings:
    """alice, bob, oscar take daily turns, handing over 12 hours from now (UTC): no handover
    happens during a test; oscar is also the escalation contact."""
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {"quizbot": {"kind": "command", "actions": {"status": ["true"]}}}
    handover = time.gmtime(time.time() + 12 * 3600)
    config["oncall"] = {
        "rotation": {
            "people": ["alice", "bob", "oscar"],
            "handover": "daily",
            "at": f"{handover.tm_hour:02d}:{handover.tm_min:02d}",
            "timezone": "UTC",
        },
        "contacts": ["oscar"],
        **oncall_config,
    }
    return write_config(tmp_path / "c.yaml", config)


async def test_oncall_in_the_chat_shows_now_and_next_and_takes_overrides(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = oncall_settings(fake, tmp_path)
    assert settings.oncall is not None
    current = oncall.shift_at(settings.oncall.rotation, time.time())
    following = oncall.shift(settings.oncall.rotation, current.index + 1)
    async with running_opsbot(fake, settings) as chat:
        reply = await chat.ask("/oncall", user=VIC)
        assert reply.text is not None
        assert f"primary {current.primary} · secondary {current.secondary}" in reply.text
        assert f"primary {following.primary} · secondary {following.secondary}" in reply.text
        assert "Escalation contacts: oscar" in reply.text

        refused = await chat.ask("/oncall override oscar 4h", user=VIC)
        assert refused.text == "⚠️ changing who is on call needs the operator role"
        bad = await chat.ask("/oncall override nobody 4h")
        assert bad.text is not None and "'nobody' is not one of the people" in bad.text
        bad = await chat.ask("/oncall override bob 4x")
        assert bad.text is not None and "a duration looks like" in bad.text

        other = next(n for n in ("alice", "bob", "oscar") if n != current.primary)
        done = await chat.ask(f"/oncall override {other} 4h")
        assert done.text is not None and f"{other} is the primary on call for 4h" in done.text
        reply = await chat.ask("/oncall")
        assert reply.text is not None
        assert f"primary {other} · secondary {current.secondary}" in reply.text
        assert f"Override: {other} is primary until" in reply.text
        cleared = await chat.ask("/oncall clear")
        assert cleared.text == "📟 primary override cleared: the rotation decides again."
        reply = await chat.ask("/oncall")
        assert reply.text is not None and f"primary {current.primary} ·" in reply.text


async def test_the_running_bot_pages_the_primary_of_an_unacknowledged_p0(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    """The wired path: the application's tick drives escalation, the page is a private message."""
    fast = {"primary": 0.05, "secondary": None, "contacts": None}  # 3 seconds
    settings = oncall_settings(fake, tmp_path, escalation={"P0": fast})
    assert settings.oncall is not None
    primary = oncall.shift_at(settings.oncall.rotation, time.time()).primary
    async with running_opsbot(fake, settings) as chat:
        reply = await chat.ask("/incident P0 checkout is down quizbot")
        assert reply.text is not None and "INC-1 declared" in reply.text
        page = await fake.wait_for_message(IDS[primary], timeout=15, token=OPSBOT_TOKEN)
        assert page.text is not None and page.text.startswith("📟 INC-1 P0 checkout is down")
        # Once delivered, the page is on the timeline, and the incident card shows it.
        expected = f"opsbot · escalation — paged {primary} (primary) by private message"
        await fake.wait_for_call(
            "editMessageText", lambda c: expected in str(c.params.get("text")), timeout=15
        )
        shown = await chat.ask("/incident show INC-1")
        assert expected in (shown.text or "")


async def test_an_override_expires_by_itself(fake: FakeBotAPI, tmp_path: Path) -> None:
    settings = oncall_settings(fake, tmp_path)
    assert settings.oncall is not None
    services = Services.build(settings)
    clock = Clock()
    caller = Caller("alice", Role.admin, ALICE.id)
    try:
        usual = oncall.shift_at(settings.oncall.rotation, clock())
        other = next(n for n in ("alice", "bob", "oscar") if n not in (usual.primary,))
        await oncall_verb(services, caller, ["override", other, "4h"], clock=clock)
        await oncall_verb(services, caller, ["override", usual.primary, "1h", "secondary"], clock)
        clock.advance(3 * 3600 + 59 * 60)
        now_on = await oncall.who(settings, services.store, clock())
        assert now_on.primary is not None and now_on.primary.name == other
        assert now_on.secondary is not None and now_on.secondary.name == usual.secondary
        clock.advance(2 * MINUTE)
        now_on = await oncall.who(settings, services.store, clock())
        assert now_on.primary is not None and now_on.primary.name == usual.primary
        assert now_on.overrides == {}
        with pytest.raises(UsageError, match="usage"):
            await oncall_verb(services, caller, ["override", other, "4h", "tertiary"], clock)
    finally:
        await services.close()


# --------------------------------------------------------------------------- escalation


def private(fake: FakeBotAPI, name: str) -> list[str]:
    """The private messages opsbot sent this person."""
    return [m.text or "" for m in fake.bot_messages(IDS[name], OPSBOT_TOKEN)]


def engines(
    store: SQLiteStore, settings: Settings, bot: Bot, clock: Clock
) -> tuple[Incidents, AlertEngine, Escalator]:
    notifier = TelegramNotifier(bot, Redactor(settings.secrets()))
    incidents = Incidents(store, settings, notifier, clock=clock)
    alerts = AlertEngine(store, settings, notifier, clock=clock)
    escalator = Escalator(store, settings, notifier, incidents, alerts, clock=clock, every=0)
    return incidents, alerts, escalator


class Rota(NamedTuple):
    """The on-call settings, an injected clock and the shift on duty at its start."""

    settings: Settings
    clock: Clock
    shift: oncall.Shift


def rota(fake: FakeBotAPI, tmp_path: Path) -> Rota:
    settings = oncall_settings(fake, tmp_path)
    assert settings.oncall is not None
    clock = Clock()
    shift = oncall.shift_at(settings.oncall.rotation, clock())
    assert shift.secondary is not None
    return Rota(settings, clock, shift)


async def test_an_unacknowledged_p1_pages_primary_then_secondary_then_its_budget_runs_out(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings, clock, shift = rota(fake, tmp_path)
    primary, secondary = shift.primary, shift.secondary
    assert secondary is not None
    incidents, _, escalator = engines(sqlite_store, settings, bot, clock)
    _, _, replica = engines(sqlite_store, settings, bot, clock)  # a second opsbot
    incident = await incidents.declare("P1", "payments failing", ["quizbot"], "vic")

    clock.advance(14 * MINUTE + 50)
    await escalator.tick()
    assert all(private(fake, n) == [] for n in IDS)

    clock.advance(10)  # 15 minutes: the primary
    for _ in range(3):
        await escalator.tick()
        await replica.tick()
    [page] = private(fake, primary)
    assert page.startswith(f"📟 {incident.id} P1 payments failing: unacknowledged for 15 min")
    assert f"/incident ack {incident.id}" in page and "paged as the primary" in page
    assert private(fake, secondary) == []

    clock.advance(15 * MINUTE)  # 30 minutes: the secondary
    await replica.tick()
    await escalator.tick()
    assert len(private(fake, secondary)) == 1 and len(private(fake, primary)) == 1

    await incidents.ack(incident.id, "bob")
    clock.advance(30 * MINUTE)  # 60 minutes: contacts, but it is acknowledged
    await escalator.tick()
    assert len(private(fake, "oscar")) == (1 if "oscar" in (primary, secondary) else 0)
    before = {n: len(private(fake, n)) for n in IDS}

    clock.advance(60 * MINUTE)  # 120 minutes, still not resolved: the contacts anyway
    await escalator.tick()
    await replica.tick()
    assert len(private(fake, "oscar")) == before["oscar"] + 1
    budget = private(fake, "oscar")[-1]
    assert "not resolved after 2h 00m (budget 2h 00m)" in budget
    assert "paged as the escalation contact" in budget

    stored = await incidents.get(incident.id)
    assert stored is not None
    steps = [e.text for e in stored.timeline if e.kind == "escalation"]
    assert steps == [
        f"paged {primary} (primary) by private message",
        f"paged {secondary} (secondary) by private message",
        "paged oscar (escalation contact) by private message",
    ]
    clock.advance(600 * MINUTE)
    await escalator.tick()
    assert {n: len(private(fake, n)) for n in IDS} == {**before, "oscar": before["oscar"] + 1}


async def test_a_critical_alert_pages_until_acked_and_a_warning_never(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings, clock, shift = rota(fake, tmp_path)
    incidents, alerts, escalator = engines(sqlite_store, settings, bot, clock)
    incident = await incidents.declare("P2", "quiz slow", ["quizbot"], "vic")  # P2: no pages
    await alerts.ingest(
        [
            AlertEvent("webhook", "fp-crit", "firing", Severity.critical, "quiz down", "quizbot"),
            AlertEvent("webhook", "fp-warn", "firing", Severity.warning, "quiz slow", "quizbot"),
        ]
    )
    slow = Escalator(sqlite_store, settings, escalator.notifier, incidents, alerts, clock=clock)
    await slow.tick()  # nothing due yet; it looks again only after 15 s of real time
    clock.advance(10 * MINUTE)
    await slow.tick()
    assert private(fake, shift.primary) == []
    await escalator.tick()
    await escalator.tick()
    [page] = private(fake, shift.primary)
    assert "CRITICAL alert" in page and "quiz down" in page and "/ack " in page
    [critical] = [a for a in await alerts.list() if a.fingerprint == "fp-crit"]
    assert await alerts.ack(critical.id, "bob") == "Acked by bob: reminders stop."
    clock.advance(60 * MINUTE)
    await escalator.tick()
    assert private(fake, shift.secondary) == []
    assert len(private(fake, shift.primary)) == 1
    stored = await incidents.get(incident.id)
    assert stored is not None
    assert [e.text for e in stored.timeline if e.kind == "escalation"] == [
        f"paged {shift.primary} (primary) by private message"
    ]


async def test_a_storm_of_critical_alerts_is_one_page_per_step(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    settings, clock, shift = rota(fake, tmp_path)
    _, alerts, escalator = engines(sqlite_store, settings, bot, clock)
    await alerts.ingest(
        [
            AlertEvent("webhook", f"fp-{n}", "firing", Severity.critical, f"disk {n} full", None)
            for n in range(12)
        ]
    )
    clock.advance(10 * MINUTE)
    await escalator.tick()
    await escalator.tick()
    [page] = private(fake, shift.primary)
    assert page.startswith("📟 12 critical alerts are not acknowledged:\n• CRITICAL alert ")
    assert page.count("• CRITICAL alert") == 10 and "… and 2 more: /alerts" in page
    clock.advance(10 * MINUTE)
    await escalator.tick()
    assert len(private(fake, shift.secondary or "")) == 1


async def test_a_page_is_on_the_timeline_once_delivered_and_one_that_cannot_be_never_as_paged(
    sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    """The pages leave through the outbox, as in the bot. The primary has opened a chat with
    the bot; the secondary never did, and Telegram refuses their page. The timeline says
    "paged" only once the outbox delivered a page, and for the refused one only that it
    could not page (it used to say "paged" first, then "could not page")."""
    with FakeBotAPI(strict_chats=True) as strict:
        strict.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        strict.add_chat(INCIDENTS)
        settings, clock, shift = rota(strict, tmp_path)
        primary, secondary = shift.primary, shift.secondary
        assert secondary is not None
        strict.add_chat(Chat(IDS[primary], "private"))
        outbox = Outbox(sqlite_store)
        notifier = OutboxNotifier(outbox, Redactor(settings.secrets()), Priority.alert)
        incidents = Incidents(sqlite_store, settings, notifier, clock=clock)
        escalator = Escalator(sqlite_store, settings, notifier, incidents, clock=clock, every=0)

        async def escalation_steps() -> list[str]:
            stored = await incidents.get(incident.id)
            assert stored is not None
            return [e.text for e in stored.timeline if e.kind == "escalation"]

        async with Bot(OPSBOT_TOKEN, base_url=strict.bot_base_url) as strict_bot:
            worker = OutboxWorker(outbox, strict_bot, idle=0.05)
            incident = await incidents.declare("P0", "everything is down", [], "vic")
            clock.advance(15 * MINUTE)  # the primary's step and the secondary's, at once
            await escalator.tick()
            assert await outbox.pending()  # both pages queued, neither delivered yet
            assert await escalation_steps() == []
            worker.start()
            try:
                deadline = time.monotonic() + 10
                while await outbox.pending():
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                await escalator.tick()
                await escalator.tick()  # noted once
            finally:
                await worker.stop()
        [page] = [m.text or "" for m in strict.bot_messages(IDS[primary], OPSBOT_TOKEN)]
        assert page.startswith(f"📟 {incident.id} P0 everything is down")
        steps = await escalation_steps()
        assert len(steps) == 2, steps
        assert f"paged {primary} (primary) by private message" in steps
        [failed] = [s for s in steps if s != f"paged {primary} (primary) by private message"]
        assert failed.startswith(f"could not page {secondary} (secondary): ")
        assert "chat not found" in failed.lower()
        assert not any(s.startswith(f"paged {secondary}") for s in steps)
