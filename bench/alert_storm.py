"""Benchmark: an alert storm through the webhook and a real Alertmanager, beside a bare handler.

N alerts (default 50,000) over M minutes (default 5), all distinct: half posted one per
request to ``POST /alerts/webhook`` (a sender that honours 503 + Retry-After), half posted to
a real Prometheus Alertmanager (``tests/lab/alertmanager.py``, as Prometheus does, a group of
50 alerts at a time), which delivers them to ``/alerts/alertmanager``. opsbot (`opsbot run`,
a child process, on SQLite or with ``--store redis`` on a real redis-server) posts to the
fake Bot API with Telegram's limits on (20 calls a minute per group, edits counted; 30 a
second per bot). The anchor, in the same run: a bare aiohttp handler that reads each body and
answers 202, sent the same webhook bodies (the generic ones and the Alertmanager-shaped
groups) at the same time.

Reported: 429s answered by the fake, the most calls to one group in any 60 s, the alerts
/alerts lists as firing and the alerts in the store, opsbot's RSS idle → peak, its CPU seconds
and the anchor's (ratio), and the 503s senders were told to retry. Appends a row to
bench/RESULTS.md.

    python bench/alert_storm.py [--alerts 50000] [--minutes 5] [--store sqlite|redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import (
    ADMIN_ID,
    INCIDENTS,
    OPS,
    TOKEN,
    USERNAME,
    WEB_TOKEN,
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    wait_for_startup,
)
from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.fakebotapi import FakeBotAPI, User
from tests.lab.alertmanager import post_alerts, rfc3339, start_alertmanager
from tests.lab.ports import free_port, wait_until
from tests.lab.redis import start_redis

HEADER = (
    "| date | alerts / minutes (store) | 429s | most calls to a group in 60 s | listed by "
    "/alerts | in the store | RSS idle → peak | CPU opsbot / bare aiohttp | 503 + Retry-After "
    "| machine |"
)
GROUP = 50  # alerts of one Alertmanager group (one alertname), posted together
ADMIN = User(ADMIN_ID, "Alice", "alice")
_FIRING = re.compile(r"🚨 (\d+) firing")


@dataclass(frozen=True)
class Figures:
    alerts: int
    too_many: int
    group_max_60s: int
    listed: int
    stored: int
    rss_idle_mb: float
    rss_peak_mb: float
    cpu_s: float
    anchor_cpu_s: float
    anchor_rss_peak_mb: float
    busy_503: int  # what the bench's own senders were told to retry
    refused_busy: int  # every 503 opsbot answered for back-pressure (Alertmanager's too)


def anchor(port: int) -> None:
    """The anchor: an aiohttp handler that reads each body and answers 202."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, text='{"accepted": 1}')

    app = web.Application(client_max_size=10_000_000)
    app.router.add_post("/alerts/webhook", accept)
    app.router.add_post("/alerts/alertmanager", accept)
    app.router.add_get("/healthz", accept)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Peaks:
    """RSS peaks of some processes, sampled every 0.2 s on a thread."""

    def __init__(self, pids: list[int]) -> None:
        self.peak = dict.fromkeys(pids, 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], _rss_mb(pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_fake() -> FakeBotAPI:
    """The fake Bot API with Telegram's limits on: 20 calls a minute per group (edits too)."""
    fake = FakeBotAPI(group_per_minute=20, global_per_second=30, count_edits=True).start()
    fake.add_bot(TOKEN, USERNAME)
    fake.add_chat(OPS)
    fake.add_chat(INCIDENTS)
    return fake


def group_max(fake: FakeBotAPI, window: float = 60.0) -> int:
    """The most calls to one group chat in any ``window`` seconds."""
    times: dict[int, list[float]] = {}
    for call in fake.calls:
        chat = call.params.get("chat_id")
        with contextlib.suppress(TypeError, ValueError):
            if chat is not None and int(chat) < 0 and call.method != "getChat":
                times.setdefault(int(chat), []).append(call.at)
    most = 0
    for stamps in times.values():
        stamps.sort()
        start = 0
        for end, at in enumerate(stamps):
            while at - stamps[start] >= window:
                start += 1
            most = max(most, end - start + 1)
    return most


def _generic(i: int, run: str) -> bytes:
    return json.dumps({
        "target": f"svc{i % 50}", "severity": "critical" if i % 500 == 0 else "warning",
        "summary": f"{run}: disk full on volume {i}", "labels": {"storm": run},
    }).encode()  # fmt: skip


def _am_alerts(group: int, run: str) -> list[dict[str, Any]]:
    until = rfc3339(datetime.now(UTC) + timedelta(hours=1))
    return [
        {
            "labels": {"alertname": f"{run}{group}", "instance": f"host{n}", "job": "node",
                       "severity": "critical" if n == 0 and group % 10 == 0 else "warning"},
            "annotations": {"summary": f"{run}: host{n} of group {group} is out of inodes"},
            "startsAt": rfc3339(), "endsAt": until,
        }
        for n in range(GROUP)
    ]


def _am_webhook(alerts: list[dict[str, Any]]) -> bytes:
    """What Alertmanager would send the anchor for one group."""
    return json.dumps({
        "version": "4", "status": "firing", "receiver": "opsbot",
        "groupLabels": {"alertname": alerts[0]["labels"]["alertname"]},
        "alerts": [{**a, "status": "firing", "fingerprint": f"{hash(json.dumps(a)):x}"}
                   for a in alerts],
    }).encode()  # fmt: skip


async def storm(
    alerts: int, minutes: float, opsbot_url: str, anchor_url: str, am: Any, run: str
) -> int:
    """Send the storm evenly over ``minutes``; returns the 503s senders retried."""
    busy = 0
    headers = {"Authorization": f"Bearer {WEB_TOKEN}", "Content-Type": "application/json"}
    groups = alerts // 2 // GROUP
    generic = alerts - groups * GROUP
    seconds = max(minutes * 60, 1.0)
    steps = max(int(seconds / 0.5), 1)
    limit = asyncio.Semaphore(32)

    async def post(http: aiohttp.ClientSession, url: str, body: bytes) -> None:
        nonlocal busy
        async with limit:
            while True:
                async with http.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 202:
                        return
                    if response.status != 503:
                        raise RuntimeError(f"{url}: HTTP {response.status}")
                    busy += url.startswith(opsbot_url)
                    await asyncio.sleep(float(response.headers.get("Retry-After", "1")))

    started = time.monotonic()
    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        for step in range(steps):
            lo_g, hi_g = groups * step // steps, groups * (step + 1) // steps
            lo, hi = generic * step // steps, generic * (step + 1) // steps
            for group in range(lo_g, hi_g):
                batch = _am_alerts(group, run)
                tasks.append(asyncio.create_task(post_alerts(am, batch)))
                tasks.append(asyncio.create_task(
                    post(http, f"{anchor_url}/alerts/alertmanager", _am_webhook(batch))
                ))  # fmt: skip
            for i in range(lo, hi):
                body = _generic(i, run)
                for base in (opsbot_url, anchor_url):
                    tasks.append(asyncio.create_task(post(http, f"{base}/alerts/webhook", body)))
            due = started + (step + 1) * seconds / steps
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await asyncio.gather(*tasks)
    return busy


async def _count(store: Store) -> int:
    total = 0
    async for page in store.scan_pages("alerts"):
        total += len(page)
    return total


def count_stored(open_store: Any) -> int:
    async def count() -> int:
        store = open_store()
        try:
            return await _count(store)
        finally:
            await store.close()

    return asyncio.run(count())


def refused_busy(url: str) -> int:
    """opsbot's count of webhooks refused for back-pressure, from its /metrics."""
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {WEB_TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    found = re.search(r'^opsbot_webhook_rejected_total\{reason="busy"\} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def listed(fake: FakeBotAPI) -> int:
    """The firing alerts /alerts says there are, asked in the admin's private chat."""
    sent = fake.send_text(TOKEN, ADMIN.id, ADMIN, "/alerts")
    reply = fake.next_bot_message(ADMIN.id, sent["message_id"], TOKEN, timeout=60)
    found = _FIRING.search(reply.text or reply.caption or "")
    return int(found.group(1)) if found else 0


def measure(
    alerts: int,
    minutes: float,
    folder: Path,
    store: str = "sqlite",
    *,
    in_hand_bytes: int | None = None,
) -> Figures:
    """One storm; ``in_hand_bytes``: opsbot's ``web.max_in_hand_bytes`` (default 2 MB)."""
    with contextlib.ExitStack() as stack:
        backend: dict[str, str] = {"backend": "sqlite"}
        if store == "redis":
            redis = stack.enter_context(start_redis(folder / "redis"))
            backend = {"backend": "redis", "redis_url": redis.url}

            def open_store() -> Store:
                return RedisStore(redis.url)
        else:

            def open_store() -> Store:
                return SQLiteStore(folder / "data" / "opsbot.sqlite3")

        fake = start_fake()
        stack.callback(fake.stop)
        port, bare_port = free_port(), free_port()
        bare_log = folder / "anchor.log"
        with bare_log.open("wb") as out:
            bare = subprocess.Popen(
                [sys.executable, __file__, "--anchor", str(bare_port)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        stack.callback(bare.wait, 20)
        stack.callback(bare.terminate)
        bare_url = f"http://127.0.0.1:{bare_port}"
        wait_until(
            lambda: urllib.request.urlopen(f"{bare_url}/healthz").status == 202,
            what="anchor", log=bare_log, proc=bare,
        )  # fmt: skip
        config = base_config(
            fake, folder / "data", store=backend,
            alerts={"monitor": {"enabled": False}},
            web={"enabled": True, "port": port, "token": WEB_TOKEN,
                 **({"max_in_hand_bytes": in_hand_bytes} if in_hand_bytes else {})},
        )  # fmt: skip
        opsbot = stack.enter_context(OpsbotProcess(config, folder))
        wait_for_startup(fake, opsbot)
        url = f"http://127.0.0.1:{port}"
        am = stack.enter_context(
            start_alertmanager(folder / "am", f"{url}/alerts/alertmanager", WEB_TOKEN)
        )
        time.sleep(2)  # settled after start-up
        idle = opsbot.rss_mb()
        peaks = Peaks([opsbot.pid, bare.pid])
        cpu0, bare_cpu0 = opsbot.cpu_seconds(), _cpu_s(bare.pid)
        busy = asyncio.run(storm(alerts, minutes, url, bare_url, am, "storm"))
        deadline = time.monotonic() + 120 + alerts / 500
        stored = count_stored(open_store)
        while stored < alerts and time.monotonic() < deadline:  # Alertmanager's last groups
            opsbot.alive()
            time.sleep(1)
            stored = count_stored(open_store)
        shown = listed(fake)
        refused = refused_busy(url)
        opsbot.alive()
        peaks.stop()
        cpu, bare_cpu = opsbot.cpu_seconds() - cpu0, _cpu_s(bare.pid) - bare_cpu0
        figures = Figures(
            alerts, len(fake.too_many_requests), group_max(fake), shown, stored, idle,
            max(peaks.peak[opsbot.pid], idle), cpu, bare_cpu, peaks.peak[bare.pid], busy,
            refused,
        )  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=50_000)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--anchor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.anchor:
        anchor(args.anchor)
        return
    with tempfile.TemporaryDirectory(prefix="opsbot-storm-") as tmp:
        f = measure(args.alerts, args.minutes, Path(tmp), args.store)
    ratio = f.cpu_s / f.anchor_cpu_s if f.anchor_cpu_s else float("nan")
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {f.alerts:,} / {args.minutes:g} ({args.store}) "
        f"| {f.too_many} | {f.group_max_60s} | {f.listed:,} | {f.stored:,} "
        f"| {f.rss_idle_mb:.0f} → {f.rss_peak_mb:.0f} MB "
        f"| {f.cpu_s:.0f} s / {f.anchor_cpu_s:.1f} s ({ratio:.1f}×; bare peak "
        f"{f.anchor_rss_peak_mb:.0f} MB) | {f.refused_busy} ({f.busy_503} of the bench's) "
        f"| {machine()} |"
    )
    print(HEADER)
    print(row)
    if not args.no_write:
        append_result("alert_storm", HEADER, row)
    if f.stored != f.alerts or f.listed != f.alerts:
        raise SystemExit(f"lost alerts: {f.stored} stored, {f.listed} listed of {f.alerts}")


if __name__ == "__main__":
    main()
