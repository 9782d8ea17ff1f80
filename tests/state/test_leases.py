"""The leader lease on a real redis-server, and the store reached through a real Sentinel.

- Of three replicas' leases, never two hold at once; a holder that stops hands over at once.
- Fencing: a holder whose Redis stops answering (SIGSTOP) stops counting itself leader while
  Redis still reserves the lease for it, so nobody can have taken it yet.
- ``redis+sentinel://`` and ``store.sentinels`` configs open a store on the master that a
  real ``redis-server --sentinel`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from opsbot.config import load_config
from opsbot.errors import ConfigError
from opsbot.state.leases import Lease
from opsbot.state.store.factory import open_store, parse_sentinel_url
from opsbot.state.store.redis import RedisStore
from tests.lab.ports import free_port, start_process, stop_process, wait_until
from tests.lab.redis import RedisServer, pings

_names = itertools.count()


@contextlib.asynccontextmanager
async def leases(url: str, count: int, ttl: float) -> AsyncIterator[list[Lease]]:
    name = f"lease-test-{os.getpid()}-{next(_names)}"
    stores = [RedisStore(url, "leases") for _ in range(count)]
    made = [Lease(store, name, f"replica-{i}", ttl) for i, store in enumerate(stores)]
    try:
        yield made
    finally:
        for lease in made:
            await lease.stop()
        for store in stores:
            await store.close()


async def test_one_holder_at_a_time_and_a_clean_handover(redis_server: RedisServer) -> None:
    async with leases(redis_server.url, 3, ttl=2.0) as group:
        for lease in group:
            lease.start()
        holders: list[int] = []
        for _ in range(60):  # 3 s, sampled every 50 ms
            holders.append(sum(lease.held for lease in group))
            await asyncio.sleep(0.05)
        assert max(holders) == 1 and holders[-1] == 1
        leader = next(lease for lease in group if lease.held)
        await leader.stop()
        started = time.monotonic()
        while not any(lease.held for lease in group):
            await asyncio.sleep(0.02)
        assert time.monotonic() - started < 1.5  # released, not left to expire
        assert sum(lease.held for lease in group) == 1


@contextlib.contextmanager
def own_redis(tmp_path: Path, *extra: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port()
    log = tmp_path / f"redis-{port}.log"
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), *extra]  # fmt: skip
    proc = start_process(argv, log)
    try:
        wait_until(lambda: pings(port), what="redis-server", log=log, proc=proc)
        yield proc, port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        stop_process(proc)


async def test_a_holder_cut_off_from_redis_stops_leading_before_its_lease_expires(
    tmp_path: Path,
) -> None:
    with own_redis(tmp_path) as (proc, port):
        url = f"redis://127.0.0.1:{port}/0"
        async with leases(url, 1, ttl=4.0) as (lease,):
            lease.start()
            while not lease.held:
                await asyncio.sleep(0.02)
            os.kill(proc.pid, signal.SIGSTOP)  # Redis hangs: renewals time out
            frozen = time.monotonic()
            while lease.held:
                await asyncio.sleep(0.01)
            stepped_down = time.monotonic() - frozen
            os.kill(proc.pid, signal.SIGCONT)
            async with aioredis.from_url(url) as client:
                remaining = await client.pttl(f"leases:lock:{lease.name}")
        assert stepped_down < 4.0
        assert remaining > 0  # Redis still reserved it: nobody else could have led yet


def test_sentinel_urls_parse_and_bad_ones_are_refused() -> None:
    target = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26379,[::1]:26380/ops/2")
    assert target.sentinels == [("10.0.0.1", 26379), ("::1", 26380)]
    assert (target.service, target.db, target.password) == ("ops", 2, "s3cret")
    for bad in ("redis+sentinel://host/ops", "redis+sentinel://h:1", "redis+sentinel://h:1/a/b"):
        with pytest.raises(ConfigError):
            parse_sentinel_url(bad)


async def test_the_store_is_found_through_a_real_sentinel(tmp_path: Path) -> None:
    with own_redis(tmp_path) as (_, master), contextlib.ExitStack() as stack:
        port = free_port()
        conf = tmp_path / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
            f"sentinel monitor opsmaster 127.0.0.1 {master} 1\n"
        )
        log = tmp_path / "sentinel.log"
        proc = start_process(["redis-server", str(conf), "--sentinel"], log)
        stack.callback(stop_process, proc)
        wait_until(lambda: pings(port), what="redis-sentinel", log=log, proc=proc)
        for index, store_config in enumerate(
            (
                f"  redis_url: redis+sentinel://127.0.0.1:{port}/opsmaster\n",
                f"  sentinels: ['127.0.0.1:{port}']\n  sentinel_service: opsmaster\n",
            )
        ):
            path = tmp_path / f"opsbot-{index}.yaml"
            path.write_text(f"data_dir: {tmp_path}\nstore:\n  backend: redis\n" + store_config)
            store = open_store(load_config(path))
            try:
                assert await store.create("probe", f"k{index}", {"via": "sentinel"})
                assert (await store.get("probe", f"k{index}")).value == {"via": "sentinel"}
            finally:
                await store.close()
        async with aioredis.from_url(f"redis://127.0.0.1:{master}/0") as client:
            assert await client.exists("opsbot:doc:probe:k0", "opsbot:doc:probe:k1") == 2
