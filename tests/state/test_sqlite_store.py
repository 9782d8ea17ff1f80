"""What only the SQLite store does: calls run inline on the loop while the connection is free,
on its thread while another process holds the file's write lock, and the WAL is checkpointed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from opsbot.state.store import Write
from opsbot.state.store.sqlite import CHECKPOINT_EVERY, SQLiteStore


async def test_a_write_waits_for_another_process_without_blocking_the_loop(
    tmp_path: Path,
) -> None:
    path = tmp_path / "opsbot.sqlite3"
    store = SQLiteStore(path)
    try:
        await store.put("ns", "a", {"n": 1})
        with closing(sqlite3.connect(path, isolation_level=None)) as other:  # the CLI, say
            other.execute("BEGIN IMMEDIATE")
            writing = asyncio.ensure_future(
                store.commit([Write("ns", "a", {"n": 2}), Write("ns", "b", {"n": 2})])
            )
            started = time.monotonic()
            await asyncio.sleep(0.3)
            assert time.monotonic() - started < 0.6  # the loop went on meanwhile
            assert not writing.done()
            other.execute("COMMIT")
            assert await asyncio.wait_for(writing, 5) is not None
        found = await store.get_many("ns", ["a", "b"])
        assert {k: v.value for k, v in found.items()} == {"a": {"n": 2}, "b": {"n": 2}}
        assert (await store.get("ns", "a")) is not None  # inline again
    finally:
        await store.close()


async def test_the_wal_is_checkpointed_so_it_stops_growing(tmp_path: Path) -> None:
    path = tmp_path / "opsbot.sqlite3"
    wal = path.with_name(path.name + "-wal")
    store = SQLiteStore(path)
    try:
        sizes = []
        for round_ in range(4):
            for i in range(CHECKPOINT_EVERY):
                await store.put("ns", f"{round_}-{i}", {"text": "x" * 200})
            await asyncio.sleep(0.1)  # the thread's checkpoint
            sizes.append(wal.stat().st_size)
        assert sizes[-1] <= 2 * sizes[0], sizes
        assert len(await store.scan("ns")) == 4 * CHECKPOINT_EVERY
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db:  # everything is in the file
        assert db.execute("SELECT count(*) FROM docs").fetchone()[0] == 4 * CHECKPOINT_EVERY
