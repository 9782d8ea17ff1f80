"""The board in a real headless Chromium (Debian's chromium + chromedriver, driven by
Selenium; nothing is downloaded), at a phone's 360 px.

Telegram's ``telegram-web-app.js`` is served by the test: Chromium resolves telegram.org to a
local HTTPS server (``--host-resolver-rules``, its lab certificate accepted) whose script
defines the ``Telegram.WebApp`` object a Telegram client would, carrying ``initData`` signed
for the person the test chooses and Telegram's light or dark ``themeParams``.

The admin's board is photographed light and dark into ``tests/miniapp/artifacts/``
(git-ignored); with ``OPSBOT_SCREENSHOTS=docs`` also into ``docs/miniapp-light.png`` and
``docs/miniapp-dark.png``, the pictures the README shows (so an ordinary run leaves the
repository as it was). The day of latency and the earlier outage behind them are seeded in
the store; the rest is live.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from aiohttp import web
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from opsbot.alerting import status_history
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.miniapp import latency
from opsbot.objectives.recording import Recorder
from opsbot.services import Services
from tests.factories import ALICE, BOB, OPS, OPSBOT_TOKEN, VIC, running_opsbot
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.chromium import chromium
from tests.lab.ports import free_port
from tests.lab.tls import make_pki
from tests.miniapp.lab import base_url, board_settings, init_data

DOCS = Path(__file__).resolve().parents[2] / "docs"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
PHONE = {"width": 360, "height": 800, "deviceScaleFactor": 2, "mobile": True}
THEMES = {  # Telegram's own default themes (Android), as themeParams
    "light": {
        "bg_color": "#ffffff", "text_color": "#000000", "hint_color": "#707579",
        "link_color": "#3390ec", "button_color": "#3390ec", "button_text_color": "#ffffff",
        "secondary_bg_color": "#f4f4f5", "destructive_text_color": "#e53935",
    },
    "dark": {
        "bg_color": "#212121", "text_color": "#ffffff", "hint_color": "#aaaaaa",
        "link_color": "#8774e1", "button_color": "#8774e1", "button_text_color": "#ffffff",
        "secondary_bg_color": "#181818", "destructive_text_color": "#ff595a",
    },
}  # fmt: skip


class TelegramScript:
    """telegram.org's script, as the test wants it now: a WebApp with this initData."""

    def __init__(self) -> None:
        self.init_data = ""
        self.scheme = "light"

    def body(self) -> str:
        app = {
            "initData": self.init_data,
            "initDataUnsafe": {},
            "version": "8.0",
            "platform": "android",
            "colorScheme": self.scheme,
            "themeParams": THEMES[self.scheme],
        }
        methods = (
            "ready() {}, expand() {}, onEvent() {}, "
            "showConfirm(text, done) { window.confirmed = text; done(true); }"
        )
        return f"window.Telegram = {{WebApp: Object.assign({json.dumps(app)}, {{{methods}}})}};"


@pytest_asyncio.fixture
async def telegram_org(tmp_path: Path) -> AsyncIterator[tuple[TelegramScript, int]]:
    """An HTTPS server standing in for telegram.org: /js/telegram-web-app.js only."""
    script = TelegramScript()

    async def serve(request: web.Request) -> web.Response:
        return web.Response(text=script.body(), content_type="application/javascript")

    app = web.Application()
    app.router.add_get("/js/telegram-web-app.js", serve)
    pki = make_pki(tmp_path / "pki")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield script, port
    finally:
        await runner.cleanup()


