"""The store through a real Sentinel lab rides out a failover: every acknowledged write is on
the new master, and commands resume on their own.

- ``SENTINEL FAILOVER``: the old master keeps answering as a master for ~10 s after the
  promotion; writes acknowledged by the store are all found on the new master.
- SIGKILL of the master: commands in flight wait (redis-py #3874 would keep them on the dead
  address) and then land on the promoted replica; none fails.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import redis.asyncio as aioredis
from redis.asyncio.sentinel import MasterNotFoundError

from opsbot.config import load_config
from opsbot.preflight import run_check
from opsbot.state.store.sentinel import RETRY_FOR, SentinelStore
from tests.factories import OPSBOT_TOKEN
from tests.fakebotapi import FakeBotAPI
from tests.lab.sentinel import SentinelLab


async def master_port(store: SentinelStore) -> int | None:
    try:
        return (await store.master()).port
    except MasterNotFoundError:  # a killed master, not yet replaced
        return None


async def write_through(
    lab: SentinelLab, cause: Callable[[], object]
) -> tuple[int, list[int], float, SentinelStore]:
    """Append 0, 1, 2, ... one at a time while ``cause`` fails the master over; return how
    many were acknowledged, what the new master holds, and the longest pause."""
    lab.settle()
    store = SentinelStore(lab.sentinels, lab.service, f"failover-{uuid.uuid4().hex}")
    acked, longest = 0, 0.0
    stop = asyncio.Event()

    async def writer() -> None:
        nonlocal acked, longest
        while not stop.is_set():
            started = time.monotonic()
            await store.append("log", "k", {"n": acked})
            longest = max(longest, time.monotonic() - started)
            acked += 1

    task = asyncio.create_task(writer())
    while acked < 200:
        await asyncio.sleep(0.01)
    old = lab.master_port()
    await asyncio.to_thread(cause)
    while await master_port(store) in (old, None):  # the sentinels' promotion
        await asyncio.sleep(0.05)
    before = acked
    while acked < before + 200:  # resumed on the new master
        await asyncio.sleep(0.01)
    stop.set()
    await task
    new = lab.master_port()
    async with aioredis.from_url(f"redis://127.0.0.1:{new}/0", decode_responses=True) as client:
        raw = await client.lrange(f"{store.prefix}:log:log:k", 0, -1)
    held = sorted(json.loads(entry)["n"] for entry in raw)
    return acked, held, longest, store


async def test_sentinel_failover_loses_no_acknowledged_write(sentinel_lab: SentinelLab) -> None:
    acked, held, longest, store = await write_through(sentinel_lab, sentinel_lab.failover)
    try:
        assert held == list(range(acked))  # every acknowledged append, once, in order
        assert longest < RETRY_FOR
        assert (await store.master()).port == sentinel_lab.master_port()
    finally:
        await store.close()
    print(f"SENTINEL FAILOVER: {acked} writes, longest pause {longest:.2f} s")


async def test_a_killed_master_pauses_writes_and_none_fails(sentinel_lab: SentinelLab) -> None:
    killed: list[int] = []
    acked, held, longest, store = await write_through(
        sentinel_lab, lambda: killed.append(sentinel_lab.kill_master())
    )
    try:
        # Redis replicates asynchronously: a SIGKILL may take an acknowledged write that had
        # not reached the replica yet (the one in flight, at most); none is there twice.
        assert len(held) == len(set(held)) and set(held) <= set(range(acked))
        assert acked - len(held) <= 1
        assert longest < RETRY_FOR
    finally:
        await store.close()
        sentinel_lab.restart(killed[0])
    sentinel_lab.settle()
    print(f"SIGKILL: {acked} writes, longest pause {longest:.2f} s")


async def test_check_names_the_master_the_sentinels_agree_on(
    sentinel_lab: SentinelLab, fake: FakeBotAPI, tmp_path: Path
) -> None:
    master = sentinel_lab.settle()
    config = {
        "data_dir": str(tmp_path),
        "telegram": {"token": OPSBOT_TOKEN, "api_url": fake.url},
        "store": {"backend": "redis", "redis_url": sentinel_lab.url},
    }
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    out = io.StringIO()
    assert await run_check(load_config(path), out) == 0, out.getvalue()
    row = next(line for line in out.getvalue().splitlines() if line.startswith("store"))
    assert f"master opsmaster at 127.0.0.1:{master}" in row
    assert "3 of 3 sentinels answered" in row
