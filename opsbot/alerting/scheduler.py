"""When the monitor's rounds run: one task for every target, spread out and bounded.

- Each target keeps a stable phase inside its interval (a hash of its name), so a thousand
  targets at 30 s make about 33 rounds a second, never a thousand at one instant. Rounds are
  due at wall-clock slots (``k * interval + phase``), the same in every replica: with replicas
  sharing the targets (``owns``), the one that owns a target when a slot is due runs it, so a
  share that moves runs each slot once, neither twice nor early.
- Checks run through slots: ``CHECKS_IN_FLIGHT`` at once overall and a few per endpoint (an SSH
  endpoint's own ``max_concurrency``); a check's timeout starts once it has its slot.
- A round is never dropped silently. One due while the target's last round still runs waits
  and starts right after it (counted in ``monitor_rounds_late``); one due while another already
  waits is skipped, counted in ``monitor_rounds_skipped`` and logged.
- ``monitor_round_lag_seconds`` observes how late each round's first check started.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from opsbot.alerting.monitor import Monitor
from opsbot.config import DockerEndpoint, Settings, SSHEndpoint
from opsbot.metrics import Metrics
from opsbot.reach.checks import CHECKS_IN_FLIGHT, Gate
from opsbot.state.store import STORE_UNREACHABLE

log = logging.getLogger(__name__)

PER_ENDPOINT = 16  # checks at once against one HTTP origin, TCP address or local endpoint
PER_DOCKER = 4  # the Docker SDK blocks a worker thread per call


def phase(name: str, interval: float) -> float:
    """A target's stable offset inside its interval, the same in every process."""
    return zlib.crc32(name.encode()) / 2**32 * interval


@dataclass(slots=True)
class _Target:
    interval: float
    running: asyncio.Task[None] | None = None
    waiting: float | None = None  # the due time of a round waiting behind the running one


class MonitorScheduler:
    """Runs ``monitor``'s rounds until stopped: ``start()``/``stop()``, or ``await run()``."""

    def __init__(
        self,
        monitor: Monitor,
        settings: Settings,
        metrics: Metrics | None = None,
        *,
        concurrency: int = CHECKS_IN_FLIGHT,
        current: Callable[[], Awaitable[Monitor | None]] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """``current``, when given, names the monitor each round runs on, or None where this
        replica does not lead (then the round is not run here: the leader runs it). ``owns``,
        when given, says whether this replica runs a target's round due now (the targets are
        shared between replicas: ``state.members``); other targets' rounds are left alone."""
        self._current = current
        self._owns = owns
        self._monitor = monitor
        self._settings = settings
        self._metrics = metrics or Metrics()
        self._slots = asyncio.Semaphore(concurrency)
        self._endpoints: dict[str, asyncio.Semaphore] = {}
        self._targets = {name: _Target(interval) for name, interval in monitor.schedule()}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Run in the background of the running event loop."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="monitor-scheduler")

    async def stop(self) -> None:
        """Stop scheduling and cancel the rounds in flight. Safe to call twice."""
        task, self._task = self._task, None
        tasks = [t.running for t in self._targets.values() if t.running is not None]
        if task is not None:
            tasks.append(task)
        for pending in tasks:
            pending.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def run(self) -> None:
        """Start every round at its due time, forever (cancel to stop)."""
        loop = asyncio.get_running_loop()
        queue = [(_first_slot(name, t.interval, loop), name) for name, t in self._targets.items()]
        heapq.heapify(queue)
        try:
            while queue:
                due, name = queue[0]
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                heapq.heapreplace(queue, (due + self._targets[name].interval, name))
                self._launch(name, due)
        finally:
            rounds = [t.running for t in self._targets.values() if t.running is not None]
            for running in rounds:
                running.cancel()
            await asyncio.gather(*rounds, return_exceptions=True)

    def _launch(self, name: str, due: float) -> None:
        if self._owns is not None and not self._owns(name):
            return  # another replica's share
        target = self._targets[name]
        if target.running is None:
            target.running = asyncio.create_task(self._round(name, due), name=f"monitor-{name}")
        elif target.waiting is None:
            target.waiting = due
            self._metrics.monitor_rounds_late_total.inc()
        else:
            self._metrics.monitor_rounds_skipped_total.inc()
            log.warning("monitor: round of %s skipped, two rounds behind", name)

    async def _round(self, name: str, due: float) -> None:
        try:
            monitor = self._monitor if self._current is None else await self._current()
            if monitor is not None:
                await monitor.round(name, gate=self._gate(due))
        except asyncio.CancelledError:
            raise
        except STORE_UNREACHABLE as exc:  # an outage, not a bug: the next slot runs it
            log.warning("monitor round for %s: the store is unreachable (%s)", name, exc)
        except Exception:
            log.exception("monitor round for %s failed", name)
        target = self._targets[name]
        target.running = None
        if target.waiting is not None:
            late, target.waiting = target.waiting, None
            target.running = asyncio.create_task(self._round(name, late), name=f"monitor-{name}")

    def _gate(self, due: float) -> Gate:
        """Slots for one round's checks; the first to get one tells the round's lag."""
        loop = asyncio.get_running_loop()
        first = [True]
        in_flight = self._metrics.monitor_checks_in_flight

        @contextlib.asynccontextmanager
        async def slot(key: str) -> AsyncIterator[None]:
            async with self._endpoint(key), self._slots:
                if first[0]:
                    first[0] = False
                    self._metrics.monitor_round_lag_seconds.observe(max(0.0, loop.time() - due))
                in_flight.inc()
                try:
                    yield
                finally:
                    in_flight.dec()

        return slot

    def _endpoint(self, key: str) -> asyncio.Semaphore:
        semaphore = self._endpoints.get(key)
        if semaphore is None:
            match self._settings.all_endpoints.get(key):
                case SSHEndpoint() as ssh:
                    size = ssh.max_concurrency
                case DockerEndpoint():
                    size = PER_DOCKER
                case _:
                    size = PER_ENDPOINT
            semaphore = self._endpoints[key] = asyncio.Semaphore(size)
        return semaphore


def _first_slot(name: str, interval: float, loop: asyncio.AbstractEventLoop) -> float:
    """The loop time of the target's next wall-clock slot (now or later)."""
    now, wall = loop.time(), time.time()
    offset = phase(name, interval)
    slot = math.ceil((wall - offset) / interval) * interval + offset
    return now + (slot - wall)


async def run_forever(monitor: Monitor, stop: asyncio.Event) -> None:
    """Rounds for every scheduled target at its interval until ``stop`` is set."""
    scheduler = MonitorScheduler(monitor, monitor.settings)
    scheduler.start()
    try:
        await stop.wait()
    finally:
        await scheduler.stop()
