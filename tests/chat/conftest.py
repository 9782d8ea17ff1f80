"""Fixtures the outbox tests share: stores opened as several replicas, and their bots."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from telegram import Bot

from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import OPSBOT_TOKEN, OpenStore
from tests.fakebotapi import FakeBotAPI


@pytest_asyncio.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens a store over the same data each call (one per 'replica'), on both backends."""
    prefix = f"outbox-{uuid.uuid4().hex}"
    opened: list[Store] = []

    def factory() -> Store:
        if request.param == "sqlite":
            opened.append(SQLiteStore(tmp_path / "state.sqlite3"))
        else:
            opened.append(RedisStore(request.getfixturevalue("redis_server").url, prefix))
        return opened[-1]

    yield factory
    for store in opened:
        await store.close()


@pytest_asyncio.fixture
async def bots(fake: FakeBotAPI) -> AsyncIterator[list[Bot]]:
    """Two PTB clients of the fake (one per 'replica')."""
    async with (
        Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as one,
        Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as two,
    ):
        yield [one, two]
