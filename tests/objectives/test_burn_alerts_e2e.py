"""Burn-rate alerts end to end: the real monitor probes a real HTTP server that flaps on a
schedule, its rounds are recorded, and the alert engine ends with exactly the burn-rate
alerts the SRE workbook's rules call for, posted in the incident chat.

Time runs 300 times faster for the objectives (``clock.now``): a round every 0.2 s is a round
a simulated minute. Schedule (simulated minutes): healthy 0–60, down 60–75, healthy after.
Expected, objective 99 %: a ticket (1× over 3 d and 6 h, or 3× over 1 d and 2 h, whichever
a tick sees first) within minutes of the first failed rounds, then a page (6× over 6 h and
30 min); the page resolves once the last 30 minutes hold at most one failed round (~minute
104); the ticket stays (its short window, 2 h or 6 h, still burns).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from opsbot.alerting.engine import ALERT_ENGINE, AlertEngine
from opsbot.alerting.records import Alert
from opsbot.objectives import alerts as burn_alerts
from opsbot.objectives import clock
from tests.factories import INCIDENTS, OPSBOT_TOKEN, base_config, running_opsbot, write_config
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import free_port

SCALE = 300.0  # simulated seconds per real second
REAL_START = time.time()
DOWN = (60, 75)  # simulated minutes


def simulated() -> float:
    return REAL_START + (time.time() - REAL_START) * SCALE


def minute() -> float:
    return (simulated() - REAL_START) / 60


@pytest_asyncio.fixture
async def flapping() -> AsyncIterator[int]:
    """An HTTP server whose /health fails during DOWN (simulated minutes)."""

    async def health(request: web.Request) -> web.Response:
        down = DOWN[0] <= minute() < DOWN[1]
        return web.Response(status=503 if down else 200, text="down" if down else "ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


def slo_alerts(alerts: list[Alert]) -> dict[str, Alert]:
    return {a.labels["check"]: a for a in alerts if a.source == burn_alerts.SOURCE}


async def test_a_flapping_target_ends_in_exactly_the_expected_burn_rate_alerts(
    fake: FakeBotAPI, flapping: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    global REAL_START
    monkeypatch.setattr(burn_alerts, "TICK_SECONDS", 0.5)
    config = base_config(fake, tmp_path / "data")
    check = {"type": "http", "url": f"http://127.0.0.1:{flapping}/health", "timeout": 1}
    config["targets"] = {"quizbot": {"kind": "command", "checks": [check]}}
    config["alerts"] = {"monitor": {"enabled": True, "interval": 60 / SCALE}}
    config["objectives"] = {"default": {"availability": 99}}
    settings = write_config(tmp_path / "opsbot.yaml", config)
    REAL_START = time.time()
    monkeypatch.setattr(clock, "now", simulated)
    async with running_opsbot(fake, settings) as chat:
        engine = ALERT_ENGINE.of(chat.services)
        assert isinstance(engine, AlertEngine)
        seen: dict[str, list[tuple[str, float]]] = {}  # check → (status, minute) changes
        deadline = time.monotonic() + 60
        while True:
            now = minute()
            for check, alert in slo_alerts(await engine.list(firing_only=False)).items():
                changes = seen.setdefault(check, [])
                if not changes or changes[-1][0] != alert.status:
                    changes.append((alert.status, now))
            page = seen.get("error budget (page)", [])
            if page and page[-1][0] == "resolved":
                break
            assert time.monotonic() < deadline, f"no page resolved by minute {now:.0f}: {seen}"
            await asyncio.sleep(0.1)
        # the ticket: first, soon after the first failed rounds, and still firing
        [(status, fired)] = seen["error budget (ticket)"]
        assert status == "firing" and DOWN[0] < fired < DOWN[0] + 8
        # the page: after the ticket, while down; resolved once the last 30 min recovered
        assert [status for status, _ in page] == ["firing", "resolved"], seen
        [(_, paged), (_, resolved)] = page
        assert fired <= paged < DOWN[1]
        assert DOWN[1] + 25 < resolved < DOWN[1] + 40, seen
        alerts = slo_alerts(await engine.list(firing_only=False))
        assert set(alerts) == {"error budget (page)", "error budget (ticket)"}
        assert alerts["error budget (page)"].occurrence == 1  # fired once, resolved once
        assert alerts["error budget (ticket)"].status == "firing"
        assert alerts["error budget (ticket)"].severity.value == "warning"
        assert alerts["error budget (page)"].severity.value == "critical"
        # in the incident chat: the ticket's card says how fast, how much is left, since when
        ticket = await fake.wait_for_message(
            INCIDENTS.id, lambda m: (m.text or "").startswith("⚠️ WARNING · quizbot\nquizbot: "
            "error budget burning"), timeout=10, token=OPSBOT_TOKEN,
        )  # fmt: skip
        lines = (ticket.text or "").splitlines()
        # whichever ticket rule fired first: 1× over 3 d and 6 h, or 3× over 1 d and 2 h
        assert re.fullmatch(
            r"quizbot: error budget burning \d+\.\d× \((1 d|3 d)\) and \d+\.\d× \((2 h|6 h)\), "
            r"over (3\.0|1\.0)×; no budget left", lines[1]
        ), lines[1]
        assert lines[2].startswith("since ") and "· slo ·" in lines[2]
        assert ticket.reply_markup is not None  # the engine's buttons: ack, silence…
        # the page: its card resolved, and a short recovery line
        await fake.wait_for_message(
            INCIDENTS.id, lambda m: (m.text or "").startswith(
                "✅ quizbot recovered after") and "error budget no longer burning fast" in
            (m.text or ""), timeout=10, token=OPSBOT_TOKEN,
        )  # fmt: skip
