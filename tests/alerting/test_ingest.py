"""Alert ingestion over real HTTP into the real alert engine (SQLite, the fake Bot API).

Simple senders post one alert per request, many at once: every 202 means recorded, and every
alert is then listable. Requests that arrive together share one ingest call; when that call
fails, each of its senders gets a 503 to retry, and later requests are not affected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from opsbot.alerting.engine import AlertEngine
from opsbot.alerting.event import AlertEvent
from opsbot.metrics import Metrics
from opsbot.redact import Redactor
from opsbot.state.outbox import Outbox, OutboxNotifier, Priority
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.web.server import WebServer
from tests.factories import OPSBOT_TOKEN, OPSBOT_USERNAME, base_config, write_config
from tests.fakebotapi import FakeBotAPI

TOKEN = "ingest-web-token-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as api:
        api.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        yield api


async def post_each(port: int, alerts: list[dict[str, str]], in_flight: int) -> list[int]:
    """POST every alert on its own request, ``in_flight`` at a time; the status codes."""
    gate = asyncio.Semaphore(in_flight)
    limits = httpx.Limits(max_connections=in_flight)
    async with httpx.AsyncClient(limits=limits, timeout=30) as http:

        async def post(alert: dict[str, str]) -> int:
            async with gate:
                response = await http.post(
                    f"http://127.0.0.1:{port}/alerts/webhook", json=alert,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )  # fmt: skip
                return response.status_code

        return await asyncio.gather(*(post(a) for a in alerts))


async def test_a_burst_of_single_alert_posts_is_all_recorded_and_listable(
    fake: FakeBotAPI, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    config = base_config(fake, tmp_path / "data")
    config["web"] = {"enabled": True, "port": 0, "token": TOKEN}
    settings = write_config(tmp_path / "opsbot.yaml", config)
    notifier = OutboxNotifier(Outbox(sqlite_store), Redactor([]), Priority.alert)
    engine = AlertEngine(sqlite_store, settings, notifier)
    metrics = Metrics()
    server = WebServer(settings, engine.ingest, metrics)
    port = await server.start()
    try:
        alerts = [
            {"target": f"bot{i % 7}", "severity": "critical", "summary": f"disk {i} full"}
            for i in range(400)
        ]
        statuses = await post_each(port, alerts, in_flight=32)
    finally:
        await server.stop()
    assert statuses == [202] * 400
    listed = await engine.list(firing_only=True, limit=1000)
    assert sorted(a.summary for a in listed) == sorted(a["summary"] for a in alerts)
    received = metrics.registry.get_sample_value(
        "opsbot_alerts_received_total", {"source": "webhook"}
    )
    assert received == 400


async def test_a_failed_ingest_refuses_its_own_requests_only(tmp_path: Path) -> None:
    settings = write_config(tmp_path / "opsbot.yaml", {
        "data_dir": str(tmp_path / "data"), "web": {"enabled": True, "port": 0, "token": TOKEN},
    })  # fmt: skip
    recorded: list[AlertEvent] = []
    failing = asyncio.Event()
    failing.set()

    async def ingest(events: list[AlertEvent]) -> None:
        await asyncio.sleep(0.05)  # long enough for concurrent requests to queue up
        if failing.is_set():
            raise RuntimeError("store unavailable")
        recorded.extend(events)

    server = WebServer(settings, ingest, Metrics())
    port = await server.start()
    try:
        first = [{"summary": f"first {i}"} for i in range(20)]
        assert await post_each(port, first, in_flight=20) == [503] * 20  # the senders retry
        failing.clear()
        again = [{"summary": f"again {i}"} for i in range(20)]
        assert await post_each(port, again, in_flight=20) == [202] * 20
    finally:
        await server.stop()
    assert sorted(e.summary for e in recorded) == sorted(a["summary"] for a in again)
