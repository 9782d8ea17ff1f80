"""The status page in a real headless Chromium (Debian's chromium + chromium-driver, driven by
Selenium; nothing is downloaded), with JavaScript turned off: it renders, an incident posted in
the chat appears by the page's own refresh, and only its public update shows; and at 360 px
(a small phone) nothing runs off the right edge, the 90 daily availability bars included.

The screenshot is kept: under the test's tmp dir and copied to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By

from opsbot.objectives.recording import Recorder
from tests.factories import ALICE, running_opsbot
from tests.fakebotapi import FakeBotAPI
from tests.lab.chromium import chromium
from tests.web.test_statuspage import INTERNAL, SECRET_NOTE, status_settings

ARTIFACTS = Path(__file__).parent / "artifacts"
REFRESH = 5


@pytest.fixture
def browser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium with a fresh profile, no network chatter and JavaScript disabled."""
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch anything
    javascript_off = {"profile.managed_default_content_settings.javascript": 2}
    with chromium(
        tmp_path / "chromium-profile", "--window-size=1000,1100", prefs=javascript_off
    ) as driver:
        yield driver


def page_text(driver: webdriver.Chrome) -> str:
    """The page's text; read again when the page reloaded (meta refresh) under our feet."""
    for _ in range(5):
        try:
            return str(driver.find_element(By.TAG_NAME, "body").text)
        except StaleElementReferenceException:
            time.sleep(0.2)
    return str(driver.find_element(By.TAG_NAME, "body").text)


async def test_the_status_page_in_chromium_shows_a_chat_incident_after_one_refresh(
    fake: FakeBotAPI, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    settings = status_settings(fake, tmp_path, refresh=REFRESH)
    url = f"http://127.0.0.1:{settings.web.port}/status"
    async with running_opsbot(fake, settings) as chat:
        await asyncio.to_thread(browser.get, url)
        assert browser.title == "Example status"
        html = browser.find_element(By.TAG_NAME, "html")
        assert html.get_attribute("lang") == "en"
        assert browser.find_elements(By.TAG_NAME, "script") == []
        refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
        assert refresh.get_attribute("content") == str(REFRESH)
        assert browser.find_element(By.CSS_SELECTOR, '[role="status"]').text == (
            "All systems operational"
        )
        rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert [r.find_element(By.TAG_NAME, "th").text.split("\n")[0] for r in rows] == [
            "Payments API",
            "Ledger",
        ]
        assert "Operational" in rows[1].text and "100%" in rows[1].text
        assert "No open incidents." in await asyncio.to_thread(page_text, browser)

        # The ledger goes down; declared and updated in the chat while the page stays open.
        (tmp_path / "down").touch()
        await chat.ask(f"/incident P1 ledger disk full {INTERNAL}", user=ALICE)
        await chat.ask(f"/incident update INC-1 {SECRET_NOTE}")
        await chat.ask("/incident public INC-1 identified The database was full")
        posted = time.monotonic()
        shown = ""
        while "The database was full" not in shown or "Outage" not in shown:
            assert time.monotonic() - posted < REFRESH + 5, "not shown within one refresh"
            await asyncio.sleep(0.25)
            shown = await asyncio.to_thread(page_text, browser)
        assert "Incident INC-1 — Ledger" in shown and "Identified" in shown
        for internal in (SECRET_NOTE, INTERNAL, "disk full", "alice", "P1"):
            assert internal not in shown and internal not in browser.page_source, internal

        shot = tmp_path / "status-page.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(shot))
        assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "status-page.png")
        print(f"status page screenshot: {ARTIFACTS / 'status-page.png'}")


async def test_the_status_page_fits_a_360_px_phone_with_its_90_daily_bars(
    fake: FakeBotAPI, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    settings = status_settings(fake, tmp_path, refresh=3600)  # no reload while measured
    url = f"http://127.0.0.1:{settings.web.port}/status"
    async with running_opsbot(fake, settings) as chat:
        # 80 days of the ledger's rounds: all good but one day with a 3-hour outage
        recorder = Recorder(chat.services.store, settings)
        today = int(time.time() // 86400)
        for day in range(today - 79, today + 1):
            for minute in range(0, 1440, 10):
                down = day == today - 3 and minute < 180
                recorder.observe(INTERNAL, not down, 0.2, day * 86400 + minute * 60)
        await recorder.flush(final=True)
        await asyncio.to_thread(browser.set_window_size, 360, 900)
        await asyncio.to_thread(browser.get, url)
        assert browser.execute_script("return window.innerWidth") == 360
        scrolled = browser.execute_script("return document.documentElement.scrollWidth")
        assert scrolled <= 360, f"the page is {scrolled} px wide at 360 px"
        # every visible box inside the viewport (the screen-reader-only header row is clipped)
        beyond = browser.execute_script(
            "return [...document.querySelectorAll('main *:not(thead, thead *, .sr)')]"
            ".filter(e => e.getBoundingClientRect().right > 360.5).map(e => e.outerHTML)"
        )
        assert beyond == []
        rows = browser.find_elements(By.CSS_SELECTOR, "tbody tr")
        assert "Ledger" in rows[1].text and "100%" in rows[1].text  # the 30-day column too
        ledger = browser.find_elements(By.CSS_SELECTOR, ".slo")[1]
        assert "99.58 % available over 30 days (objective 99.9 %)" in ledger.text
        bars = browser.execute_script(
            "return [...document.querySelectorAll('.slo')[1].querySelectorAll('.bars li')]"
            ".map(b => [b.className, b.getBoundingClientRect().width])"
        )
        assert len(bars) == 90
        grades = [grade for grade, _ in bars]
        assert grades[:10] == ["none"] * 10 and grades[-4] == "fail"
        assert grades.count("ok") == 79
        assert min(width for _, width in bars) >= 2  # each day still visible
        shot = tmp_path / "status-page-360.png"
        assert await asyncio.to_thread(browser.save_screenshot, str(shot))
        ARTIFACTS.mkdir(exist_ok=True)
        shutil.copy(shot, ARTIFACTS / "status-page-360.png")
