"""The alert engine over real components: SQLite and Redis stores, the outbox delivered by a
real worker through a real ``telegram.Bot`` talking HTTP to the fake Bot API with its rate
limits on (20 messages a minute in a group).

The engine's clock (and the outbox's, so its pace window moves with it) is injected where a
test needs minutes to pass (throttled edits, durations, reminders, silence ends); the fake's
flood limits run on real time, so the storm test checks every rolling minute of real sends.
Each engine call is followed by the outbox's delivery (``Delivering``), so a test reads the
chat as a person would a moment later.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import pytest
import pytest_asyncio
from telegram import Bot

from opsbot.alerting import silences
from opsbot.alerting.engine import AlertEngine
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.records import EVENTS, count_events
from opsbot.alerting.verbs import ack_verb, alerts_verb, silence_verb, unsilence_verb
from opsbot.config import Person, Role, Settings
from opsbot.errors import UsageError
from opsbot.handlers.outbox_worker import OutboxWorker
from opsbot.redact import Redactor
from opsbot.services import Services
from opsbot.state.outbox import Outbox, Priority
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.verbs.registry import Caller
from tests.factories import (
    INCIDENTS,
    OPSBOT_TOKEN,
    OPSBOT_USERNAME,
    Clock,
    base_config,
    fake_fixture,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.redis import RedisServer

ALICE = Person(id=1001, name="alice", role=Role.admin)
CHAT = INCIDENTS.id  # alerts go to the incident chat by default
_prefixes = itertools.count()


# default flood limits: 20 messages a minute per group
fake = fake_fixture()


def make_settings(fake: FakeBotAPI, tmp_path: Path, **alerts: Any) -> Settings:
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {
        "quizbot": {  # logs, a restart and a backup: every button has its action
            "kind": "command",
            "log_file": "/var/log/quizbot.log",
            "actions": {"status": ["true"], "restart": ["true"]},
            "backups": [{"type": "files", "paths": ["/etc/hostname"]}],
        },
        "paybot": {"kind": "command", "actions": {"status": ["true"]}},  # neither logs nor restart
    }
    config["alerts"] = {"reminder_interval": 900, **alerts}
    return write_config(tmp_path / "c.yaml", config)


class Delivering(AlertEngine):
    """The engine, each of whose calls is followed by the outbox delivering what it queued."""

    def __init__(self, store: Any, settings: Settings, bot: Bot, clock: Any) -> None:
        self.outbox = Outbox(store, group_per_minute=settings.telegram.group_messages_per_minute,
                             window=settings.telegram.group_window, clock=clock)  # fmt: skip
        notifier = OutboxNotifier(self.outbox, Redactor(settings.secrets()), Priority.alert)
        super().__init__(store, settings, notifier, clock=clock)
        self.worker = OutboxWorker(self.outbox, bot, idle=0.05)

    async def delivered(self) -> None:
        """Until the worker can do nothing more now (what waits for the pace stays queued)."""
        idle = 0
        while idle < 3 and await self.outbox.pending():
            idle = 0 if await self.worker.run_once() else idle + 1
            await asyncio.sleep(0.01 if idle else 0)

    async def ingest(self, events: Any) -> None:
        await super().ingest(events)
        await self.delivered()

    async def tick(self) -> None:
        await super().tick()
        await self.delivered()

    async def ack(self, alert_id: str, person: Any) -> str:
        toast = await super().ack(alert_id, person)
        await self.delivered()
        return toast

    async def silence_alert(self, alert_id: str, person: Any, seconds: float = 3600) -> str:
        toast = await super().silence_alert(alert_id, person, seconds)
        await self.delivered()
        return toast

    async def unsilence_alert(self, alert_id: str, person: Any) -> str:
        toast = await super().unsilence_alert(alert_id, person)
        await self.delivered()
        return toast

    async def message_of(self, alert_id: str) -> int | None:
        """The Telegram message id of the alert's message (its ref, once delivered)."""
        alert = await self.get(alert_id)
        if alert is None or alert.message_id is None:
            return None
        return await self.outbox.message_id(alert.message_id)


