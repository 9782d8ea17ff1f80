"""``/board``: the Mini App's Board button, where the team is (a group message's button opens
it through its direct link, for whoever taps)."""

from __future__ import annotations

from opsbot.config import Role, Settings
from opsbot.errors import UsageError
from opsbot.miniapp.link import board_buttons, board_link
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.manual import PAGES, Page
from opsbot.verbs.registry import Caller, Verb, register


async def board(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/board"""
    if args:
        raise UsageError("usage: /board")
    buttons = board_buttons(services.settings)
    if not buttons:
        return Reply(text="The board is not set up: miniapp.enabled and miniapp.link "
                          "(see the README's Mini App section).")  # fmt: skip
    return Reply(
        text="📊 The live board: targets worst first, alerts, incidents, backups. "
        "Tap to open it in Telegram.",
        buttons=buttons,
    )


def _configured(settings: Settings) -> bool:
    return board_link(settings) is not None


register(
    Verb("board", Role.viewer, "/board", "the live board: targets, alerts, incidents", board,
         reads_only=True),
)  # fmt: skip
PAGES["board"] = Page(
    ((Role.viewer, "the live board in Telegram: targets, alerts, incidents"),),
    "Posts a Board button that opens opsbot's Mini App for whoever taps it: targets worst "
    "first with 24 h latency and uptime, firing alerts (Ack, Silence), open incidents "
    "(Update), requests awaiting approval and backups against their RPO, updating while open. "
    "Actions there file the same requests as the chat's commands.",
    ("/board",),
    configured=_configured,
)
