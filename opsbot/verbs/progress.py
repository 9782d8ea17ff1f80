"""Progress of a long command: one message, edited in place, replaced by the final answer.

A verb reports progress through a ``ProgressSink`` (a plain callback taking a ``Reply``; the
latest one wins), so the verbs stay Telegram-free. ``ProgressMessage`` is the sink the chat
uses: it posts the first progress reply through the ``Notifier`` port, edits it at most every
``interval`` seconds (1 s in a private chat, 3 s in a group) with the latest state (never
blocking the verb), and ``finish`` edits it one last time with the final reply, so the last
state is always shown. In a group's pace the progress edits are the first to give way
(``Priority.progress``: a queued one is replaced by the next); the final reply is the
command's answer and goes as a reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from opsbot.notify import Notifier
from opsbot.render import Reply
from opsbot.state.outbox_notifier import OutboxNotifier, edit_at
from opsbot.state.pace import Priority

log = logging.getLogger(__name__)


class ProgressMessage:
    """A progress message in one chat (and topic), driven by a background task."""

    def __init__(
        self,
        notifier: Notifier,
        chat_id: int,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        interval: float | None = None,
    ) -> None:
        self.notifier = notifier
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.reply_to = reply_to  # the command's message: the progress answers it
        # Edits count against Telegram's ~20 messages a minute per group: slower there.
        self.interval = interval if interval is not None else (1.0 if chat_id > 0 else 3.0)
        self.message_id: int | None = None
        self._latest: Reply | None = None
        self._wake = asyncio.Event()
        self._sent = asyncio.Event()  # the first message was queued (or failed to be)
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def update(self, reply: Reply) -> None:
        """The latest progress (a ``ProgressSink``): shown as soon as the pacing allows."""
        if self._closing.is_set():
            return
        self._latest = reply
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._pump(), name="opsbot-progress")

    async def shown(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until the first progress message is in the chat
        (delivered by this replica's outbox worker); True once it is. A verb about to keep
        the event loop busy (a fleet's checks) waits for it first, so the chat hears at once.
        """
        loop = asyncio.get_running_loop()
        until = loop.time() + timeout
        try:
            async with asyncio.timeout(timeout):
                await self._sent.wait()
        except TimeoutError:
            return False
        if self.message_id is None:
            return False
        if not isinstance(self.notifier, OutboxNotifier):
            return True  # sent straight away (a notifier without an outbox)
        return await self.notifier.landed(self.message_id, max(0.0, until - loop.time()))

    async def finish(self, reply: Reply) -> int | None:
        """Show ``reply`` in place of the progress; its message id, or None when no progress
        message exists (then the caller sends ``reply`` as a new message)."""
        self._closing.set()
        self._wake.set()
        if self._task is None:
            return None
        await self._task  # an edit already on its way lands before the final one
        if self.message_id is None:
            return None
        if reply.document is not None:  # a message cannot become a document: the caller
            await self.notifier.edit(self.chat_id, self.message_id, Reply(reply.text))
            return None  # sends it, and no "⏳" state is left behind
        await edit_at(self.notifier, self.chat_id, self.message_id, reply, Priority.reply)
        return self.message_id

    def cancel(self) -> None:
        """Stop updating (the command failed; its error is reported elsewhere)."""
        self._closing.set()
        if self._task is not None:
            self._task.cancel()

    async def _pump(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return  # finish() shows the final state; a late first message is not needed
            reply = self._latest
            assert reply is not None
            try:
                if self.message_id is None:
                    self.message_id = await self.notifier.send(
                        self.chat_id, reply, thread_id=self.thread_id, reply_to=self.reply_to
                    )
                else:
                    await edit_at(self.notifier, self.chat_id, self.message_id, reply,
                                  Priority.progress)  # fmt: skip
            except Exception as exc:  # progress is a courtesy: the command goes on regardless
                log.warning("progress message in %s not updated: %s", self.chat_id, exc)
            self._sent.set()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._closing.wait()
