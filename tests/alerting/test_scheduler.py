"""The monitor's scheduler against a real HTTP server: spread rounds, slots, late rounds.

What a user would notice: checks arrive at the watched service spread over the interval (not
in one burst), opsbot's own queueing never turns into a "timed out" alert, a round that
overruns its interval runs late instead of vanishing, and /metrics says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from aiohttp import web

from opsbot.alerting.event import AlertEvent
from opsbot.alerting.monitor import Monitor
from opsbot.alerting.scheduler import MonitorScheduler, phase
from opsbot.metrics import Metrics
from opsbot.services import Services
from tests.factories import write_config


class Service:
    """A watched HTTP service that answers after ``delay`` and notes when each request came."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.arrivals: list[tuple[float, str]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.arrivals.append((time.monotonic(), request.path))
        await asyncio.sleep(self.delay)
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def service() -> AsyncIterator[Service]:
    svc = Service()
    app = web.Application()
    app.router.add_get("/{name}", svc.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    svc.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield svc
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def scheduled(
    tmp_path: Path, svc: Service, count: int, monitor: dict[str, Any], concurrency: int = 64
) -> AsyncIterator[tuple[list[AlertEvent], Metrics]]:
    """``count`` targets, each one HTTP check on ``svc``, run by a started scheduler."""
    targets = {
        f"t{i:03d}": {"kind": "command", "checks": [
            {"type": "http", "url": f"{svc.url}/t{i:03d}", "timeout": 1}]}
        for i in range(count)
    }  # fmt: skip
    settings = write_config(tmp_path / "opsbot.yaml", {
        "data_dir": str(tmp_path / "data"), "alerts": {"monitor": monitor}, "targets": targets,
    })  # fmt: skip
    services = Services.build(settings)
    ingested: list[AlertEvent] = []

    async def ingest(events: list[AlertEvent]) -> None:
        ingested.extend(events)

    scheduler = MonitorScheduler(
        Monitor(settings, services, ingest), settings, services.metrics, concurrency=concurrency
    )
    scheduler.start()
    try:
        yield ingested, services.metrics
    finally:
        await scheduler.stop()
        await services.close()


def sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(f"opsbot_{name}")
    assert value is not None, name
    return value


def test_each_target_keeps_a_stable_phase_inside_its_interval() -> None:
    phases = [phase(f"bot{i}", 30.0) for i in range(1000)]
    assert phases == [phase(f"bot{i}", 30.0) for i in range(1000)]
    assert all(0 <= p < 30 for p in phases)
    per_second = [sum(1 for p in phases if s <= p < s + 1) for s in range(30)]
    assert max(per_second) < 3 * 1000 / 30  # spread out, no second takes a crowd


async def test_rounds_are_spread_over_the_interval_not_fired_at_once(tmp_path: Path) -> None:
    async with service() as svc, scheduled(tmp_path, svc, 60, {"interval": 2}) as (_, metrics):
        started = time.monotonic()
        await asyncio.sleep(2.2)
        first_round = [at - started for at, _ in svc.arrivals if at - started < 2.0]
        assert len({path for _, path in svc.arrivals}) == 60  # every target checked
        assert len(first_round) >= 55
        halves = [sum(1 for t in first_round if t < 1.0), sum(1 for t in first_round if t >= 1.0)]
        assert min(halves) >= 15, halves  # not one burst at the start
        assert sample(metrics, "monitor_round_lag_seconds_count") >= 55
        assert sample(metrics, "monitor_rounds_skipped_total") == 0
        assert sample(metrics, "monitor_checks_in_flight") >= 0


async def test_waiting_for_a_slot_never_counts_against_a_checks_timeout(tmp_path: Path) -> None:
    policy = {"interval": 1, "fail_after": 1, "recover_after": 1}
    async with service() as svc:
        svc.delay = 0.4  # healthy, but 12 checks a second through 2 slots queue for seconds
        async with scheduled(tmp_path, svc, 12, policy, concurrency=2) as (ingested, metrics):
            await asyncio.sleep(3.0)
            assert len(svc.arrivals) >= 12
            assert ingested == []  # no "timed out after 1 s" on a healthy service
            assert sample(metrics, "monitor_round_lag_seconds_count") >= 12
            assert sample(metrics, "monitor_round_lag_seconds_sum") > 3  # queueing shows as lag


async def test_a_round_that_overruns_its_interval_runs_late_and_is_counted(
    tmp_path: Path,
) -> None:
    async with service() as svc:
        svc.delay = 0.5  # each round takes 0.5 s; one is due every 0.2 s
        async with scheduled(tmp_path, svc, 1, {"interval": 0.2}) as (ingested, metrics):
            await asyncio.sleep(2.0)
            rounds = len(svc.arrivals)
            late = sample(metrics, "monitor_rounds_late_total")
            skipped = sample(metrics, "monitor_rounds_skipped_total")
        assert 3 <= rounds <= 5  # back to back, none lost in silence
        assert late >= 2
        assert skipped >= 1  # due twice over while one waited: counted (and logged)
        assert ingested == []
