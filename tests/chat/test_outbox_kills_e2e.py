"""opsbot stopped at each step of the /restart flow, then started again on the same Redis:
the action runs at most once and the final card is delivered. And a Bot API down for 60 s:
every reply and edit arrives afterwards, in order.

In-process steps abandon an Application at a precise point (what is left is what a killed
replica leaves: the store); one test SIGKILLs a real ``opsbot run`` in the middle of the
action.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from opsbot.actions.approvals import APPROVALS
from opsbot.config import Settings
from opsbot.services import Services
from tests.factories import (
    BOB,
    INCIDENTS,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    ChatSession,
    approve,
    base_config,
    counting_target,
    fake_fixture,
    redis_store,
    request_id,
    running_opsbot,
    runs,
    start_opsbot,
    write_config,
)
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage
from tests.lab.redis import RedisServer

# Telegram's limits on
fake = fake_fixture()


def config_for(
    fake: FakeBotAPI, tmp_path: Path, redis: RedisServer, restart: str = "true"
) -> dict[str, Any]:
    counter = tmp_path / "runs"
    config = base_config(fake, tmp_path / "data")
    config["store"] = redis_store(redis.url, "kills")
    config["targets"] = {"counter": counting_target(counter, then=restart)}
    return config


def settings_for(fake: FakeBotAPI, tmp_path: Path, redis: RedisServer) -> Settings:
    return write_config(tmp_path / "opsbot.yaml", config_for(fake, tmp_path, redis))


@pytest.fixture
def settings(fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer) -> Settings:
    """The config every replica of a test starts on (``settings_for``)."""
    return settings_for(fake, tmp_path, redis_server)


def runs_in(tmp_path: Path) -> int:
    return runs(tmp_path / "runs")


def restart_cards(fake: FakeBotAPI, chat: Chat) -> list[FakeMessage]:
    """opsbot's messages in ``chat`` about the counter's restart."""
    return [m for m in fake.bot_messages(chat.id) if "restart counter" in (m.text or "")]


def bot_api_down(fake: FakeBotAPI) -> None:
    """The Bot API refuses every call but getUpdates: opsbot hears the chat, can't answer."""
    fake.set_down(True, except_methods=("getUpdates",))


async def ask_restart(chat: ChatSession) -> FakeMessage:
    sent = chat.send("/restart counter", user=OSCAR)
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: "approval needed" in (m.text or ""),
        after_message_id=sent["message_id"], timeout=30,
    )  # fmt: skip


async def approved_while_down(chat: ChatSession) -> FakeMessage:
    """Oscar asks for the restart; the Bot API goes down (``bot_api_down``); Bob approves."""
    card = await ask_restart(chat)
    bot_api_down(chat.fake)
    approve(chat, card)
    return card


async def incidents_copy(fake: FakeBotAPI) -> FakeMessage:
    """The restart's copy in the incident chat, once it arrives."""
    return await fake.wait_for_message(
        INCIDENTS.id, lambda m: "restart counter" in (m.text or ""), timeout=30
    )


async def final_card(
    fake: FakeBotAPI, card_id: int | None, state: str, timeout: float = 45
) -> FakeMessage:
    return await fake.wait_for_message(
        OPS.id,
        lambda m: (
            (card_id is None or m.message_id == card_id)
            and "restart counter" in (m.text or "")
            and f"— {state}" in (m.text or "")
        ),
        timeout=45,
    )


