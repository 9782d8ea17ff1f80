"""Benchmark: what recording the objectives costs, and what it stores.

1. CPU per round: the real monitor (``Monitor.round``, real TCP checks to a server on
   loopback that accepts and closes, in a process of its own) over N targets, every target's
   round once per pass, with and without the objectives hooked in: the recorder (and its
   /metrics series), once per two passes (a minute at the default 30 s interval) the
   burn-rate tick over every target, and the flush into the store as often as opsbot makes
   it (``FLUSH_SECONDS``: every ten passes at 5 minutes).
   Passes alternate between the two, so the machine's load falls on both alike. Aim: the
   recording adds under 10 % CPU. Beside it, the recording's work timed on its own (the hook
   for four rounds of every target, two ticks, a flush), as a share of the monitor's round:
   the same cost without the two passes' scatter.
2. Bytes per target after 30 simulated days: one target's rounds every 30 s for 30 days,
   latency jittering over the buckets, an hour down every 50 hours and 1 % random failures
   (a worst case for the compression), recorded through the store and measured there:
   SQLite (the documents' stored values) and a real redis-server (``MEMORY USAGE`` of its
   keys). Aim: at most 100 KB.
3. The burn-rate windows at fleet size (``--fleet``, default 10,000 targets, 5 % of them
   troubled): seeding them from 3 days of day blocks (a replica's first tick), the memory
   they hold (tracemalloc), and a minute's tick over all of them (``spoiled`` per target,
   the rules for the troubled ones), each per target beside the monitor's own round.

    python bench/slo_cost.py [--targets 1000] [--passes 6] [--store sqlite|redis] [--no-write]

Appends a section to bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import RESULTS, machine
from opsbot.alerting.event import AlertEvent
from opsbot.alerting.monitor import Monitor
from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.objectives import burn as burn_rules
from opsbot.objectives import recording
from opsbot.objectives.alerts import BurnAlerts
from opsbot.objectives.recording import FLUSH_SECONDS, Recorder
from opsbot.objectives.series import DAY, Block, bucket
from opsbot.objectives.windows import Windows
from opsbot.reach.checks import CheckResult, TargetHealth
from opsbot.reach.targets import State
from opsbot.services import Services
from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.lab.ports import free_port
from tests.lab.redis import start_redis

INTERVAL = 30.0  # the monitor's default interval: a pass is one round of every target
TICK_EVERY = int(60 // INTERVAL)  # passes a minute: the burn-rate tick
FLUSH_EVERY = int(FLUSH_SECONDS // INTERVAL)  # passes between flushes


async def _ignore(events: Sequence[AlertEvent]) -> None:
    return None


class Engine:
    """Stands in for the alert engine: holds what fired until it resolves (dedup)."""

    def __init__(self) -> None:
        self.open: set[str] = set()

    async def ingest(self, events: Sequence[AlertEvent]) -> None:
        for event in events:
            if event.status == "firing":
                self.open.add(event.fingerprint)
            else:
                self.open.discard(event.fingerprint)

    async def firing(self) -> set[str]:
        return set(self.open)


ACCEPTOR = """
import socket, sys
server = socket.create_server(("127.0.0.1", int(sys.argv[1])), backlog=4096)
while True:
    conn, _ = server.accept()
    conn.close()
