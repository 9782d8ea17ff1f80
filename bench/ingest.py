"""Benchmark: alert ingestion, one alert per POST, opsbot beside a bare aiohttp handler.

Posts N generic webhook alerts (`POST /alerts/webhook`, one alert each, all distinct) with C
requests in flight, first to a bare aiohttp handler that reads the body and answers 202 (the
anchor), then to `opsbot run` (a child process, web server on, alerts delivered to the
incident chat of the fake Bot API) on its SQLite store, or with `--store redis` on a real
redis-server the bench starts on loopback. Reports alerts per second for both and the ratio,
then stops opsbot and counts the alerts in its store: every one must be recorded. Target:
≥ 1,000 alerts/s on 2 cores, even from one sequential sender. Appends a row to
bench/RESULTS.md.

    python bench/ingest.py [--alerts 5000] [--concurrency 32] [--store sqlite|redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import (
    WEB_TOKEN,
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    start_fake,
    wait_for_startup,
)
from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.lab.ports import free_port, wait_until
from tests.lab.redis import start_redis

HEADER = "| date | alerts × in flight | bare aiohttp 202 | opsbot | ratio | recorded | machine |"


def anchor(port: int) -> None:
    """The anchor: an aiohttp handler that reads the body and answers 202."""

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202, text='{"accepted": 1}')

    app = web.Application()
    app.router.add_post("/alerts/webhook", accept)
    app.router.add_get("/healthz", accept)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def post_all(port: int, count: int, concurrency: int, run: str) -> float:
    """Alerts per second for ``count`` POSTs of one alert each.

    A minimal HTTP/1.1 keep-alive client on asyncio streams, requests prepared beforehand, so
    that the sender costs far less than the receiver (aiohttp's client would be the limit).
    """
    requests = []
    for i in range(count):
        body = json.dumps({"target": f"svc{i % 50}", "severity": "critical",
                           "summary": f"{run}: disk full on volume {i}"}).encode()  # fmt: skip
        head = (
            f"POST /alerts/webhook HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Authorization: Bearer {WEB_TOKEN}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        requests.append(head.encode() + body)
    queue = iter(requests)
    statuses: list[int] = []

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in queue:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                statuses.append(int(head[9:12]))
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                await reader.readexactly(length)
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    refused = [s for s in statuses if s != 202]
    if refused or len(statuses) != count:
        raise RuntimeError(f"{len(refused)} POSTs refused, e.g. HTTP {refused[:1]}")
    return count / elapsed


async def recorded(store: Store) -> int:
    try:
        return len(await store.scan("alerts"))
    finally:
        await store.close()


def measure(
    count: int, concurrency: int, folder: Path, store: str = "sqlite"
) -> tuple[float, float, int]:
    """(anchor alerts/s, opsbot alerts/s, alerts recorded by opsbot)."""
    port = free_port()
    log = (folder / "anchor.log").open("wb")
    bare = subprocess.Popen(
        [sys.executable, __file__, "--anchor", str(port)],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 202,
            what="anchor", log=folder / "anchor.log", proc=bare,
        )  # fmt: skip
        asyncio.run(post_all(port, min(count, 500), concurrency, "warm-up"))
        bare_rate = asyncio.run(post_all(port, count, concurrency, "anchor"))
    finally:
        bare.terminate()
        bare.wait(timeout=20)
        log.close()
    with contextlib.ExitStack() as stack:
        backend: dict[str, str] = {"backend": "sqlite"}
        if store == "redis":
            redis = stack.enter_context(start_redis(folder / "redis"))
            backend = {"backend": "redis", "redis_url": redis.url}
        fake = start_fake()
        stack.callback(fake.stop)
        port = free_port()
        config = base_config(
            fake, folder / "data", store=backend,
            alerts={"monitor": {"enabled": False}},
            web={"enabled": True, "port": port, "token": WEB_TOKEN},
        )  # fmt: skip
        with OpsbotProcess(config, folder) as opsbot:
            wait_for_startup(fake, opsbot)
            asyncio.run(post_all(port, min(count, 500), concurrency, "warm-up"))
            rate = asyncio.run(post_all(port, count, concurrency, "opsbot"))
            opsbot.alive()
        if store == "redis":
            total = asyncio.run(recorded(RedisStore(redis.url)))
        else:
            total = asyncio.run(recorded(SQLiteStore(folder / "data" / "opsbot.sqlite3")))
    return bare_rate, rate, total - min(count, 500)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--alerts", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--anchor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.anchor:
        anchor(args.anchor)
        return
    with tempfile.TemporaryDirectory(prefix="opsbot-ingest-") as tmp:
        bare, rate, total = measure(args.alerts, args.concurrency, Path(tmp), args.store)
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.alerts} × {args.concurrency}"
        f" ({args.store}) "
        f"| {bare:.0f}/s | {rate:.0f}/s | {rate / bare:.2f} | {total} of {args.alerts} "
        f"| {machine()} |"
    )
    print(HEADER)
    print(row)
    if not args.no_write:
        append_result("ingest", HEADER, row)
    if total != args.alerts:
        raise SystemExit(f"lost alerts: {args.alerts - total} not recorded")


if __name__ == "__main__":
    main()
