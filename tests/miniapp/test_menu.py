"""The Board menu button: set for each person once they have opened a chat with the bot."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbot.miniapp.menu import MenuButtons
from tests.factories import ALICE, OPSBOT_TOKEN, OPSBOT_USERNAME, VIC
from tests.fakebotapi import FakeBotAPI
from tests.miniapp.lab import URL, board_settings


async def test_a_person_who_never_opened_the_bot_gets_the_button_once_they_do(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FakeBotAPI(group_per_minute=None) as fake:
        fake.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        settings = board_settings(fake, tmp_path)
    opened = {ALICE.id}
    calls: list[int] = []

    async def set_menu(chat_id: int, label: str, url: str) -> bool:
        calls.append(chat_id)
        if chat_id not in opened:
            raise RuntimeError("Bad Request: chat not found")
        assert (label, url) == ("Board", URL)
        return True

    menus = MenuButtons(settings, set_menu)
    await menus.round()
    await menus.round()  # still not opened: tried again, warned about once
    warned = [r.getMessage() for r in caplog.records if "menu button for vic" in r.getMessage()]
    assert len(warned) == 1 and "chat not found" in warned[0]
    opened.add(VIC.id)
    calls.clear()
    await menus.round()
    assert VIC.id in calls and ALICE.id not in calls  # alice's is set: not asked again
    calls.clear()
    await menus.round()
    assert calls == [p.id for p in settings.people if p.id not in opened]
