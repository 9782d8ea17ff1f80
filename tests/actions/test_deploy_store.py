"""The deploy's records on both stores (SQLite and Redis): the history, newest first and kept
to its cap; the change freeze, seen until it ends and gone after /unfreeze."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from opsbot.actions.deploy import gates, history
from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.lab.redis import RedisServer


@pytest_asyncio.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "state.sqlite3")
    else:
        opened = RedisStore(redis_server.url, prefix=f"deploy-test-{uuid.uuid4().hex[:8]}")
    try:
        yield opened
    finally:
        await opened.close()


async def test_history_is_newest_first_and_capped(store: Store) -> None:
    for n in range(history.KEEP + 5):
        await history.record(store, "quiz", {"at": n, "who": "oscar", "from": f"1.{n}",
                                             "to": f"1.{n + 1}", "ok": n % 2 == 0})  # fmt: skip
    await history.record(store, "other", {"at": 0, "who": "bob", "from": "a", "to": "b"})
    newest = await history.recent(store, "quiz", 3)
    assert [e["to"] for e in newest] == ["1.105", "1.104", "1.103"]
    assert len(await history.recent(store, "quiz", 1000)) == history.KEEP
    assert [e["who"] for e in await history.recent(store, "other")] == ["bob"]
    shown = history.render("quiz", newest)
    assert shown.block.splitlines()[0].endswith("oscar 1.104 → 1.105 ✓")


async def test_a_freeze_holds_until_it_ends_or_is_lifted(store: Store) -> None:
    assert await gates.current(store) is None
    made = await gates.freeze(store, "alice", "release day", 3600)
    seen = await gates.current(store)
    assert seen == made and seen is not None and "change freeze by alice" in seen.said()
    assert await gates.current(store, now=time.time() + 3601) is None  # over by then
    assert await gates.unfreeze(store) == made
    assert await gates.current(store) is None and await gates.unfreeze(store) is None
    forever = await gates.freeze(store, "bob", "audit week", None)
    assert forever.until is None and "until /unfreeze" in forever.said()
    assert await gates.current(store, now=time.time() + 10 * 86400) == forever
