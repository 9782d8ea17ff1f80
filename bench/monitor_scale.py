"""Benchmark: `opsbot run` monitoring thousands of healthy targets on 2 cores.

Each scenario N@I runs opsbot (a child process, against the fake Bot API) with N targets
checked every I seconds, mixed: 40 % HTTP (on 4 local aiohttp servers), 20 % TCP (the same
servers' ports), 30 % SSH status commands (`true`) spread over H SSH hosts (real sshd on
loopback, 16 ports per sshd) and 10 % container status (containers on one real dockerd).
Every target is healthy, so every alert is a false one.

After one interval of warm-up (SSH handshakes, first rounds), it measures over --duration
seconds: CPU (cores) and peak RSS of the opsbot process from /proc, round lag from opsbot's
/metrics (monitor_round_lag_seconds), late and skipped rounds, and the alert messages in the
chats. The bench's own probes of /metrics (every 5 s) ask for the monitor's series alone
(``name[]``); a full scrape, every target's SLI series included, is read once a minute, as a
Prometheus on its default 1 min interval would. Targets: 1,000@30 s ≤ 0.2 core, RSS ≤ 150 MB,
0 false alerts; 5,000@60 s ≤ 1 core, lag ≤ 5 s, 0 false alerts.
Appends a row per scenario to bench/RESULTS.md.

    python bench/monitor_scale.py                      # 1000@30 and 5000@60, 2 minutes each
    python bench/monitor_scale.py --duration 600       # the full 10 minutes
    python bench/monitor_scale.py --scenarios 1000@30 --hosts 100
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
import time
import urllib.request
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import (
    INCIDENTS,
    OPS,
    TOKEN,
    WEB_TOKEN,
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    start_fake,
    start_sshds,
    wait_for_startup,
)
from tests.lab.dockerd import DockerLab, start_dockerd
from tests.lab.ports import free_port

HTTP_SERVERS = 4
HEADER = (
    "| date | targets @ interval | window | CPU (cores) | RSS peak | rounds (expected) "
    "| lag p50 / p99 / max bucket | late / skipped | checks in flight (max seen) "
    "| false alerts | machine |"
)


@dataclass(frozen=True)
class Lab:
    """What the targets point at."""

    ssh: list[dict[str, Any]]  # one SSH endpoint config per host
    docker_url: str
    containers: list[str]


@dataclass
class Figures:
    targets: int
    interval: float
    window: float
    cores: float
    rss_peak_mb: float
    rounds: int
    expected: int
    lag: dict[float, float] = field(default_factory=dict)  # bucket upper bound → count
    late: float = 0
    skipped: float = 0
    false_alerts: int = 0
    in_flight_max: float = 0

    def quantile(self, q: float) -> float:
        """The upper bound of the lag bucket holding quantile ``q`` of the window's rounds."""
        total = self.lag.get(float("inf"), 0)
        for bound, count in sorted(self.lag.items()):
            if total and count >= q * total:
                return bound
        return float("nan")

    def row(self) -> str:
        def shown(bound: float) -> str:
            return "> 60 s" if bound == float("inf") else f"≤ {bound:g} s"

        return (
            f"| {time.strftime('%Y-%m-%d %H:%M')} | {self.targets} @ {self.interval:g} s "
            f"| {self.window:.0f} s | {self.cores:.3f} | {self.rss_peak_mb:.0f} MB "
            f"| {self.rounds} ({self.expected}) | {shown(self.quantile(0.5))} / "
            f"{shown(self.quantile(0.99))} / {shown(self.quantile(1.0))} "
            f"| {self.late:.0f} / {self.skipped:.0f} | {self.in_flight_max:.0f} "
            f"| {self.false_alerts} | {machine()} |"
        )


# --------------------------------------------------------------------------- what is watched


class Watched:
    """HTTP servers the HTTP and TCP targets point at (always 200), noting when each target
    was checked (``GET /NAME``)."""

    def __init__(self) -> None:
        self.ports: list[int] = []
        self.checks: dict[str, list[float]] = defaultdict(list)

    async def ok(self, request: web.Request) -> web.Response:
        self.checks[request.match_info["name"]].append(time.monotonic())
        return web.Response(text="ok")