def engine_for(
    store: Any, settings: Settings, bot: Bot, clock: Clock | None = None
) -> Delivering:
    return Delivering(store, settings, bot, clock or time.time)


def firing(
    fingerprint: str,
    target: str | None = "quizbot",
    severity: Severity = Severity.critical,
    summary: str = "webhook backlog: 1,234 pending updates",
) -> AlertEvent:
    return AlertEvent("alertmanager", fingerprint, "firing", severity, summary, target)


def check_failed(
    fingerprint: str, check: str, status: Literal["firing", "resolved"] = "firing"
) -> AlertEvent:
    """What the monitor says about one check of quizbot."""
    summary = f"quizbot: {check}: connection refused"
    return AlertEvent("monitor", fingerprint, status, Severity.critical, summary, "quizbot",
                      labels={"check": check})  # fmt: skip


def resolved(fingerprint: str, target: str | None = "quizbot") -> AlertEvent:
    return AlertEvent("alertmanager", fingerprint, "resolved", Severity.critical, "", target)


def buttons(message: FakeMessage) -> list[str]:
    markup = message.reply_markup or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


def sends(fake: FakeBotAPI, chat: int = CHAT) -> int:
    return sum(1 for c in fake.calls_to("sendMessage") if c.params.get("chat_id") == chat)


def edits(fake: FakeBotAPI) -> int:
    return len(fake.calls_to("editMessageText"))


# --------------------------------------------------------------------------- one alert