"""


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def settings(targets: int, port: int) -> Settings:
    check = [{"type": "tcp", "host": "127.0.0.1", "port": port, "timeout": 5}]
    return Settings(targets={f"t{i:04d}": {"kind": "command", "checks": check}
                             for i in range(targets)})  # fmt: skip


async def one_pass(monitor: Monitor, names: list[str]) -> float:
    """CPU seconds of this process for one round of every target."""
    started = time.process_time()
    await asyncio.gather(*(monitor.round(n) for n in names))
    return time.process_time() - started


async def recording_alone(recorder: Recorder, burn: BurnAlerts, names: list[str]) -> float:
    """CPU µs per round of the recording's own work, timed without the monitor around it:
    FLUSH_EVERY rounds of every target through the hook, their ticks and one flush.
    Far less noisy than the difference of two passes, whose single runs scatter by ±25 %."""
    health = TargetHealth("t", (CheckResult("tcp 127.0.0.1", State.OK, "open", 0.002),), 0.002)
    started = time.process_time()
    for index in range(FLUSH_EVERY):
        now = time.time()
        for name in names:
            recorder.round_done(name, health, now)
        if index % TICK_EVERY == TICK_EVERY - 1:
            await burn.tick()
    await recorder.flush()
    return (time.process_time() - started) / (FLUSH_EVERY * len(names)) * 1e6


async def cpu_per_round(targets: int, passes: int, store: Store) -> tuple[float, float, float]:
    """Mean CPU µs per round without and with the objectives (ticks and flushes included),
    and the median over five runs of the recording's work timed alone."""
    port = free_port()
    # the checks' peer: accepts and closes, in a process of its own (its CPU is not counted)
    acceptor = subprocess.Popen([sys.executable, "-c", ACCEPTOR, str(port)])
    deadline = time.monotonic() + 10
    while not _listening(port):
        if time.monotonic() > deadline or acceptor.poll() is not None:
            raise RuntimeError("the TCP acceptor did not start")
        time.sleep(0.05)
    config = settings(targets, port)
    services = Services.build(config)
    names = sorted(config.targets)
    recorder = Recorder(store, config, metrics=Metrics())  # as opsbot runs it: /metrics too
    engine = Engine()
    burn = BurnAlerts(store, config, engine.ingest, engine.firing, recorder)
    bare = Monitor(config, services, _ignore)
    hooked = Monitor(config, services, _ignore, on_round=recorder.round_done)
    without: list[float] = []
    with_: list[float] = []
    try:
        await one_pass(bare, names)  # warm up: connections, imports, first documents
        await one_pass(hooked, names)
        await burn.tick()  # seeds every target's windows from the store, once
        await recorder.flush()
        for index in range(passes):
            without.append(await one_pass(bare, names))
            started = time.process_time()
            await one_pass(hooked, names)
            if index % TICK_EVERY == TICK_EVERY - 1:
                await burn.tick()  # a minute: every target's burn-rate rules
            if index % FLUSH_EVERY == FLUSH_EVERY - 1:
                await recorder.flush()  # the counts into the store
            with_.append(time.process_time() - started)
        alone = statistics.median([await recording_alone(recorder, burn, names) for _ in range(5)])
    finally:
        await services.close()
        acceptor.terminate()
        acceptor.wait()
    per = 1e6 / targets
    print("passes without:", [round(x * per) for x in without], "µs per round")
    print("passes with:   ", [round(x * per) for x in with_], "µs per round")
    return statistics.fmean(without) * per, statistics.fmean(with_) * per, alone


