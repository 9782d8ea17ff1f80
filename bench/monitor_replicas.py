"""Two replicas on a real Redis share the monitor's targets; one SIGKILLed hands its share over.

Every target is an HTTP check on the bench's own loopback servers, which note when each
target was checked. One run, three phases of --window seconds each:

1. replica A alone checks every target (the anchor: one process doing all the work);
2. replica B joins: once the share has settled (one interval), both run, and each target
   should still be checked once per interval (a check closer than half an interval to the
   one before is counted *twice*);
3. B is SIGKILLed: A takes B's share over; a target's check that comes later than one
   and a half intervals after the one before is a round *missed*; the handover is how long
   after the kill the last missed round fell due (B's share is A's by then).

Reported: checks in the shared phase (expected), twice, missed, the handover, CPU and peak RSS
of each replica per phase, alerts in the chats (there should be none). Objectives are off
(``--objectives`` turns them on), as in a bench of the monitor alone.

    python bench/monitor_replicas.py                          # 10,000 targets @ 60 s
    python bench/monitor_replicas.py --targets 1000 --interval 10 --window 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.monitor_scale import http_servers
from bench.scale_lab import (
    INCIDENTS,
    OPS,
    TOKEN,
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    start_fake,
    wait_for_startup,
)
from tests.lab.redis import start_redis

HEADER = (
    "| date | targets @ interval | window | A alone (core, MB) | A + B shared (cores, MB) "
    "| checks shared (expected) | twice | missed | missed rounds due until | A after kill "
    "| alerts | machine |"
)


@dataclass
class Usage:
    """One replica's CPU (cores) and peak RSS over a phase."""

    cores: float
    rss_mb: float

    def __str__(self) -> str:
        return f"{self.cores:.2f}, {self.rss_mb:.0f}"


async def phase(replicas: list[OpsbotProcess], seconds: float) -> list[Usage]:
    """Each replica's usage over ``seconds`` (RSS sampled every second)."""
    cpu = [r.cpu_seconds() for r in replicas]
    peak = [r.rss_mb() for r in replicas]
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await asyncio.sleep(1.0)
        for i, replica in enumerate(replicas):
            replica.alive()
            peak[i] = max(peak[i], replica.rss_mb())
    took = time.monotonic() - started
    return [
        Usage((r.cpu_seconds() - c) / took, p) for r, c, p in zip(replicas, cpu, peak, strict=True)
    ]


def twice(checks: list[float], start: float, end: float, interval: float) -> int:
    """Checks in [start, end) closer than half an interval to the one before."""
    inside = [t for t in checks if start <= t < end]
    return sum(1 for a, b in pairwise(inside) if b - a < interval / 2)


def missed(checks: list[float], start: float, end: float, interval: float) -> int:
    """Rounds not run in [start, end): gaps longer than one and a half intervals."""
    inside = [t for t in checks if start <= t < end]
    return sum(1 for a, b in pairwise(inside) if b - a > 1.5 * interval)


def handover(checks: dict[str, list[float]], killed: float, interval: float) -> float:
    """How long after the kill the last round that was not run fell due: the replica left
    takes the dead one's share over by then (0 when no round was missed)."""
    latest = killed
    for times in checks.values():
        before = [t for t in times if t < killed]
        after = [t for t in times if t >= killed]
        if before and after and after[0] - before[-1] > 1.5 * interval:
            latest = max(latest, before[-1] + interval)
    return latest - killed


def config_for(
    fake: Any, folder: Path, redis_url: str, ports: list[int], args: argparse.Namespace
) -> dict[str, Any]:
    targets = {}
    for i in range(args.targets):
        url = f"http://127.0.0.1:{ports[i % len(ports)]}/t{i:05d}"
        targets[f"t{i:05d}"] = {"kind": "command", "checks": [{"type": "http", "url": url}]}
    return base_config(
        fake, folder / "data",
        store={"backend": "redis", "redis_url": redis_url, "prefix": "bench"},
        alerts={"monitor": {"enabled": True, "interval": args.interval}},
        objectives={"enabled": args.objectives},
        targets=targets,
    )  # fmt: skip


async def measure(args: argparse.Namespace, root: Path) -> str:
    interval, window = args.interval, args.window
    fake = start_fake()
    try:
        with start_redis(root / "redis") as redis:
            async with http_servers(4) as watched:
                config = {
                    name: config_for(fake, root / name, redis.url, watched.ports, args)
                    for name in ("a", "b")
                }
                with contextlib.ExitStack() as stack:
                    a = stack.enter_context(OpsbotProcess(config["a"], root / "a"))
                    await asyncio.to_thread(wait_for_startup, fake, a, 120)
                    await asyncio.sleep(interval + args.settle / 2)  # every target checked once
                    (alone,) = await phase([a], window)
                    b = stack.enter_context(OpsbotProcess(config["b"], root / "b"))
                    await asyncio.sleep(interval + args.settle)  # B is up, its share taken
                    shared_from = time.monotonic()
                    shared = await phase([a, b], window)
                    shared_to = time.monotonic()
                    os.kill(b.pid, signal.SIGKILL)
                    killed = time.monotonic()
                    assert b.proc is not None
                    b.proc.wait()
                    (after,) = await phase([a], max(window, 2 * interval + args.settle / 2))
                    ended = time.monotonic()
                    b.proc = None  # already gone
        checks = watched.checks
        shared_checks = sum(
            1 for times in checks.values() for t in times if shared_from <= t < shared_to
        )
        expected = int(args.targets * (shared_to - shared_from) / interval)
        doubled = sum(twice(t, shared_from, ended, interval) for t in checks.values())
        lost = sum(missed(t, shared_from, ended, interval) for t in checks.values())
        unchecked = args.targets - len(checks)
        took = handover(checks, killed, interval)
        alerts = [m for chat in (OPS, INCIDENTS) for m in fake.bot_messages(chat.id, TOKEN)]
        for message in alerts[:5]:
            print("alert:", (message.text or "")[:200])
        return (
            f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.targets} @ {interval:g} s "
            f"| {window:.0f} s | {alone} | {shared[0].cores + shared[1].cores:.2f} "
            f"({shared[0].cores:.2f} + {shared[1].cores:.2f}), {shared[0].rss_mb:.0f} / "
            f"{shared[1].rss_mb:.0f} | {shared_checks} ({expected}) | {doubled} "
            f"| {lost + unchecked} | {took:.1f} s after the kill | {after} | {len(alerts)} "
            f"| {machine()} |"
        )
    finally:
        fake.stop()


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--interval", type=float, default=60.0)
    parser.add_argument("--window", type=float, default=120.0, help="seconds of each phase")
    parser.add_argument("--settle", type=float, default=10.0, help="B's start-up (A's: half)")
    parser.add_argument("--objectives", action="store_true", help="record SLIs as well")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    return parser.parse_args(argv)


def main() -> None:
    args = parse()
    with tempfile.TemporaryDirectory(prefix="opsbot-replicas-") as tmp:
        row = asyncio.run(measure(args, Path(tmp)))
    print(HEADER)
    print(row)
    if not args.no_write:
        append_result("monitor_replicas", HEADER, row)


if __name__ == "__main__":
    main()