@contextlib.asynccontextmanager
async def http_servers(count: int) -> AsyncIterator[Watched]:
    services = Watched()
    runners = []
    try:
        for _ in range(count):
            app = web.Application()
            app.router.add_get("/{name}", services.ok)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            services.ports.append(int(runner.addresses[0][1]))
        yield services
    finally:
        for runner in runners:
            await runner.cleanup()


MIX = ("http",) * 4 + ("tcp",) * 2 + ("ssh",) * 3 + ("docker",)


def targets(
    count: int, lab: Lab, http_ports: list[int], kinds: tuple[str, ...] = MIX
) -> dict[str, Any]:
    """``count`` targets: 40 % HTTP, 20 % TCP, 30 % SSH status, 10 % container status."""
    mix = [kind for kind in MIX if kind in kinds]
    out: dict[str, Any] = {}
    for i in range(count):
        name = f"t{i:05d}"
        port = http_ports[i % len(http_ports)]
        match mix[i % len(mix)]:
            case "http":
                check = {"type": "http", "url": f"http://127.0.0.1:{port}/{name}"}
                out[name] = {"kind": "command", "checks": [check]}
            case "tcp":
                check = {"type": "tcp", "host": "127.0.0.1", "port": port}
                out[name] = {"kind": "command", "checks": [check]}
            case "ssh":
                out[name] = {
                    "kind": "command", "endpoint": f"h{i % len(lab.ssh):03d}",
                    "actions": {"status": ["true"]},
                }  # fmt: skip
            case _:
                container = lab.containers[i % len(lab.containers)]
                out[name] = {"kind": "container", "endpoint": "docker", "container": container}
    return out


#: The monitor's series the bench reads (a probe asks for these alone).
MONITOR_SERIES = (
    "opsbot_monitor_round_lag_seconds_bucket", "opsbot_monitor_rounds_late_total",
    "opsbot_monitor_rounds_skipped_total", "opsbot_monitor_checks_in_flight",
)  # fmt: skip


