"""The objectives report: /report in the chat with its PNG chart, and the scheduled report
sent once from two replicas sharing a real Redis."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import ReportSchedule
from opsbot.objectives import charts, clock
from opsbot.objectives import schedule as report_schedule
from opsbot.objectives.recording import Recorder
from opsbot.objectives.series import DAY
from opsbot.services import Services
from tests.factories import (
    OPS,
    VIC,
    ChatSession,
    base_config,
    fake_fixture,
    opsbot_chat,
    write_config,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.redis import RedisServer

TRUE = [{"type": "command", "argv": ["true"]}]
MONITOR = {"enabled": True, "interval": 3600}  # no round of their own during the test


fake = fake_fixture(scope="module", group_per_minute=None)


def report_config(fake: FakeBotAPI, tmp_path: Path) -> dict[str, object]:
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {
        "quizbot": {"kind": "command", "checks": TRUE, "monitor": MONITOR},
        "paybot": {"kind": "command", "checks": TRUE, "monitor": MONITOR,
                   "objective": {"availability": 99.5}},
    }  # fmt: skip
    return config


NOW = time.time() // DAY * DAY + DAY / 2  # noon UTC today: 6.5 days in the report's 7


async def seed(services: Services, now: float) -> None:
    """30 days of a round a minute; quizbot down 40 minutes two days ago, paybot slow."""
    recorder = Recorder(services.store, services.settings, clock=lambda: now)
    for minute in range(30 * 1440):
        at = now - 30 * DAY + minute * 60
        down = now - 2 * DAY <= at < now - 2 * DAY + 2400
        recorder.observe("quizbot", not down, 0.2, at)
        recorder.observe("paybot", True, 0.7 if minute % 10 == 0 else 0.1, at)
    await recorder.flush(final=True)


@pytest_asyncio.fixture
async def chat(
    fake: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChatSession]:
    monkeypatch.setattr(clock, "now", lambda: NOW)
    async with opsbot_chat(fake, tmp_path, report_config(fake, tmp_path)) as session:
        services = session.services
        await seed(services, NOW)
        # what the week held besides the rounds: an incident acked and resolved, an alert,
        # a restart and a rollback in the audit trail
        await session.ask("/incident P2 quiz answers slow quizbot")
        await session.ask("/incident ack INC-1")
        await session.ask("/incident resolve INC-1 restarted the workers")
        await ALERT_ENGINE.of(services).ingest([AlertEvent(
            "webhook", "quiz-5xx", "firing", Severity.warning, "5xx above 1 %", target="quizbot",
        )])  # fmt: skip
        for action in ("restart", "restart", "rollback"):
            await services.audit.record("executed", target="quizbot", action=action, ok=True)
        yield session


async def test_report_gives_each_target_and_a_chart_for_a_phone(chat: ChatSession) -> None:
    reply = await chat.ask("/report", user=VIC)
    assert reply.document_name is not None and reply.document_name.startswith("objectives-7d-")
    lines = (reply.caption or "").splitlines()
    assert lines[0].startswith("Objectives, last 7 days (")
    assert lines[0].endswith(" UTC): 2 targets, 1 below their objective")
    # 40 of 9,360 rounds failed this week, 40 of 43,200 in the objective's 30 days
    assert lines[1] == "quizbot: 99.57 % of 99.9 % · 7 % budget left · p95 ≤ 0.25 s"
    assert lines[2].startswith("  1 incident (ack ") and "resolve " in lines[2]
    assert lines[2].endswith(" on average) · 1 alert · 2 restarts, 1 rollbacks")
    assert lines[3] == "paybot: 100 % of 99.5 % · 100 % budget left · p95 ≤ 1 s"
    image = Image.open(io.BytesIO(reply.document_bytes or b""))
    assert image.format == "PNG" and image.size == charts.REPORT_SIZE


async def test_report_takes_7d_or_30d(chat: ChatSession) -> None:
    reply = await chat.ask("/report 30d", user=VIC)
    assert (reply.caption or "").startswith("Objectives, last 30 days (")
    reply = await chat.ask("/report 1y", user=VIC)
    assert reply.text == "⚠️ usage: /report [7d|30d]"


def test_the_last_slot_in_the_configured_timezone() -> None:
    weekly = ReportSchedule(every="weekly", day="mon", at="09:00", timezone="Europe/Berlin")
    thursday = 1_796_292_000.0  # 2026-12-03 10:00 UTC
    assert report_schedule.last_slot(weekly, thursday) == 1_796_025_600.0  # Mon 08:00 UTC
    daily = ReportSchedule(every="daily", at="12:30")
    assert report_schedule.last_slot(daily, thursday) == thursday - 86400 + 9000  # yesterday
    assert report_schedule.last_slot(ReportSchedule(), thursday) is None


async def test_the_scheduled_report_is_sent_once_by_two_replicas_on_redis(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer
) -> None:
    config = report_config(fake, tmp_path)
    config["store"] = {"backend": "redis", "redis_url": redis_server.url,
                       "prefix": f"report-{tmp_path.name[-12:]}"}  # fmt: skip
    now = time.time()
    config["objectives"] = {"report": {"every": "daily", "at": time.strftime(
        "%H:%M", time.gmtime(now - 120))}}  # fmt: skip
    settings = write_config(tmp_path / "opsbot.yaml", config)
    replicas = [Services.build(settings) for _ in range(2)]
    try:
        await seed(replicas[0], now)
        schedulers = [report_schedule.ReportScheduler(s, s.notifier()) for s in replicas]
        assert all(s.active for s in schedulers)
        sent = await asyncio.gather(*(s.tick() for s in schedulers for _ in range(3)))
        assert sorted(sent) == [False] * 5 + [True]
        queued = await replicas[1].outbox.pending()
        assert len(queued) == 1 and queued[0].chat == OPS.id
        reply = await replicas[1].outbox.reply_of(queued[0])
        assert reply is not None and reply.document is not None
        assert reply.text.startswith("Objectives, last 7 days (")
        assert Image.open(io.BytesIO(reply.document.content)).size == charts.REPORT_SIZE
    finally:
        for services in replicas:
            await services.close()