async def until(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def bob(services: Services) -> Any:
    return next(p for p in services.settings.people if p.id == BOB.id)


async def test_stopped_before_the_card_was_delivered(
    fake: FakeBotAPI, tmp_path: Path, settings: Settings
) -> None:
    async with running_opsbot(fake, settings) as chat:
        bot_api_down(fake)
        chat.send("/restart counter", user=OSCAR)
        await until(lambda: _has_pending(chat.services))
    fake.set_down(False)
    async with running_opsbot(fake, settings) as chat:
        card = await fake.wait_for_message(OPS.id, lambda m: "approval" in (m.text or ""))
        approve(chat, card)
        done = await final_card(fake, card.message_id, "done")
    assert runs_in(tmp_path) == 1 and "approved by bob" in (done.text or "")
    cards = restart_cards(fake, OPS)
    assert len(cards) == 1


async def _has_pending(services: Services) -> bool:
    return bool(await services.outbox.pending())


async def test_stopped_after_the_approval_won_and_before_the_run(
    fake: FakeBotAPI, tmp_path: Path, settings: Settings
) -> None:
    """The approving replica won the compare-and-set and died: the reaper runs it, once."""
    async with running_opsbot(fake, settings) as chat:
        card = await ask_restart(chat)
        decision = await APPROVALS.of(chat.services).decide(
            request_id(card), bob(chat.services), approve=True, now=time.time() - 30
        )
        assert decision.execute
    assert runs_in(tmp_path) == 0
    async with running_opsbot(fake, settings):
        done = await final_card(fake, card.message_id, "done")
        await asyncio.sleep(3)  # a reaper round more: still once
    assert runs_in(tmp_path) == 1 and "approved by bob" in (done.text or "")
    copy = restart_cards(fake, INCIDENTS)
    assert len(copy) == 1


async def test_stopped_mid_run_is_marked_failed_with_the_reason_and_never_rerun(
    fake: FakeBotAPI, tmp_path: Path, settings: Settings
) -> None:
    async with running_opsbot(fake, settings) as chat:
        card = await ask_restart(chat)
        approvals = APPROVALS.of(chat.services)
        await approvals.decide(request_id(card), bob(chat.services), approve=True)
        assert await approvals.start(request_id(card)) is not None  # then the replica died
    async with running_opsbot(fake, settings):
        failed = await final_card(fake, card.message_id, "failed")
    assert "opsbot stopped while this was running" in (failed.text or "")
    assert runs_in(tmp_path) == 0  # the dead replica's run is not repeated


async def test_stopped_before_the_final_edit_was_delivered(
    fake: FakeBotAPI, tmp_path: Path, settings: Settings
) -> None:
    async with running_opsbot(fake, settings) as chat:
        card = await approved_while_down(chat)
        await until(lambda: _done_in_store(chat.services, request_id(card)))
    fake.set_down(False)
    assert runs_in(tmp_path) == 1
    async with running_opsbot(fake, settings):
        done = await final_card(fake, card.message_id, "done")
        copy = await incidents_copy(fake)
    assert runs_in(tmp_path) == 1 and "approved by bob" in (done.text or "")
    assert "✅" in (copy.text or "")


async def _done_in_store(services: Services, request: str) -> bool:
    filed = await APPROVALS.of(services).get(request)
    return filed is not None and filed.status.value == "done"


# --------------------------------------------------------------------------- a real SIGKILL


async def test_opsbot_sigkilled_mid_action_runs_it_once_and_the_card_says_so(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer
) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config_for(fake, tmp_path, redis_server, restart="sleep 5")))
    first = start_opsbot(path)
    try:
        await fake.wait_for_call("getUpdates", timeout=30)
        sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/restart counter")
        card = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"], timeout=30)
        fake.tap_button(OPSBOT_TOKEN, OPS, BOB, card.message_id, f"a:{request_id(card)}")
        deadline = time.monotonic() + 30
        while runs_in(tmp_path) == 0:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)  # in the middle of the restart
        first.communicate(timeout=10)

    calls = len(fake.calls)
    second = start_opsbot(path)
    try:
        await fake.wait_for_call("getUpdates", since=calls, timeout=30)
        # The dead run's lease lapses (RUN_LEASE, 15 s), then the reaper settles it.
        failed = await final_card(fake, card.message_id, "failed", timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr[-2000:]
    assert "opsbot stopped while this was running" in (failed.text or "")
    assert runs_in(tmp_path) == 1
    copies = restart_cards(fake, INCIDENTS)
    assert len(copies) == 1 and "❌" in (copies[0].text or "")


# --------------------------------------------------------------------------- an outage


async def test_bot_api_down_for_a_minute_then_everything_arrives_in_order(
    fake: FakeBotAPI, tmp_path: Path, settings: Settings
) -> None:
    async with running_opsbot(fake, settings) as chat:
        card = await approved_while_down(chat)
        down_at = time.monotonic()
        for i in range(5):
            chat.send(f"/nope{i}", user=OSCAR)
            await asyncio.sleep(0.3)
        await asyncio.sleep(max(0.0, 60 - (time.monotonic() - down_at)))
        assert runs_in(tmp_path) == 1  # the action ran during the outage
        refused = fake.refused_while_down
        assert refused > 5  # opsbot kept trying
        fake.set_down(False)
        up_at = time.monotonic()
        done = await final_card(fake, card.message_id, "done")
        await fake.wait_for_message(OPS.id, lambda m: "/nope4" in (m.text or ""), timeout=30)
        took = time.monotonic() - up_at
        copy = await incidents_copy(fake)
    print(f"down 60 s: {refused} calls refused; all delivered {took:.1f} s after it came back")
    replies = [
        m.text or "" for m in fake.bot_messages(OPS.id) if "unknown command" in (m.text or "")
    ]
    assert replies == [f"unknown command /nope{i}; try /help" for i in range(5)]
    assert "approved by bob" in (done.text or "") and "✅" in (copy.text or "")
    assert fake.too_many_requests == []
    assert runs_in(tmp_path) == 1
