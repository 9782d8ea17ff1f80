"""The Notifier port: how code below the handlers posts and edits messages.

Approval cards, progress, results copied to the incident chat (and later alerts and incident
status cards) start below ``handlers/``; they go out through this port, which the Telegram
layer implements and the console prints. In the bot it is the outbox
(``outbox.OutboxNotifier``): ``send`` returns an opaque message *ref* at once, before
anything reaches Telegram, and ``edit``/``pin`` take that ref.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from opsbot.render import Reply

#: Where a long verb or action reports its latest progress (a chat's in-place message, see
#: ``opsbot.verbs.progress``); called with the latest reply, it must not block.
ProgressSink = Callable[[Reply], None]


class Notifier(Protocol):
    async def send(
        self,
        chat_id: int,
        reply: Reply,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        """Post a reply (threaded to message ``reply_to`` when given, sent anyway if that one
        is gone); returns the new message's ref (what ``edit`` and ``pin`` take)."""
        ...

    async def edit(self, chat_id: int, message_id: int, reply: Reply) -> None:
        """Replace a message's text and buttons in place (unchanged text is not an error)."""
        ...

    async def pin(self, chat_id: int, message_id: int, *, pinned: bool = True) -> None:
        """Pin a message (quietly), or unpin it with ``pinned=False``; failing to (no right
        to) is not an error."""
        ...

    async def create_topic(self, chat_id: int, name: str) -> int | None:
        """Open a forum topic; its thread id, or None when the chat is not a forum."""
        ...
