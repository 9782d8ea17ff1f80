"""The Board button: the Mini App's direct link (``miniapp.link``), for group messages.

Inline ``web_app`` buttons work only in private chats; in a group, a URL button with the
direct link (https://t.me/<bot>/<short name>) opens the same Mini App, signed for whoever
taps it. Part of the ground (it imports only the configuration and ``render``) so that
``/health`` and the alert cards can offer it.
"""

from __future__ import annotations

from opsbot.config import Settings
from opsbot.render import Button

BOARD = "📊 Board"


def board_link(settings: Settings) -> str | None:
    """The direct link, when the board is enabled and registered."""
    miniapp = settings.miniapp
    return miniapp.link if miniapp.enabled and miniapp.link else None


def board_buttons(settings: Settings) -> tuple[Button, ...]:
    """``(Board,)`` or nothing: a button is offered only where it opens something."""
    link = board_link(settings)
    return (Button(BOARD, link),) if link is not None else ()