def metrics_text(port: int, names: tuple[str, ...] = ()) -> str:
    """opsbot's /metrics (``names``: those series only)."""
    query = "&".join(f"name[]={name}" for name in names)
    request = urllib.request.Request(  # /metrics is closed by default: the web token opens it
        f"http://127.0.0.1:{port}/metrics?{query}",
        headers={"Authorization": f"Bearer {WEB_TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.read().decode()


def scrape(port: int) -> dict[str, float]:
    """opsbot's /metrics as {sample name with labels: value}, monitor samples only."""
    text = metrics_text(port, MONITOR_SERIES)
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if "monitor" in sample.name:
                key = sample.name + "".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[key] = float(sample.value)
    return out


def lag_buckets(before: dict[str, float], after: dict[str, float]) -> dict[float, float]:
    prefix = "opsbot_monitor_round_lag_seconds_bucketle="
    return {
        float(key.removeprefix(prefix)): value - before.get(key, 0.0)
        for key, value in after.items()
        if key.startswith(prefix)
    }


# --------------------------------------------------------------------------- one scenario


async def measure(
    lab: Lab,
    count: int,
    interval: float,
    duration: float,
    folder: Path,
    kinds: tuple[str, ...] = MIX,
) -> Figures:
    """Run opsbot on ``count`` targets at ``interval``; figures over ``duration`` seconds."""
    fake = start_fake()
    try:
        async with http_servers(HTTP_SERVERS) as served:
            web_port = free_port()
            config = base_config(
                fake, folder / "data",
                alerts={"monitor": {"enabled": True, "interval": interval}},
                web={"enabled": True, "port": web_port, "token": WEB_TOKEN},
                endpoints={
                    "docker": {"type": "docker", "url": lab.docker_url},
                    **{f"h{i:03d}": ssh for i, ssh in enumerate(lab.ssh)},
                },
                targets=targets(count, lab, served.ports, kinds),
            )  # fmt: skip
            with OpsbotProcess(config, folder) as opsbot:
                await asyncio.to_thread(wait_for_startup, fake, opsbot)
                await asyncio.sleep(interval + min(5.0, interval / 2))  # every target once
                opsbot.alive()
                before = await asyncio.to_thread(scrape, web_port)
                cpu0, t0 = opsbot.cpu_seconds(), time.monotonic()
                rss_peak, in_flight, tick = opsbot.rss_mb(), 0.0, 0
                while time.monotonic() - t0 < duration:
                    await asyncio.sleep(min(1.0, duration))
                    opsbot.alive()
                    rss_peak = max(rss_peak, opsbot.rss_mb())
                    tick += 1
                    if tick % 5 == 0:  # checks in flight, now and then (scrapes cost CPU)
                        now = await asyncio.to_thread(scrape, web_port)
                        in_flight = max(in_flight, now["opsbot_monitor_checks_in_flight"])
                    if tick % 60 == 30:  # Prometheus, scraping everything once a minute
                        await asyncio.to_thread(metrics_text, web_port)
                cpu1, t1 = opsbot.cpu_seconds(), time.monotonic()
                after = await asyncio.to_thread(scrape, web_port)
        lag = lag_buckets(before, after)
        alerts = [m for chat in (OPS, INCIDENTS) for m in fake.bot_messages(chat.id, TOKEN)]
        for message in alerts[:5]:
            print("false alert:", message.text[:200])
        return Figures(
            targets=count, interval=interval, window=t1 - t0,
            cores=(cpu1 - cpu0) / (t1 - t0), rss_peak_mb=rss_peak,
            rounds=int(lag.get(float("inf"), 0)), expected=int(count * (t1 - t0) / interval),
            lag=lag, late=after.get("opsbot_monitor_rounds_late_total", 0.0),
            skipped=after.get("opsbot_monitor_rounds_skipped_total", 0.0),
            false_alerts=len(alerts), in_flight_max=in_flight,
        )  # fmt: skip
    finally:
        fake.stop()


# --------------------------------------------------------------------------- the lab


@contextlib.contextmanager
def sleeping_containers(docker_lab: DockerLab, count: int) -> Iterator[list[str]]:
    names = [f"bench-c{i:02d}-{time.monotonic_ns() % 100000}" for i in range(count)]
    with contextlib.closing(docker_lab.client()) as client:
        for name in names:
            client.containers.run(
                docker_lab.image_v1, ["sleep", "1000000"], name=name, detach=True,
                network_mode="none", init=True,
            )  # fmt: skip
        try:
            yield names
        finally:
            for name in names:
                with contextlib.suppress(Exception):
                    client.containers.get(name).remove(force=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenarios", default="1000@30,5000@60", help="N@seconds, ...")
    parser.add_argument("--duration", type=float, default=120.0, help="window per scenario")
    parser.add_argument("--hosts", type=int, default=100, help="SSH hosts (sshd ports)")
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--kinds", default="http,tcp,ssh,docker", help="a subset of the mix")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    scenarios = [(int(n), float(i)) for n, i in (s.split("@") for s in args.scenarios.split(","))]
    kinds = tuple(args.kinds.split(","))
    with (
        tempfile.TemporaryDirectory(prefix="opsbot-scale-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        root = Path(tmp)
        hosts = stack.enter_context(start_sshds(root / "ssh", args.hosts))
        docker_lab = stack.enter_context(start_dockerd(root / "docker"))
        names = stack.enter_context(sleeping_containers(docker_lab, args.containers))
        lab = Lab([hosts.endpoint(p) for p in hosts.ports], docker_lab.base_url, names)
        for count, interval in scenarios:
            figures = asyncio.run(
                measure(lab, count, interval, args.duration, root / f"run-{count}", kinds)
            )
            row = figures.row()
            print(HEADER)
            print(row)
            if not args.no_write:
                append_result("monitor_scale", HEADER, row)


if __name__ == "__main__":
    main()