def windows_at_scale(fleet: int, troubled_share: float = 0.05) -> dict[str, float]:
    """Seed, hold and tick ``fleet`` targets' burn-rate windows from 3 days of blocks (one
    round every 30 s; the troubled ones with a failed round an hour)."""
    config = Settings()
    rules = list(config.objectives.burn_rules)
    objective = config.objectives.default
    now = 20_003 * DAY + 7 * 3600
    clean, troubled = Block(), Block()
    for minute in range(1440):
        for block in (clean, troubled):
            block.add(minute, True, 0.08)
            block.add(minute, minute % 60 != 7 or block is clean, 0.12)
    first_day = int(now // DAY) - 3
    history = {d: clean for d in range(first_day, first_day + 4)}
    bad_history = {d: troubled for d in range(first_day, first_day + 4)}
    every = max(1, round(1 / troubled_share))
    names = [f"t{n:05d}" for n in range(fleet)]
    windows = Windows(burn_rules.longest(rules))
    limit = bucket(objective.latency)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.process_time()
    for n, name in enumerate(names):
        windows.seed(name, bad_history if n % every == 0 else history, now, limit)
    seeding = time.process_time() - started
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    started = time.process_time()
    for name in names:
        bad, _ = windows.spoiled(name, burn_rules.longest(rules), now)
        if bad:
            burn_rules.firing(rules, objective, lambda s, t=name: windows.counts(t, s, now))
    ticking = time.process_time() - started
    return {
        "seed_us": seeding / fleet * 1e6,
        "tick_us": ticking / fleet * 1e6,
        "held": windows.holding(),
        "bytes_per_held": held / max(1, windows.holding()),
        "bytes_total": held,
    }


async def bytes_after_30_days(store: Store, redis: Any | None, prefix: str) -> tuple[int, int]:
    """(bytes, documents) one target's 30 simulated days take in ``store``."""
    start = 20_000 * DAY
    now = [start]
    config = settings(1, 1)
    recorder = Recorder(store, config, clock=lambda: now[0])
    rng = random.Random(20)
    for half_minute in range(30 * 2880):
        at = start + half_minute * 30
        down = (half_minute // 120) % 50 == 0
        recorder.observe("t0000", not down and rng.random() > 0.01, rng.lognormvariate(-2, 1), at)
        if half_minute % 120 == 119:  # a flush a (simulated) hour
            now[0] = at
            await recorder.flush()
    await recorder.flush()
    keys = [recording.minutes_key("t0000", d) for d in range(20_000, 20_031)]
    docs = len(await store.get_many(recording.MINUTES_NS, keys)) + 1
    if redis is not None:
        total = 0
        async for key in redis.scan_iter(match=f"{prefix}:doc:slo-*"):
            total += int(await redis.memory_usage(key) or 0)
        return total, docs
    assert isinstance(store, SQLiteStore)
    rows = store._connect().execute(  # the stored JSON, as SQLite keeps it
        "SELECT SUM(LENGTH(namespace) + LENGTH(key) + LENGTH(value) + 16) FROM docs "
        "WHERE namespace LIKE 'slo-%'"
    ).fetchone()
    return int(rows[0] or 0), docs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=12)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--fleet", type=int, default=10_000, help="targets for the windows")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    fleet = windows_at_scale(args.fleet)
    with tempfile.TemporaryDirectory() as tmp, start_redis(Path(tmp) / "redis") as server:
        prefix = f"bench-{uuid.uuid4().hex[:8]}"
        flush_store: Store = (RedisStore(server.url, prefix) if args.store == "redis"
                              else SQLiteStore(Path(tmp) / "cpu.sqlite3"))  # fmt: skip
        bare, hooked, alone = await cpu_per_round(args.targets, args.passes, flush_store)
        await flush_store.close()
        sqlite = SQLiteStore(Path(tmp) / "bytes.sqlite3")
        sqlite_bytes, docs = await bytes_after_30_days(sqlite, None, "")
        await sqlite.close()
        measured = prefix + "-bytes"
        redis_store = RedisStore(server.url, measured)
        redis_bytes, _ = await bytes_after_30_days(redis_store, redis_store._redis, measured)
        await redis_store.close()
    extra = 100 * (hooked / bare - 1)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## slo_cost · {stamp} · {args.targets} targets, {args.store} store",
        "",
        f"{machine()}. `python bench/slo_cost.py --targets {args.targets} --passes "
        f"{args.passes} --store {args.store}`: means over {args.passes} passes, each a round "
        "of every target (real TCP checks on loopback, all passing), with and without the "
        "recorder and its metrics, the burn-rate tick every second pass and the flush every "
        f"{FLUSH_EVERY}th (every minute and every {FLUSH_SECONDS / 60:.0f} minutes at 30 s).",
        "",
        "| | value |",
        "|---|---|",
        f"| CPU per round, monitor alone | {bare:.0f} µs |",
        f"| CPU per round, monitor + objectives recording | {hooked:.0f} µs "
        f"({extra:+.1f} %; aim: under +10 %) |",
        f"| the recording's own work per round, timed alone (median of 5) | {alone:.1f} µs "
        f"({100 * alone / bare:+.1f} % of the monitor's round) |",
        f"| one target, 30 simulated days (30 s rounds, jitter, flaps), SQLite | "
        f"{sqlite_bytes / 1000:.1f} KB in {docs} documents (aim: ≤ 100 KB) |",
        f"| the same, Redis `MEMORY USAGE` | {redis_bytes / 1000:.1f} KB |",
        f"| burn-rate windows, {args.fleet:,} targets seeded from 3 days of blocks | "
        f"{fleet['seed_us']:.0f} µs per target ({fleet['seed_us'] / bare:.2f}× a monitor "
        "round), once per replica and target |",
        f"| their memory: {fleet['held']:.0f} troubled targets hold counts, the clean none | "
        f"{fleet['bytes_total'] / 1e6:.1f} MB, {fleet['bytes_per_held'] / 1000:.1f} KB per "
        "troubled target |",
        f"| a minute's tick over the {args.fleet:,} | {fleet['tick_us']:.1f} µs per target "
        f"({fleet['tick_us'] / bare * 100:.1f} % of one monitor round) |",
    ]
    print("\n".join(lines))
    if not args.no_write:
        text = RESULTS.read_text().rstrip("\n")
        RESULTS.write_text(text + "\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
