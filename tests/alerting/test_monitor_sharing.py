"""Two replicas' monitors share the targets through the lab's real Redis.

What an operator would notice: with two replicas, every target is still checked once per
interval (the watched service sees no doubled checks), each replica checks its own share,
and when one replica dies (its liveness document left to expire, as a crash leaves it) or
stops cleanly, the other checks every target from then on, within one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from opsbot.alerting.event import AlertEvent
from opsbot.alerting.monitor import Monitor
from opsbot.alerting.scheduler import MonitorScheduler, phase
from opsbot.reach.checks import TargetHealth
from opsbot.services import Services
from opsbot.state.members import Members
from opsbot.state.store.redis import RedisStore
from tests.alerting.test_scheduler import service
from tests.factories import write_config
from tests.lab.redis import RedisServer

INTERVAL = 2.0
TTL = 1.6  # renew every 0.4 s, a newcomer counts after 0.8 s
TARGETS = 40


@dataclass
class Replica:
    name: str
    members: Members
    scheduler: MonitorScheduler
    rounds: list[tuple[str, float]] = field(default_factory=list)  # (target, ended at)


@contextlib.asynccontextmanager
async def two_replicas(
    tmp_path: Path, redis_url: str, url: str
) -> AsyncIterator[tuple[Replica, Replica]]:
    targets = {
        f"t{i:03d}": {"kind": "command", "checks": [{"type": "http", "url": f"{url}/t{i:03d}"}]}
        for i in range(TARGETS)
    }
    settings = write_config(tmp_path / "opsbot.yaml", {
        "data_dir": str(tmp_path / "data"), "alerts": {"monitor": {"interval": INTERVAL}},
        "targets": targets,
    })  # fmt: skip
    services = Services.build(settings)
    prefix = f"sharing-{uuid.uuid4().hex[:8]}"
    stores = [RedisStore(redis_url, prefix) for _ in range(2)]
    made = []
    for name, store in zip(("a", "b"), stores, strict=True):
        members = Members(store, "monitor", name, TTL)
        rounds: list[tuple[str, float]] = []

        async def ingest(events: list[AlertEvent]) -> None:
            raise AssertionError(f"a healthy target alerted: {events}")

        def hook(
            target: str, health: TargetHealth, at: float, rounds: list[tuple[str, float]] = rounds
        ) -> None:
            rounds.append((target, at))

        monitor = Monitor(settings, services, ingest, on_round=hook)
        scheduler = MonitorScheduler(monitor, settings, services.metrics, owns=members.owns)
        made.append(Replica(name, members, scheduler, rounds))
    for replica in made:
        replica.members.start()
        replica.scheduler.start()
    try:
        yield made[0], made[1]
    finally:
        for replica in made:
            await replica.scheduler.stop()
            await replica.members.stop()
        for store in stores:
            await store.close()
        await services.close()


async def until(check: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Poll ``check`` (every 50 ms) until true, or fail after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
    assert check(), what


def slot(target: str, at: float) -> int:
    """Which wall-clock slot of its interval a round that ended at ``at`` belonged to."""
    return math.floor((at - phase(target, INTERVAL)) / INTERVAL)


def in_window(replica: Replica, begin: float, end: float) -> set[str]:
    return {target for target, at in replica.rounds if begin <= at < end}


def doubled(*replicas: Replica) -> list[tuple[str, int]]:
    counts = Counter((t, slot(t, at)) for r in replicas for t, at in r.rounds)
    return [key for key, n in counts.items() if n > 1]


def both_active(a: Replica, b: Replica) -> bool:
    return a.members.active() == ("a", "b") == b.members.active()


async def test_two_replicas_split_the_targets_and_a_crash_hands_its_share_over(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with service() as svc, two_replicas(tmp_path, redis_server.url, svc.url) as (a, b):
        await until(lambda: both_active(a, b), "both replicas count each other")
        begin = time.time() + 0.1  # rounds due from here on run under the shared view
        await asyncio.sleep(2 * INTERVAL + 0.2)
        shared = [in_window(r, begin, time.time()) for r in (a, b)]
        assert shared[0] | shared[1] == {f"t{i:03d}" for i in range(TARGETS)}
        assert not shared[0] & shared[1]  # each target on one replica
        assert min(len(shared[0]), len(shared[1])) >= TARGETS // 5  # a split, not all on one

        await b.scheduler.stop()
        await b.members.stop(release=False)  # a crash: its document stays until it expires
        died = time.time()
        await until(lambda: a.members.active() == ("a",), "a counts b out", timeout=2 * TTL)
        taken = time.time()
        assert taken - died <= TTL + 0.5  # well within one interval
        await asyncio.sleep(INTERVAL + 0.2)
        assert in_window(a, taken, taken + INTERVAL + 0.2) == {f"t{i:03d}" for i in range(TARGETS)}
        assert doubled(a, b) == []  # no slot of any target ran twice, before or after


async def test_a_replica_that_stops_cleanly_hands_over_at_its_peers_next_read(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with service() as svc, two_replicas(tmp_path, redis_server.url, svc.url) as (a, b):
        await until(lambda: both_active(a, b), "both replicas count each other")
        await b.scheduler.stop()
        await b.members.stop()  # deletes its liveness document
        await until(lambda: a.members.active() == ("a",), "a counts b out", timeout=TTL / 2)
        taken = time.time()
        await asyncio.sleep(INTERVAL + 0.2)
        assert in_window(a, taken, taken + INTERVAL + 0.2) == {f"t{i:03d}" for i in range(TARGETS)}
        assert doubled(a, b) == []

