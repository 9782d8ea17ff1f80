"""The ``Notifier`` port over the outbox: what handlers, actions and alerts hold to talk.

Apart from ``outbox.py`` (the entries and their rules) so that each stays one idea.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

from opsbot.notify import Notifier
from opsbot.redact import Redactor
from opsbot.render import Reply
from opsbot.state.outbox import Outbox, Priority


class OutboxNotifier:
    """The ``Notifier`` port over the outbox: returns refs, never waits on Telegram.

    Everything is redacted before it is stored, so no secret is at rest in the outbox either.
    """

    def __init__(
        self,
        outbox: Outbox,
        redactor: Redactor,
        priority: Priority = Priority.reply,
        *,
        topics: Callable[[int, str], Awaitable[int | None]] | None = None,
    ) -> None:
        self.outbox = outbox
        self.redactor = redactor
        self.priority = priority
        self.topics = topics

    async def send(
        self,
        chat_id: int,
        reply: Reply,
        *,
        thread_id: int | None = None,
        ref: int | None = None,
        reply_to: int | None = None,
        once: bool = False,
        claim: Awaitable[bool] | None = None,
        priority: Priority | None = None,
    ) -> int:
        """Queue a message; ``ref`` (from ``Outbox.new_ref``) when the caller stored it first;
        ``reply_to``: the Telegram message id of the command it answers; ``once`` and
        ``claim``: see ``Outbox.send``; ``priority``: default this notifier's."""
        reply = reply.redacted(self.redactor)
        return await self.outbox.send(
            chat_id, reply, thread_id=thread_id,
            priority=self.priority if priority is None else priority, ref=ref,
            reply_to=reply_to, once=once, claim=claim,
        )  # fmt: skip

    async def edit(
        self,
        chat_id: int,
        message_id: int,
        reply: Reply,
        *,
        priority: Priority | None = None,
        stamp: int | None = None,
    ) -> None:
        """Queue the message's newest text (at ``priority``, default this notifier's)."""
        reply = reply.redacted(self.redactor)
        if reply.document is not None:  # a message cannot become a document: send it anew
            await self.send(chat_id, reply)
            return
        await self.outbox.edit(chat_id, message_id, replace(reply, request_id=None),
                               priority=self.priority if priority is None else priority,
                               stamp=stamp)  # fmt: skip

    async def landed(self, ref: int, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until the message ``ref`` was delivered (by this
        replica's worker; another's delivery is seen once ``timeout`` is up); True once it was.
        """
        outbox = self.outbox
        event = outbox.landing.setdefault(ref, asyncio.Event())
        try:
            if await outbox.message_id(ref) is not None:
                return True
            async with asyncio.timeout(timeout):
                await event.wait()
            return True
        except TimeoutError:
            return await outbox.message_id(ref) is not None
        finally:
            outbox.landing.pop(ref, None)

    async def edit_message(self, chat_id: int, message_id: int, reply: Reply) -> None:
        """Edit a message known by its Telegram id (the one a button was tapped on)."""
        reply = reply.redacted(self.redactor)
        await self.outbox.edit_message(chat_id, message_id, reply, priority=self.priority)

    async def pin(self, chat_id: int, message_id: int, *, pinned: bool = True) -> None:
        await self.outbox.pin(chat_id, message_id, priority=self.priority, pinned=pinned)

    async def create_topic(self, chat_id: int, name: str) -> int | None:
        """Topics are made directly (the caller needs the thread id to post in it), within
        the group's pace like everything else, as a reply (a person declared the incident)."""
        if self.topics is None:
            return None
        await self.outbox.pace.wait(chat_id, Priority.reply)
        return await self.topics(chat_id, name)


async def edit_at(
    notifier: Notifier, chat_id: int, message_id: int, reply: Reply, priority: Priority
) -> None:
    """Edit a message at ``priority`` when ``notifier`` is the outbox (a progress edit gives
    way, a final state goes ahead of it); any other notifier has no pace: a plain edit."""
    if isinstance(notifier, OutboxNotifier):
        await notifier.edit(chat_id, message_id, reply, priority=priority)
    else:
        await notifier.edit(chat_id, message_id, reply)
