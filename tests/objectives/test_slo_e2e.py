"""/slo and the latency chart end to end: 30 days of rounds in opsbot's store, read back in
the chat."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from opsbot.objectives import charts, clock
from opsbot.objectives.recording import Recorder
from opsbot.objectives.series import DAY
from tests.factories import (
    OPS,
    OPSBOT_TOKEN,
    VIC,
    ChatSession,
    base_config,
    fake_fixture,
    opsbot_chat,
)
from tests.fakebotapi import FakeBotAPI

START = 20_000 * DAY
END = START + 30 * DAY
TRUE = [{"type": "command", "argv": ["true"]}]


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest_asyncio.fixture
async def chat(
    fake: FakeBotAPI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ChatSession]:
    monkeypatch.setattr(clock, "now", lambda: END)
    config = base_config(fake, tmp_path / "data")
    monitor = {"enabled": True, "interval": 3600}  # quizbot's first round: 53 min from now
    config["targets"] = {
        "quizbot": {"kind": "command", "checks": TRUE, "monitor": monitor},
        "paybot": {"kind": "command", "checks": TRUE, "monitor": monitor,
                   "objective": {"availability": 99.5, "latency": 0.5}},
        "scratch": {"kind": "command", "checks": TRUE},  # monitor off: no objective
    }  # fmt: skip
    async with opsbot_chat(fake, tmp_path, config) as session:
        services = session.services
        recorder = Recorder(services.store, services.settings, clock=lambda: END)
        for minute in range(30 * 1440):
            at = START + minute * 60
            # quizbot: 30 failed rounds, 2 of them in the last hour; paybot: none, and slow
            recorder.observe("quizbot", minute % 1440 != 7 or minute > 28 * 1440, 0.2, at)
            recorder.observe("paybot", True, 0.7 if minute % 4 == 0 else 0.1, at)
        recorder.observe("quizbot", False, 0.2, END - 600)
        recorder.observe("quizbot", False, 0.2, END - 1200)
        await recorder.flush()
        yield session


async def test_slo_lists_every_objective_least_budget_left_first(chat: ChatSession) -> None:
    reply = await chat.ask("/slo", user=VIC)
    assert reply.text.splitlines() == [
        "Objectives of 2 targets, least budget left first:",
        "quizbot: 99.93 % of 99.9 %, 31 % of the budget left, burning 32.3× — gone in 7 h at "
        "this rate",
        "paybot: 100 % of 99.5 %, 100 % of the budget left, not burning",
    ]


async def test_slo_target_gives_the_budget_the_burn_and_the_latency(chat: ChatSession) -> None:
    reply = await chat.ask("/slo paybot", user=VIC)
    assert reply.text.splitlines() == [
        "paybot: 100 % of 99.5 %, 100 % of the budget left, not burning",
        "budget: 216 of 216 min left (30 d, 0 of 43200 rounds failed)",
        "burn rate: 1 h 0.0×, 6 h 0.0×",
        "latency: 75 % of rounds ≤ 0.5 s (objective 95 %), p95 ≤ 1 s",
    ]


async def test_slo_of_a_target_without_an_objective_says_why(chat: ChatSession) -> None:
    reply = await chat.ask("/slo scratch", user=VIC)
    assert reply.text == "⚠️ scratch has no objective (objectives off, or its monitor is off)"
    reply = await chat.ask("/slo quizbt", user=VIC)
    assert reply.text.startswith("⚠️ unknown target 'quizbt'; did you mean quizbot?")


async def test_health_of_a_target_shows_its_latency_chart_of_the_last_24_h(
    chat: ChatSession,
) -> None:
    """One message: the chart as a photo, the health text (and its detail) as the caption,
    the card's buttons under it."""
    health = await chat.ask("/health paybot", user=VIC)
    assert health.photo == charts.LATENCY_SIZE and health.document_name is not None
    image = Image.open(io.BytesIO(health.document_bytes or b""))
    assert image.format == "PNG" and image.size == charts.LATENCY_SIZE
    caption = (health.caption or "").splitlines()
    assert caption[0].startswith("✅ paybot: ok (")
    assert caption[1] == "📈 last 24 h, p95 ≤ 1 s; 75 % of rounds ≤ 0.5 s (objective 95 %)"
    buttons = [b for row in (health.reply_markup or {})["inline_keyboard"] for b in row]
    assert {"text": "🔄 Refresh", "callback_data": "h:paybot"} in buttons
    before = len(chat.bot_messages())
    chat.tap(health, "h:paybot", user=VIC)  # Refresh: the same photo message, edited
    refreshed = await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == health.message_id and m.edits == 1, token=OPSBOT_TOKEN
    )
    assert refreshed.photo == charts.LATENCY_SIZE and refreshed.document_bytes
    assert (refreshed.caption or "").startswith("✅ paybot: ok (")
    assert {"text": "🔄 Refresh", "callback_data": "h:paybot"} in [
        b for row in (refreshed.reply_markup or {})["inline_keyboard"] for b in row
    ]
    assert len(chat.bot_messages()) == before  # no second photo
    chart = await chat.ask("/latency paybot", user=VIC)  # the same chart, as a file
    assert chart.document_name is not None and chart.document_name.startswith("paybot-latency-")
    assert chart.photo is None
    assert chart.caption == (
        "paybot: last 24 h, p95 ≤ 1 s; 75 % of rounds ≤ 0.5 s (objective 95 %)"
    )
    scratch = await chat.ask("/health scratch", user=VIC)  # no objective: no chart
    assert scratch.photo is None and scratch.text is not None
    assert scratch.text.startswith("✅ scratch: ok (")