async def test_a_new_alert_posts_one_message_with_five_opaque_buttons(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    engine = engine_for(sqlite_store, make_settings(fake, tmp_path), bot)
    await engine.ingest([firing("fp-quiz-backlog")])

    [message] = fake.bot_messages(CHAT)
    [alert] = await engine.list()
    assert len(alert.id) == 8 and await engine.message_of(alert.id) == message.message_id
    assert buttons(message) == [f"al:{alert.id}", f"ar:{alert.id}", f"as:{alert.id}",
                                f"ak:{alert.id}", f"ai:{alert.id}"]  # fmt: skip
    assert all("fp-quiz" not in data and len(data.encode()) <= 64 for data in buttons(message))
    assert message.text is not None
    assert message.text.startswith("🔥 CRITICAL · quizbot")
    assert "webhook backlog: 1,234 pending updates" in message.text
    assert "since " in message.text and "alertmanager" in message.text
    assert await engine.get(alert.id) == alert
    assert await engine.get("nope1234") is None

    # an alert whose target is not configured: no Logs or Restart
    await engine.ingest([firing("fp-unknown", target="elsewhere", severity=Severity.warning)])
    other = fake.bot_messages(CHAT)[-1]
    assert [d[:3] for d in buttons(other)] == ["as:", "ak:", "ai:"]
    assert other.text is not None and other.text.startswith("⚠️ WARNING · elsewhere")


async def test_repeats_edit_the_message_in_place_then_resolve_posts_a_recovery_line(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    engine = engine_for(sqlite_store, make_settings(fake, tmp_path), bot, clock)
    await engine.ingest([firing("fp-1")])
    for _ in range(36):
        clock.advance(1.0)
        await engine.ingest([firing("fp-1")])

    assert sends(fake) == 1  # nothing new posted
    assert edits(fake) <= 4  # at most one edit per 10 s of (engine) time
    [message] = fake.bot_messages(CHAT)
    assert message.text is not None and "×37" not in message.text

    clock.advance(11)
    await engine.tick()  # flushes the held-back count
    [message] = fake.bot_messages(CHAT)
    assert message.text is not None and "×37 since" in message.text
    [alert] = await engine.list()
    assert alert.count == 37

    clock.advance(4 * 60 - 47)
    await engine.ingest([resolved("fp-1")])  # a change of status is edited at once
    first, recovery = fake.bot_messages(CHAT)
    assert first.message_id == message.message_id and buttons(first) == []
    assert first.text is not None and first.text.startswith("✅ RESOLVED · quizbot")
    assert "✅ resolved after 4 min" in first.text
    assert recovery.text is not None and recovery.text.startswith("✅ quizbot recovered")
    assert alert.id in recovery.text
    assert await engine.list() == []  # nothing firing
    [done] = await engine.list(firing_only=False)
    assert done.status == "resolved" and done.recovery == "sent"
    assert fake.too_many_requests == []

    # the same fingerprint firing again is a new occurrence: same id, a new message
    clock.advance(60)
    await engine.ingest([firing("fp-1")])
    again = fake.bot_messages(CHAT)[-1]
    assert again.message_id not in (first.message_id, recovery.message_id)
    assert f"ak:{alert.id}" in buttons(again)
    [refired] = await engine.list()
    assert refired.count == 1 and refired.occurrence == 2


async def test_ack_edits_the_message_and_stops_reminders(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    engine = engine_for(
        sqlite_store, make_settings(fake, tmp_path, reminder_interval=900), bot, clock
    )
    await engine.ingest([firing("fp-crit"), firing("fp-warn", severity=Severity.warning)])
    crit, warn = sorted(await engine.list(), key=lambda a: a.fingerprint)
    assert warn.severity is Severity.warning

    clock.advance(901)
    await engine.tick()
    [reminder] = [m for m in fake.bot_messages(CHAT) if m.text and m.text.startswith("⏰")]
    assert crit.id in (reminder.text or "") and buttons(reminder) == [f"ak:{crit.id}"]
    await engine.tick()
    assert sends(fake) == 3  # two alerts and one reminder (the warning is not reminded)

    toast = await engine.ack(crit.id, ALICE)
    assert toast.startswith("Acked by alice")
    message = fake.message(CHAT, await engine.message_of(crit.id) or 0)
    assert message is not None and message.text is not None
    assert "👀 acked by alice" in message.text
    assert f"ak:{crit.id}" not in buttons(message) and f"as:{crit.id}" in buttons(message)
    assert await engine.ack(crit.id, ALICE) == "Already acked by alice."
    assert await engine.ack("unknown1", ALICE) == "This alert is no longer known."

    clock.advance(901)
    await engine.tick()
    assert sends(fake) == 3  # acked: no more reminders
    assert fake.too_many_requests == []


async def test_a_silenced_target_records_but_posts_nothing_and_its_end_is_announced_once(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    settings = make_settings(fake, tmp_path)
    engine = engine_for(sqlite_store, settings, bot, clock)
    replica = engine_for(sqlite_store, settings, bot, clock)
    silence = await silences.add(sqlite_store, "quizbot", 600, "deploy", ALICE, now=clock())

    await engine.ingest(
        [firing("fp-q1"), firing("fp-q1"), firing("fp-q2", severity=Severity.info)]
    )
    await engine.ingest([firing("fp-pay", target="paybot")])
    assert sends(fake) == 1  # only paybot's
    quiet = [a for a in await engine.list() if a.target == "quizbot"]
    assert len(quiet) == 2 and all(a.silenced and a.message_id is None for a in quiet)
    assert {a.silence_id for a in quiet} == {silence.id}
    assert sum(a.count for a in quiet) == 3

    await engine.tick()
    assert sends(fake) == 1
    clock.advance(601)
    await asyncio.gather(engine.tick(), replica.tick())
    await engine.tick()
    await replica.tick()
    notices = [m for m in fake.bot_messages(CHAT) if m.text and m.text.startswith("🔔")]
    assert len(notices) == 1
    assert notices[0].text is not None
    assert "silence of every alert of quizbot ended" in notices[0].text
    assert "deploy" in notices[0].text and "2 alerts still firing" in notices[0].text

    # what still fires once the silence is over is posted, without waiting for a repeat (a
    # monitor alert repeats only when its state changes): a silence cannot hide an outage
    assert sends(fake) == 4
    quiet = [a for a in await engine.list() if a.target == "quizbot"]
    assert all(not a.silenced and a.message_id is not None for a in quiet)
    await engine.ingest([firing("fp-q1")])  # a repeat edits its message
    assert sends(fake) == 4
    assert fake.too_many_requests == []


async def test_the_silence_button_silences_that_alert_only_and_its_card_says_so(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    engine = engine_for(sqlite_store, make_settings(fake, tmp_path), bot, clock)
    await engine.ingest([check_failed("fp-health", "http /health")])
    [alert] = await engine.list()

    toast = await engine.silence_alert(alert.id, ALICE)
    assert toast.startswith("🔕 This alert (quizbot · http /health) silenced for 1h, until ")
    assert toast.endswith("Other alerts of quizbot still post.")
    card = fake.message(CHAT, await engine.message_of(alert.id) or 0)
    until = time.strftime("%H:%M UTC", time.gmtime(clock() + 3600))
    assert card is not None and card.text is not None
    assert f"🔕 silenced by alice until {until} (this alert only)" in card.text
    assert f"au:{alert.id}" in buttons(card) and f"as:{alert.id}" not in buttons(card)
    [silence] = await silences.active(sqlite_store, clock())
    assert silence.fingerprint == alert.fingerprint and silence.created_by == "alice"
    assert (await engine.silence_alert(alert.id, ALICE)).startswith("Already silenced by alice")

    # the same alert again stays quiet; a different failure of the same target is posted
    before = sends(fake)
    await engine.ingest([check_failed("fp-health", "http /health")])
    assert sends(fake) == before
    await engine.ingest([check_failed("fp-disk", "disk /var")])
    other = fake.bot_messages(CHAT)[-1]
    assert sends(fake) == before + 1 and other.text is not None
    assert other.text.startswith("🔥 CRITICAL · quizbot") and "disk /var" in other.text
    assert "silenced" not in other.text and any(d.startswith("as:") for d in buttons(other))

    # resolved, the card still shows the silence (it covers the alert's next firing)
    clock.advance(120)
    await engine.ingest([check_failed("fp-health", "http /health", "resolved")])
    card = fake.message(CHAT, await engine.message_of(alert.id) or 0)
    assert card is not None and card.text is not None
    assert card.text.startswith("✅ RESOLVED · quizbot")
    assert f"🔕 silenced by alice until {until} (this alert only)" in card.text
    assert buttons(card) == [f"au:{alert.id}"]
    clock.advance(60)
    await engine.ingest([check_failed("fp-health", "http /health")])  # fires again, quietly
    assert sends(fake) == before + 1
    [again] = [a for a in await engine.list() if a.fingerprint == "fp-health"]
    assert again.silenced and again.occurrence == 2 and again.message_id is None

    # Unsilence: the silence ends, and the alert that fires unposted is posted
    toast = await engine.unsilence_alert(alert.id, ALICE)
    assert toast == f"🔔 Silence of alert {alert.id} only (quizbot · http /health) ended: " \
        "alerts post again."
    assert await silences.active(sqlite_store, clock()) == []
    await engine.tick()
    posted = fake.message(CHAT, await engine.message_of(alert.id) or 0)
    assert posted is not None and posted.text is not None and sends(fake) == before + 2
    assert posted.text.startswith("🔥 CRITICAL · quizbot") and "silenced" not in posted.text
    assert await engine.unsilence_alert(alert.id, ALICE) == "This alert is not silenced."

    # without a target, only that alert is muted, as ever
    await engine.ingest([firing("fp-none", target=None)])
    [none] = [a for a in await engine.list() if a.fingerprint == "fp-none"]
    assert (await engine.silence_alert(none.id, ALICE, 600)).startswith("🔕 This alert (")
    before = sends(fake)
    await engine.ingest([firing("fp-b", target=None, summary="another"), firing("fp-none", None)])
    assert sends(fake) == before + 1  # fp-b is posted, fp-none stays quiet
    assert fake.too_many_requests == []


async def test_a_silence_ends_by_itself_and_the_card_stops_saying_so(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    engine = engine_for(sqlite_store, make_settings(fake, tmp_path), bot, clock)
    await engine.ingest([check_failed("fp-h", "http /health")])
    [alert] = await engine.list()
    await engine.silence_alert(alert.id, ALICE, 600)
    clock.advance(601)
    await engine.tick()
    card = fake.message(CHAT, await engine.message_of(alert.id) or 0)
    assert card is not None and card.text is not None and "silenced" not in card.text
    assert f"as:{alert.id}" in buttons(card) and f"au:{alert.id}" not in buttons(card)
    [notice] = [m for m in fake.bot_messages(CHAT) if (m.text or "").startswith("🔔")]
    assert f"silence of alert {alert.id} only (quizbot · http /health) ended" in (
        notice.text or ""
    )


async def test_a_silenced_warning_turning_critical_is_no_longer_silenced(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    engine = engine_for(sqlite_store, make_settings(fake, tmp_path), bot, clock)
    await engine.ingest([firing("fp-lag", severity=Severity.warning, summary="lag 40 s")])
    [alert] = await engine.list()
    toast = await engine.silence_alert(alert.id, ALICE)
    assert toast.endswith("It posts again if it turns critical.")
    await engine.ingest([firing("fp-lag", severity=Severity.warning, summary="lag 50 s")])
    assert (await engine.get(alert.id)).silenced  # type: ignore[union-attr]

    clock.advance(60)
    await engine.ingest([firing("fp-lag", severity=Severity.critical, summary="lag 900 s")])
    worse = await engine.get(alert.id)
    assert worse is not None and not worse.silenced
    card = fake.message(CHAT, await engine.message_of(alert.id) or 0)
    assert card is not None and card.text is not None
    assert card.text.startswith("🔥 CRITICAL · quizbot") and "silenced" not in card.text
    assert f"as:{alert.id}" in buttons(card)
    [silence] = await silences.active(sqlite_store, clock())  # still there, for its warnings
    assert silence.what == f"alert {alert.id} only (quizbot · lag 40 s), while warning"


async def test_card_buttons_are_only_those_whose_action_exists(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    engine = engine_for(sqlite_store, make_settings(fake, tmp_path), bot)
    rpo = AlertEvent("backup", "fp-rpo", "firing", Severity.critical,
                     "quizbot: no verified files backup of /etc/hostname yet (RPO 6h)",
                     "quizbot", labels={"check": "rpo", "rpo": "6h"})  # fmt: skip
    await engine.ingest([rpo])
    await engine.ingest([firing("fp-pay", target="paybot")])
    rpo_card, pay_card = fake.bot_messages(CHAT)
    # a backup alert: Back up now, never Logs or Restart
    assert [d[:3] for d in buttons(rpo_card)] == ["ab:", "as:", "ak:", "ai:"]
    labels = [b["text"] for row in (rpo_card.reply_markup or {})["inline_keyboard"] for b in row]
    assert labels[0] == "💾 Back up now"
    # paybot has no log source and no restart action: neither button
    assert [d[:3] for d in buttons(pay_card)] == ["as:", "ak:", "ai:"]
    # at most three a row
    rows = (rpo_card.reply_markup or {})["inline_keyboard"]
    assert all(len(row) <= 3 for row in rows)


# --------------------------------------------------------------------------- a storm


async def test_a_storm_of_5000_alerts_is_recorded_and_stays_within_the_flood_limit(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    clock = Clock()
    # The digest window (10 s) is longer than this test takes in real time, so the storm is
    # still on when checked; the engine clock then jumps minutes ahead to end it.
    settings = make_settings(fake, tmp_path, max_messages_per_minute=15, digest_interval=10.0)
    engine = engine_for(sqlite_store, settings, bot, clock)
    targets = ["quizbot", "paybot", "searchbot", "mailbot", "authbot"]
    severities = [Severity.critical, Severity.warning, Severity.info]
    shuffle = random.Random(7).shuffle

    def event(i: int, status: Literal["firing", "resolved"] = "firing") -> AlertEvent:
        return AlertEvent("alertmanager", f"storm-{i}", status, severities[i % 3],
                          f"check {i} failing", targets[i % 5])  # fmt: skip

    started = time.monotonic()
    for batch in range(5):  # webhooks deliver alerts in groups: 5 × 1,000 events
        events = []
        for _ in range(2):  # 500 fingerprints twice; in the very last, one in five resolve
            last = batch == 4 and _ == 1
            half = [event(i, "resolved" if last and i % 5 == 0 else "firing") for i in range(500)]
            shuffle(half)
            events += half
        await engine.ingest(events)
        await engine.tick()
    ingest_seconds = time.monotonic() - started
    print(f"5,000 events ingested in {ingest_seconds:.1f} s")
    for _ in range(3):
        await asyncio.sleep(0.5)
        await engine.tick()
    assert ingest_seconds < 10

    # everything is recorded and listable
    everything = await engine.list(firing_only=False, limit=10_000)
    assert len(everything) == 500
    assert sum(a.count for a in everything) == 4900
    assert sum(a.status == "resolved" for a in everything) == 100
    assert count_events(await sqlite_store.tail(EVENTS, "all", 10_000)) == 5000
    assert len(await engine.list(limit=10_000)) == 400

    # the chat got a few alerts of their own, then one digest
    messages = fake.bot_messages(CHAT)
    digests = [m for m in messages if m.text and "alert storm" in m.text]
    posted = [m for m in messages if m not in digests]
    # alerts.max_messages_per_minute less one for the digest, then critical ones while the
    # window keeps room for them (four slots are left: three to replies, one to the digest)
    assert len(posted) == 16
    assert all((m.history[0] or "").startswith("🔥") for m in posted)  # most severe first
    assert len(digests) == 1 and len(messages) == 17
    digest = digests[0].text or ""
    assert digest.startswith("🌩 alert storm: ") and "quizbot: " in digest and "/alerts" in digest
    assert "critical without a message of their own" in digest  # it names what it holds
    assert not any("recovered" in (m.text or "") for m in messages)  # none in a storm
    ids = {(m.text or "").rsplit(" id ", 1)[1].split()[0] for m in posted}
    assert len(ids) == 16
    assert all(a.message_id is not None or a.digested for a in everything)

    # the flood limit: at most 20 messages in any rolling minute, and never a 429
    dates = sorted(m.date for m in messages)
    assert all(sum(1 for d in dates if first <= d < first + 60) <= 20 for first in dates)
    assert fake.too_many_requests == []

    # minutes later (engine time) the final state shows: counts, resolves, storm over
    for _ in range(3):
        clock.advance(61)
        await engine.tick()
    assert sends(fake) == 17  # only edits since
    final = fake.message(CHAT, digests[0].message_id)
    assert final is not None and final.text is not None
    assert final.text.startswith("🌤 alert storm over: ")
    by_message = {await engine.message_of(a.id): a for a in everything if a.message_id}
    for message in posted:
        now = fake.message(CHAT, message.message_id)
        alert = by_message[message.message_id]
        assert now is not None and now.text is not None
        if alert.status == "resolved":
            assert now.text.startswith("✅ RESOLVED")
        else:
            assert "×10 since" in now.text
    assert fake.too_many_requests == []


# --------------------------------------------------------------------------- replicas


@pytest_asyncio.fixture
async def redis_pair(redis_server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    prefix = f"alerts-test-{next(_prefixes)}-{time.time_ns()}"
    one, two = RedisStore(redis_server.url, prefix), RedisStore(redis_server.url, prefix)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def test_two_replicas_post_each_new_alert_exactly_once(
    redis_pair: tuple[RedisStore, RedisStore], tmp_path: Path
) -> None:
    # The two replicas' shared clock jumps a minute between rounds, so their outboxes' pace
    # lets every alert through; Telegram's own limits (on real time) are off for that.
    clock = Clock()
    with FakeBotAPI(group_per_minute=None, global_per_second=None) as fake:
        fake.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        settings = make_settings(fake, tmp_path, max_messages_per_minute=20)
        async with (
            Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as bot_a,
            Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as bot_b,
        ):
            one = engine_for(redis_pair[0], settings, bot_a, clock)
            two = engine_for(redis_pair[1], settings, bot_b, clock)
            for round_ in range(5):
                events = [firing(f"rep-{round_}-{i}", target=f"t{i % 3}") for i in range(10)]
                await asyncio.gather(one.ingest(events), two.ingest(list(reversed(events))))
                await asyncio.gather(one.tick(), two.tick())
                clock.advance(61)
            alerts = await one.list(limit=100)
            messages = fake.bot_messages(CHAT)
            assert fake.too_many_requests == []
            shown = {await one.outbox.message_id(a.message_id or 0) for a in alerts}
    assert len(alerts) == 50 and all(a.count == 2 for a in alerts)  # both events recorded
    assert len(messages) == 50
    posted_ids = [d[3:] for m in messages for d in buttons(m) if d.startswith("ak:")]
    assert sorted(posted_ids) == sorted(a.id for a in alerts)
    assert shown == {m.message_id for m in messages}


async def test_two_replicas_share_one_pace_and_one_digest(
    redis_pair: tuple[RedisStore, RedisStore], tmp_path: Path
) -> None:
    # Telegram's minute shrunk to 3 s (edits counted), so the next window comes soon.
    with FakeBotAPI(group_window=3.0, count_edits=True) as fake:
        fake.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        settings = make_settings(fake, tmp_path, max_messages_per_minute=20)
        async with (
            Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as bot_a,
            Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as bot_b,
        ):
            one = engine_for(redis_pair[0], settings, bot_a)
            two = engine_for(redis_pair[1], settings, bot_b)
            events = [firing(f"share-{i}", target=f"t{i % 4}") for i in range(50)]
            await asyncio.gather(one.ingest(events), two.ingest(events[::-1]))
            first_window = fake.bot_messages(CHAT)
            await asyncio.gather(one.tick(), two.tick())
            deadline = time.monotonic() + 10
            while await one.outbox.pending():
                assert time.monotonic() < deadline
                await asyncio.gather(one.delivered(), two.delivered())
                await asyncio.sleep(0.1)
            alerts = await two.list(limit=100)
        messages = fake.bot_messages(CHAT)
        calls = [c for c in fake.calls if c.params.get("chat_id") == CHAT]
        assert fake.too_many_requests == []
    # The chat takes 15 alert calls a window: that many alerts get a message but one, kept
    # for the digest; these critical ones then two more, while the window keeps four slots
    # (three for replies, one for the digest; replicas deciding at the same moment may queue
    # one more each: they wait for the next window, the pace is shared); the rest go into
    # one digest, which names them.
    with_message = [a for a in alerts if a.message_id is not None]
    assert 16 <= len(with_message) <= 18 and 17 <= len(first_window) <= 19
    posted = [m for m in messages if buttons(m)]
    digests = [m for m in messages if m.text and m.text.startswith("🌩 alert storm")]
    assert len(digests) == 1 and len(posted) == len(with_message)
    posted_ids = [d[3:] for m in posted for d in buttons(m) if d.startswith("ak:")]
    assert sorted(posted_ids) == sorted(a.id for a in with_message)
    assert len(alerts) == 50 and all(a.count == 2 for a in alerts)
    assert sum(a.digested for a in alerts) == 50 - len(with_message)
    times = [c.at for c in calls]
    assert all(sum(1 for t in times if first <= t < first + 3.0) <= 20 for first in times)


# --------------------------------------------------------------------------- the verbs


async def test_the_alert_verbs(fake: FakeBotAPI, bot: Bot, tmp_path: Path) -> None:
    settings = make_settings(fake, tmp_path)
    services = Services.build(settings)
    caller = Caller("alice", Role.admin, user_id=ALICE.id, chat_id=CHAT)
    try:
        engine = engine_for(services.store, settings, bot)
        empty = await alerts_verb(engine, services, caller, [])
        assert empty.text.startswith("✅ nothing firing")

        await engine.ingest(
            [
                firing("v-1"),
                firing("v-1"),
                firing("v-2", target="paybot", severity=Severity.warning),
            ]
        )
        await engine.ingest([firing("v-3"), resolved("v-3")])
        listed = await alerts_verb(engine, services, caller, [])
        assert listed.text.startswith("🚨 2 firing (1 critical)")
        lines = listed.block.splitlines()
        assert len(lines) == 2 and lines[0].startswith("🔥 ") and " quizbot ×2 since " in lines[0]
        assert lines[1].startswith("⚠️ ") and " paybot ×1 " in lines[1]
        every = await alerts_verb(engine, services, caller, ["all", "10"])
        assert len(every.block.splitlines()) == 3 and "✅ " in every.block
        one = await alerts_verb(engine, services, caller, ["1"])
        assert len(one.block.splitlines()) == 1 and "+1 more" in one.text

        crit = (await engine.list())[0]
        acked = await ack_verb(engine, services, caller, [crit.id])
        assert "Acked by alice" in acked.text
        assert "[acked alice]" in (await alerts_verb(engine, services, caller, [])).block

        silenced = await silence_verb(
            engine, services, caller, ["QuizBot", "1h30m", "deploy", "v2"]
        )
        assert "quizbot silenced for 1h30m" in silenced.text and "deploy v2" in silenced.text
        assert "every alert of quizbot, whatever the check" in silenced.text  # target-wide
        # the card of quizbot's firing alert says so at once
        await engine.delivered()
        card = fake.message(CHAT, await engine.message_of(crit.id) or 0)
        assert card is not None and card.text is not None
        assert "🔕 silenced by alice until " in card.text
        assert card.text.endswith("(every alert of quizbot)")
        assert f"au:{crit.id}" in buttons(card)
        # a button's silence of one alert, beside it in the list
        await engine.ingest([firing("v-4", target="paybot", summary="paybot slow")])
        [pay] = [a for a in await engine.list() if a.fingerprint == "v-4"]
        await engine.silence_alert(pay.id, ALICE)
        listing = await silence_verb(engine, services, caller, ["list"])
        assert listing.text.startswith("🔕 2 silences in force")
        assert ": every alert of quizbot, until " in listing.block
        assert "by alice — deploy v2" in listing.block
        assert f": alert {pay.id} only (paybot · paybot slow), until " in listing.block
        [silence] = [s for s in await silences.active(services.store, time.time())
                     if s.fingerprint is None]  # fmt: skip
        everyone = await silence_verb(engine, services, caller, ["*", "10m"])
        assert "every target silenced for 10m" in everyone.text
        ended = await unsilence_verb(engine, services, caller, [silence.id])
        assert ended.text.startswith(
            f"🔔 silence {silence.id} of every alert of quizbot ended by alice"
        )
        await engine.delivered()
        card = fake.message(CHAT, await engine.message_of(crit.id) or 0)
        assert card is not None and card.text is not None
        assert card.text.endswith("(every target)")  # the * silence covers it still
        assert len(await silences.active(services.store, time.time())) == 2

        bad = [
            (alerts_verb, ["everything"]),
            (alerts_verb, ["0"]),
            (ack_verb, []),
            (ack_verb, ["no-such-1"]),
            (ack_verb, ["a b;rm"]),
            (silence_verb, []),
            (silence_verb, ["quizbot"]),
            (silence_verb, ["nosuchbot", "1h"]),
            (silence_verb, ["quizbot", "soon"]),
            (silence_verb, ["quizbot", "45s"]),
            (silence_verb, ["quizbot", "31d"]),
            (unsilence_verb, [silence.id]),  # already ended
            (unsilence_verb, []),
        ]
        for verb, args in bad:
            with pytest.raises(UsageError) as caught:
                await verb(engine, services, caller, args)
            assert "\n" not in str(caught.value) and len(str(caught.value)) < 200
    finally:
        await services.close()


def test_parse_duration() -> None:
    parse = silences.parse_duration
    assert parse("1h30m") == 5400 and parse("90m") == 5400 and parse("2d") == 172800
    assert parse("1w") == 7 * 86400 and parse(" 1H ") == 3600
    assert parse("45s", minimum=1) == 45
    for bad in ("45s", "31d", "", "1h1h", "90", "m", "1.5h", "-1h", "1h 30m"):
        with pytest.raises(UsageError):
            parse(bad)
    assert silences.describe(5400) == "1h30m" and silences.describe(45) == "45s"
