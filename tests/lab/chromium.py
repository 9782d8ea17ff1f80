"""Debian's headless Chromium, driven by Selenium through Debian's chromedriver.

The browser download of Selenium Manager does not work here (no internet), so both binaries
come from the `chromium` and `chromium-driver` packages `.ci/run` installs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
QUIET = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
)  # fmt: skip


@contextlib.contextmanager
def chromium(
    profile: Path, *flags: str, prefs: dict[str, Any] | None = None
) -> Iterator[webdriver.Chrome]:
    """A fresh-profile headless Chromium with no network chatter, plus ``flags``; quit after.

    The caller sets ``SE_OFFLINE=true`` (monkeypatch) so Selenium Manager never fetches.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*QUIET, *flags, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    if prefs:
        options.add_experimental_option("prefs", prefs)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        driver.set_page_load_timeout(20)
        yield driver
    finally:
        driver.quit()
