"""Alert ingestion over real HTTP into the real alert engine (SQLite, the fake Bot API).

Simple senders post one alert per request, many at once: every 202 means recorded, and every
alert is then listable. Requests that arrive together share one ingest call; when that call
fails, each of its senders gets a 503 to retry, and later requests are not affected.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import httpx
from telegram import Bot

from opsbot.alerting.engine import AlertEngine
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.intake import Intake
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.metrics import Metrics
from opsbot.redact import Redactor
from opsbot.state.outbox import Outbox, Priority
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.web.server import WebServer
from tests.factories import INCIDENTS, base_config, fake_fixture, write_config
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import free_port

REPO = Path(__file__).resolve().parents[2]

TOKEN = "ingest-web-token-0123456789"


fake = fake_fixture()


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


async def test_the_intake_answers_once_stored_and_delivers_after(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    config = base_config(fake, tmp_path / "data")
    config["web"] = {"enabled": True, "port": 0, "token": TOKEN}
    settings = write_config(tmp_path / "opsbot.yaml", config)
    engine = AlertEngine(sqlite_store, settings, TelegramNotifier(bot, Redactor([])))
    followed: list[AlertEvent] = []

    async def then(events: Sequence[AlertEvent]) -> None:
        followed.extend(events)

    intake = Intake(engine, then=then)
    server = WebServer(settings, intake, Metrics())
    port = await server.start()
    try:
        alerts = [{"summary": f"intake {i}", "severity": "critical"} for i in range(6)]
        assert await post_each(port, alerts[:3], in_flight=1) == [202] * 3
        assert await post_each(port, alerts[3:], in_flight=3) == [202] * 3
    finally:
        await server.stop()
        await intake.close()  # what was recorded is delivered before it returns
    texts = sorted((m.text or "").split("\n")[1] for m in fake.bot_messages(INCIDENTS.id))
    assert texts == [f"intake {i}" for i in range(6)]
    assert sorted(e.summary for e in followed) == texts
    assert len(await engine.list(limit=100)) == 6


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


async def test_every_alert_answered_202_is_stored_when_opsbot_is_sigkilled_right_after(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    """The answer waits for the store's commit, not for delivery: a crash loses nothing."""
    port = free_port()
    config = base_config(fake, tmp_path / "data")
    config["web"] = {"enabled": True, "port": port, "token": TOKEN}
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))
    opsbot = subprocess.Popen(
        [sys.executable, "-m", "opsbot", "run", "--config", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": str(tmp_path)},
    )  # fmt: skip
    alerts = [{"summary": f"crash {i}", "severity": "critical"} for i in range(40)]
    try:
        await fake.wait_for_call("getUpdates", timeout=30)
        async with httpx.AsyncClient(timeout=10) as http:
            for alert in alerts:  # one sender, one alert per request
                response = await http.post(
                    f"http://127.0.0.1:{port}/alerts/webhook", json=alert,
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )  # fmt: skip
                assert response.status_code == 202
    finally:
        opsbot.send_signal(signal.SIGKILL)  # right after the last answer
        opsbot.communicate(timeout=10)
    store = SQLiteStore(tmp_path / "data" / "opsbot.sqlite3")
    try:
        stored = await store.scan("alerts")
    finally:
        await store.close()
    assert sorted(v.value["summary"] for v in stored.values()) == sorted(
        a["summary"] for a in alerts
    )


async def test_alerts_recorded_but_never_delivered_are_posted_by_the_next_tick(
    fake: FakeBotAPI, bot: Bot, sqlite_store: SQLiteStore, tmp_path: Path
) -> None:
    """What a replica killed between answering and delivering leaves: the tick posts it."""
    settings = write_config(tmp_path / "opsbot.yaml", base_config(fake, tmp_path / "data"))
    dead = AlertEngine(sqlite_store, settings, TelegramNotifier(bot, Redactor([])))
    events = [
        AlertEvent("webhook", f"fp{i}", "firing", Severity.critical, f"left behind {i}")
        for i in range(3)
    ]
    await dead.record(events)  # and nothing more: it died
    assert fake.bot_messages(INCIDENTS.id) == []
    survivor = AlertEngine(sqlite_store, settings, TelegramNotifier(bot, Redactor([])))
    await survivor.tick()
    texts = [m.text or "" for m in fake.bot_messages(INCIDENTS.id)]
    assert sorted(t.split("\n")[1] for t in texts) == [f"left behind {i}" for i in range(3)]
