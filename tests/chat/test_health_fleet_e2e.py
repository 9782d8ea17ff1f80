"""/health over a fleet: 1,000 real HTTP targets, one answer that fits a phone.

1,000 targets on loopback aiohttp servers, 24 answering HTTP 500 and 6 slow (a warning),
through the fake Bot API: one message (the progress message, edited into the answer), under
Telegram's 4,096 characters, the 20 worst named, worst first, the rest counted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from aiohttp import web

from opsbot.verbs.core import NAMED_UNHEALTHY, PHONE_CHARS
from tests.factories import (
    ALICE_PRIVATE,
    OPSBOT_TOKEN,
    ChatSession,
    fake_fixture,
    module_config,
    opsbot_chat,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import free_port

TARGETS = 1000
SERVERS = 4
FAILING = set(list(range(7, TARGETS, 41))[:24])  # spread over the names
SLOW = {i for i in range(TARGETS) if i % 160 == 99}  # 6
SLOW_SECONDS = 1.0
assert len(FAILING) == 24 and len(SLOW) == 6 and not FAILING & SLOW


def name(i: int) -> str:
    return f"svc{i:04d}"


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest_asyncio.fixture(scope="module")
async def servers() -> AsyncIterator[list[int]]:
    """The fleet's HTTP endpoints: a few real servers, a path per target."""

    async def health(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        if i in SLOW:
            await asyncio.sleep(SLOW_SECONDS)  # the target's own slowness
        return web.Response(status=500 if i in FAILING else 200, text="ok")

    app = web.Application()
    app.router.add_get("/t/{i}", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    ports = [free_port() for _ in range(SERVERS)]
    for port in ports:
        await web.TCPSite(runner, "127.0.0.1", port).start()
    yield ports
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, servers: list[int]
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "fleet")
    config["targets"] = {
        name(i): {
            "kind": "command",
            "checks": [{
                "type": "http",
                "url": f"http://127.0.0.1:{servers[i % SERVERS]}/t/{i}",
                # Served on this test's own busy loop: only the slow ones may read as slow.
                "latency_warning": 0.5 if i in SLOW else 20.0,
                "timeout": 30.0,
            }],
        }
        for i in range(TARGETS)
    }  # fmt: skip
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


async def test_health_over_a_thousand_targets_is_one_message_worst_first(
    chat: ChatSession,
) -> None:
    sent = chat.send("/health", chat=ALICE_PRIVATE)
    first = await chat.next_message(sent, ALICE_PRIVATE, timeout=5)
    # Progress first, posted before the checks start (its time is the bench's to measure).
    assert first.text is not None and first.text.startswith("⏳ Health: ")
    final = await chat.fake.wait_for_message(
        ALICE_PRIVATE.id,
        lambda m: m.message_id == first.message_id and (m.text or "").startswith("Health:"),
        token=OPSBOT_TOKEN,
        timeout=60,
    )
    text = final.text
    assert text is not None
    lines = text.splitlines()
    assert lines[0].startswith(f"Health: {TARGETS} targets, 24 failing, 6 warning · ")
    assert len(text) < 4096
    rows = lines[1:]
    named = rows[:NAMED_UNHEALTHY]
    # Worst first: the 24 failing by name, then the slow ones; the first 20 named.
    worst = [("❌", name(i)) for i in sorted(FAILING)] + [("⚠️", name(i)) for i in sorted(SLOW)]
    assert [tuple(r.split()[:2]) for r in named] == worst[:NAMED_UNHEALTHY]
    assert "http /t/7: HTTP 500" in named[0]  # why, as a person reads it
    assert rows[NAMED_UNHEALTHY:] == ["… 10 more not healthy", "✅ 970 healthy"]
    assert all(len(r) <= PHONE_CHARS for r in rows)  # a phone's width, unwrapped
    # One message: the progress, edited in place into the answer.
    later = [m for m in chat.bot_messages(ALICE_PRIVATE) if m.message_id > sent["message_id"]]
    assert [m.message_id for m in later] == [first.message_id]