@pytest.fixture
def browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, telegram_org: tuple[TelegramScript, int]
) -> Iterator[webdriver.Chrome]:
    """Headless Chromium as a 360 px phone; telegram.org is the test's server."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    with chromium(
        tmp_path / "chromium-profile",
        "--hide-scrollbars",
        f"--host-resolver-rules=MAP telegram.org 127.0.0.1:{telegram_org[1]}",
        "--ignore-certificate-errors",
    ) as driver:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        yield driver


async def open_board(driver: webdriver.Chrome, url: str) -> None:
    await asyncio.to_thread(driver.get, f"{url}/board")


async def until(driver: webdriver.Chrome, condition: Any, timeout: float = 20.0) -> Any:
    """Wait (in a thread, the event loop runs on) for ``condition(driver)`` to be truthy."""
    wait = WebDriverWait(driver, timeout, poll_frequency=0.2)
    return await asyncio.to_thread(wait.until, condition)


VIEW = """
const pick = (id) => [...document.querySelectorAll(`#${id} > li.card`)].map((li) => ({
  text: li.innerText,
  buttons: [...li.querySelectorAll("button")].map((b) => b.textContent),
  spark: li.querySelector("svg.spark polyline") !== null,
}));
const text = (id) => { const n = document.getElementById(id); return n ? n.innerText : null; };
return {
  targets: pick("targets"), alerts: pick("alerts"), incidents: pick("incidents"),
  backups: pick("backups"), requests: pick("requests"),
  notice: text("notice"), gate: text("gate"), updated: text("updated"),
  buttons: document.querySelectorAll("button").length,
  inputs: document.querySelectorAll("input").length,
  background: getComputedStyle(document.body).backgroundColor,
  width: document.documentElement.scrollWidth,
};
"""


def view(driver: webdriver.Chrome) -> dict[str, Any]:
    """What the board shows now, read in one go (it re-renders under our feet every poll)."""
    shown: dict[str, Any] = driver.execute_script(VIEW)
    return shown


def first_target(driver: webdriver.Chrome) -> str:
    targets = view(driver)["targets"]
    return str(targets[0]["text"]) if targets else ""


def click(driver: webdriver.Chrome, css: str) -> None:
    """A real click on what ``css`` finds, found again if a re-render replaced it."""
    for _ in range(10):
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return
        except StaleElementReferenceException:
            continue
    raise AssertionError(f"{css} kept going stale")


async def seed_a_day(services: Services) -> None:
    """A day of latency and of rounds for both targets and a half-hour outage of the ledger
    3 h ago."""
    now = time.time()
    for name, base in (("payments", 40.0), ("ledger", 120.0)):
        for minute in range(0, 24 * 60, 10):
            at = now - 86400 + minute * 60
            wave = base * (1 + 0.35 * math.sin(minute / 97) + 0.15 * math.sin(minute / 13))
            await services.store.append(
                latency.NAMESPACE, name, {"at": at, "ms": round(wave, 1)}, keep=latency.KEEP
            )
    recorder = Recorder(services.store, services.settings)  # the objectives' rounds alike
    for name in ("payments", "ledger"):
        for half_minute in range(2 * 24 * 60):
            at = now - 86400 + half_minute * 30
            down = name == "ledger" and now - 3 * 3600 <= at < now - 2.5 * 3600
            recorder.observe(name, not down, 0.12 if name == "ledger" else 0.04, at)
    await recorder.flush()
    check = {"check": "status"}
    for status, at in (("firing", now - 3 * 3600), ("resolved", now - 2.5 * 3600)):
        event = AlertEvent("monitor", "seeded", status, Severity.critical, "ledger: status",
                           target="ledger", labels=check)  # fmt: skip
        await status_history.record(services.store, [event], at)


async def screenshot(driver: webdriver.Chrome, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "height": height})
    try:  # the whole board, one phone wide
        assert await asyncio.to_thread(driver.save_screenshot, str(shot))
    finally:
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    if os.environ.get("OPSBOT_SCREENSHOTS") == "docs":
        shutil.copy(shot, DOCS / name)


def approval_card(message: FakeMessage) -> bool:
    return "restart ledger" in (message.text or "") and "a:" in json.dumps(message.reply_markup)


async def test_the_admins_board_shows_the_lab_live_and_a_restart_is_approved_in_the_group(
    fake: FakeBotAPI,
    browser: webdriver.Chrome,
    telegram_org: tuple[TelegramScript, int],
    tmp_path: Path,
) -> None:
    script, _ = telegram_org
    settings = board_settings(fake, tmp_path, ledger_down=True)
    async with running_opsbot(fake, settings) as chat:
        await seed_a_day(chat.services)
        await chat.ask("/incident P2 ledger writes failing ledger", user=ALICE)
        await chat.ask("/incident update INC-1 Disk at 100%, cleaning old WAL", user=ALICE)
        script.init_data = init_data(ALICE)
        await open_board(browser, base_url(settings))
        await until(browser, lambda d: "Down" in first_target(d) and view(d)["alerts"])
        shown = view(browser)
        ledger = shown["targets"][0]
        assert ledger["text"].startswith("ledger") and "status" in ledger["text"]
        assert "24h" in ledger["text"] and "30d" in ledger["text"] and ledger["spark"]
        # its objective as /slo says it: 30 minutes down spend a 30-day budget of 43 minutes
        assert "SLO 99.9 % · 97.91 % · budget spent" in ledger["text"]
        assert ledger["buttons"] == ["Restart", "Rollback", "Backup"]
        assert "ledger" in shown["alerts"][0]["text"]
        assert shown["alerts"][0]["buttons"] == ["Ack", "Silence 1h"]
        incident = shown["incidents"][0]["text"]
        assert "INC-1" in incident and "cleaning old WAL" in incident
        assert "no backup yet" in shown["backups"][0]["text"]
        assert shown["background"] == "rgb(255, 255, 255)"  # themeParams.bg_color
        assert shown["width"] <= 360  # nothing wider than the phone
        await screenshot(browser, "miniapp-light.png")

        script.scheme = "dark"
        await asyncio.to_thread(browser.refresh)
        await until(browser, lambda d: "Down" in first_target(d))
        assert view(browser)["background"] == "rgb(33, 33, 33)"  # the dark bg_color
        await screenshot(browser, "miniapp-dark.png")

        await asyncio.to_thread(click, browser, '#targets [data-target="ledger"] button')
        card = await fake.wait_for_message(OPS.id, approval_card, token=OPSBOT_TOKEN)
        assert "alice" in (card.text or "")
        await until(browser, lambda d: view(d)["requests"])
        shown = view(browser)
        assert "restart ledger" in shown["requests"][0]["text"]
        assert shown["requests"][0]["buttons"] == ["Deny"]  # her own: she may only cancel it
        assert "restart ledger" in shown["notice"]

        approve = next(
            b["callback_data"]
            for row in (card.reply_markup or {})["inline_keyboard"]
            for b in row
            if b["callback_data"].startswith("a:")
        )
        chat.tap(card, approve, user=BOB)
        await until(browser, lambda d: "OK" in first_target(d) and not view(d)["requests"])
        assert not (tmp_path / "down").exists()


async def test_a_viewer_sees_the_board_without_a_single_action(
    fake: FakeBotAPI,
    browser: webdriver.Chrome,
    telegram_org: tuple[TelegramScript, int],
    tmp_path: Path,
) -> None:
    script, _ = telegram_org
    settings = board_settings(fake, tmp_path, ledger_down=True)
    async with running_opsbot(fake, settings) as chat:
        await chat.ask("/incident P2 ledger writes failing ledger", user=ALICE)
        script.init_data = init_data(VIC)
        await open_board(browser, base_url(settings))
        await until(browser, lambda d: "Down" in first_target(d) and view(d)["alerts"])
        shown = view(browser)
        assert shown["incidents"] and shown["backups"]
        assert (shown["buttons"], shown["inputs"]) == (0, 0)
        assert "vic (viewer)" in shown["updated"]


@pytest.mark.parametrize("case", ["expired", "forged", "missing"])
async def test_a_board_opened_without_telegrams_fresh_signature_says_so(
    fake: FakeBotAPI,
    browser: webdriver.Chrome,
    telegram_org: tuple[TelegramScript, int],
    tmp_path: Path,
    case: str,
) -> None:
    script, _ = telegram_org
    settings = board_settings(fake, tmp_path)
    script.init_data = {
        "expired": init_data(ALICE, age=2 * 3600),
        "forged": init_data(ALICE).replace(str(ALICE.id), str(BOB.id)),
        "missing": "",
    }[case]
    async with running_opsbot(fake, settings):
        await open_board(browser, base_url(settings))
        await until(browser, lambda d: view(d)["gate"])
        shown = view(browser)
        assert shown["gate"].startswith("Open this from Telegram")
        assert shown["targets"] == [] and "ledger" not in browser.page_source
        async with httpx.AsyncClient(base_url=base_url(settings)) as web:
            signed = {"Authorization": f"tma {script.init_data}"} if script.init_data else {}
            answer = await web.get("/board/api/state", headers=signed)
        assert answer.status_code == 401
