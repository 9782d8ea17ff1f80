"""A fault at every Bot API call of the /restart flow: the action runs exactly once and the
final card (and its copy in the incident chat) is delivered.

The calls of the flow: the card (sendMessage, the reply to /restart), the Approve tap's toast
(answerCallbackQuery), each card edit (editMessageText: "starting…", progress, the result),
and the copy in the incident chat (sendMessage). Each is hit in turn with a 502 three times,
a 429 with retry_after, a timeout (a request never answered) or, for the toast, Telegram's
400 "query is too old". One opsbot (state in the real Redis) runs the whole module; the
fake Bot API keeps Telegram's limits on, and no 429 but the injected ones is ever answered.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.factories import (
    INCIDENTS,
    OPS,
    OSCAR,
    ChatSession,
    approved,
    base_config,
    counting_target,
    fake_fixture,
    opsbot_chat,
    redis_store,
    runs,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.redis import RedisServer

TOO_OLD = "Bad Request: query is too old and response timeout expired or query ID is invalid"
REQUEST_TIMEOUT = 2.0  # telegram.request_timeout here (5 s by default)
HANG = REQUEST_TIMEOUT + 1.0  # never answered in time: the call times out


# Telegram's limits on (20 calls per group window, 30/s), the window shrunk to 10 s on
# both sides: opsbot paces edits too, and 14 restart flows in one group would otherwise
# wait a minute for slots (pacing is tests/alerting/test_alert_pacing_e2e.py's subject).
fake = fake_fixture(scope="module", group_window=10.0)


@pytest.fixture(scope="module")
def counter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("runs") / "runs"


def counter_config(fake: FakeBotAPI, data: Path, counter: Path, redis_url: str) -> dict[str, Any]:
    config = base_config(fake, data)
    config["telegram"]["request_timeout"] = REQUEST_TIMEOUT
    config["store"] = redis_store(redis_url, "faults")
    config["targets"] = {"counter": counting_target(counter)}
    return config


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI,
    tmp_path_factory: pytest.TempPathFactory,
    counter: Path,
    redis_server: RedisServer,
) -> AsyncIterator[ChatSession]:
    tmp = tmp_path_factory.mktemp("faults")
    config = counter_config(fake, tmp / "data", counter, redis_server.url)
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


async def restart_flow(chat: ChatSession, counter: Path) -> tuple[FakeMessage, FakeMessage]:
    """/restart counter by Oscar, approved by Bob: (the final card, the incident copy)."""
    fake = chat.fake
    before = runs(counter)
    copies_before = [m.message_id for m in chat.bot_messages(INCIDENTS)]
    sent = chat.send("/restart counter", user=OSCAR)
    card = await fake.wait_for_message(
        OPS.id, lambda m: "approval needed" in (m.text or ""),
        after_message_id=sent["message_id"], timeout=40,
    )  # fmt: skip
    done = await approved(chat, card, "— done")
    copy = await fake.wait_for_message(
        INCIDENTS.id,
        lambda m: m.message_id not in copies_before and "restart counter" in (m.text or ""),
        timeout=60,
    )
    assert runs(counter) == before + 1
    return done, copy


def too_many(seconds: int, **more: Any) -> dict[str, Any]:
    return {"error_code": 429, "description": f"Too Many Requests: retry after {seconds}",
            "retry_after": seconds, **more}  # fmt: skip


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "card 502x3": ("sendMessage", {"times": 3}),
    "card 429": ("sendMessage", too_many(1)),
    "card timeout": ("sendMessage", {"hang": HANG}),
    "toast 502": ("answerCallbackQuery", {}),  # a toast is a courtesy: never retried
    "toast too old": ("answerCallbackQuery", {"error_code": 400, "description": TOO_OLD}),
    "toast timeout": ("answerCallbackQuery", {"hang": HANG}),
    "first edit 502x3": ("editMessageText", {"times": 3}),
    "first edit 429": ("editMessageText", too_many(2)),
    "first edit timeout": ("editMessageText", {"hang": HANG}),
    "second edit 502x3": ("editMessageText", {"times": 3, "skip": 1}),
    "second edit timeout": ("editMessageText", {"hang": HANG, "skip": 1}),
    "incident copy 502x3": ("sendMessage", {"times": 3, "skip": 1}),
    "incident copy 429": ("sendMessage", too_many(1, skip=1)),
    "incident copy timeout": ("sendMessage", {"hang": HANG, "skip": 1}),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_a_fault_at_any_call_of_the_restart_flow(
    chat: ChatSession, counter: Path, case: str
) -> None:
    method, fault = CASES[case]
    injected_429s = len(chat.fake.too_many_requests)
    armed = chat.fake.inject(method, **fault)
    try:
        done, copy = await restart_flow(chat, counter)
    finally:
        chat.fake.clear_faults()
    assert armed.times == 0, f"the fault never happened: {chat.fake.dump_calls()}"
    assert done.text is not None and "approved by bob" in done.text
    assert "✅ restart counter" in (copy.text or "")
    assert len(chat.fake.too_many_requests) - injected_429s == (
        1 if fault.get("error_code") == 429 else 0
    )  # only the injected one: pacing never hits Telegram's limits


async def test_no_card_is_duplicated_and_nothing_is_left_in_the_outbox(chat: ChatSession) -> None:
    cards = [m for m in chat.bot_messages(OPS) if "restart counter" in (m.text or "")]
    assert len(cards) == len(CASES)
    assert all("— done" in (m.text or "") for m in cards)
    deadline = time.monotonic() + 10  # the last entry is settled just after its call returns
    while await chat.services.outbox.pending():
        assert time.monotonic() < deadline, await chat.services.outbox.pending()
        await asyncio.sleep(0.05)
