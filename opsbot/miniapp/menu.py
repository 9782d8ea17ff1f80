"""The Board as the menu button of each configured person's private chat.

Telegram sets a chat's menu button only once that person has opened a chat with the bot
(before, ``setChatMenuButton`` answers "chat not found"), so each round tries the people
still without one; the app runs a round at start and every ``RETRY`` seconds after.
Telegram-free: the app passes the call that sets one person's button.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from opsbot.config import Settings

log = logging.getLogger(__name__)

RETRY = 300.0
LABEL = "Board"

SetMenu = Callable[[int, str, str], Awaitable[object]]  # (chat id, label, url)


class MenuButtons:
    def __init__(self, settings: Settings, set_menu: SetMenu) -> None:
        self._settings = settings
        self._set_menu = set_menu
        self._done: set[int] = set()
        self._warned: set[int] = set()

    @property
    def url(self) -> str | None:
        miniapp = self._settings.miniapp
        return miniapp.url if miniapp.enabled else None

    async def round(self) -> None:
        """Set the button for everyone who has none yet (a failure waits for the next round)."""
        url = self.url
        if url is None:
            return
        for person in self._settings.people:
            if person.id in self._done:
                continue
            try:
                await self._set_menu(person.id, LABEL, url)
            except Exception as exc:  # typically "chat not found": not opened yet
                if person.id not in self._warned:
                    self._warned.add(person.id)
                    log.warning(
                        "board menu button for %s (%d) not set yet: %s; retrying every %d s",
                        person.name, person.id, exc, int(RETRY),
                    )  # fmt: skip
                continue
            self._done.add(person.id)
