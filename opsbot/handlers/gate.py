"""The one gate every update passes before any handler runs (handler group -1).

It admits an update only when it comes from a known person in an allowed chat: the ops chat,
the incident chat, or (if enabled) a known person's private chat. Everything else, messages,
edits, channel posts, button taps and inline queries alike, is stopped here: nothing runs, the
refusal is audited, and the sender gets at most one short refusal per interval.

A command older than ``telegram.max_update_age`` (typed while opsbot or the network was down)
is not run either: the sender is told once, and it is counted. Button taps are not aged: a tap
on an old card is a fresh decision (the approval itself expires on its own clock).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from telegram import Chat, Message, Update
from telegram.error import TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from opsbot.config import Person
from opsbot.render import Reply, ago
from opsbot.services import Services

log = logging.getLogger(__name__)

REFUSAL = "⛔ Not authorized. This bot only answers its team."
STALE_NOTICE_INTERVAL = 60.0  # one "ignored" notice per sender and chat per backlog


class Gate:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._last_refusal: dict[tuple[int, int], float] = {}
        self._last_stale: dict[tuple[int, int], float] = {}

    def admitted(self, update: Update) -> Person | None:
        """The person behind an update, if they may use opsbot where they are."""
        settings = self.services.settings
        person = settings.person(update.effective_user.id if update.effective_user else None)
        chat = update.effective_chat
        if person is None or chat is None:
            return None
        if chat.id in settings.telegram.chat_ids:
            return person
        private = chat.type == Chat.PRIVATE and chat.id == person.id
        return person if private and settings.telegram.allow_private_chats else None

    async def __call__(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.edited_message or update.edited_channel_post:
            # Editing a message never re-runs a command.
            raise ApplicationHandlerStop
        if update.message and not _addressed_to_us(update, context.bot.username):
            raise ApplicationHandlerStop
        if update.message and update.message.forward_origin is not None:
            # A forwarded command was written by someone else, for another moment: never run.
            raise ApplicationHandlerStop
        if self.admitted(update) is not None and update.inline_query is None:
            if await self._stale(update):
                raise ApplicationHandlerStop
            return
        await self._refuse(update)
        raise ApplicationHandlerStop

    async def _stale(self, update: Update) -> bool:
        """A command older than max_update_age: not run; the sender is told once."""
        message, limit = update.message, self.services.settings.telegram.max_update_age
        if message is None or not (message.text or "").startswith("/") or limit <= 0:
            return False
        age = (datetime.now(UTC) - message.date).total_seconds()
        if age <= limit:
            return False
        self.services.metrics.updates_stale_total.inc()
        user = update.effective_user
        command = message.text.split(maxsplit=1)[0] if message.text else ""
        log.info("stale command %s (%.0f s old) not run", command, age)
        await self.services.audit.record(
            "stale", user=user.id if user else None, chat=message.chat_id, command=command,
            age=round(age),
        )  # fmt: skip
        key = (user.id if user else 0, message.chat_id)
        now = time.monotonic()
        if now - self._last_stale.get(key, -1e9) < STALE_NOTICE_INTERVAL:
            return True  # one notice for a whole backlog of stale commands
        self._last_stale[key] = now
        notice = Reply(
            text=f"⏳ Ignored: {command} was sent {ago(age)} while opsbot was unreachable. "
            "Send it again if you still want it."
        )
        await self.services.notifier().send(
            message.chat_id, notice, thread_id=_thread(message), reply_to=message.message_id
        )
        return True

    async def _refuse(self, update: Update) -> None:
        user, chat = update.effective_user, update.effective_chat
        message, query = update.message, update.callback_query
        if message is not None and not (message.text or "").startswith("/"):
            return  # ordinary chatter in a shared group: not a request, nothing to refuse
        kind = "button" if query else "message" if message else _kind(update)
        await self.services.audit.record(
            "refused",
            user=user.id if user else None,
            username=user.username if user else None,
            chat=chat.id if chat else None,
            kind=kind,
            text=self.services.redactor.redact(message.text or "")[:64] if message else None,
        )
        key = (user.id if user else 0, chat.id if chat else 0)
        now = time.monotonic()
        quiet = (
            now - self._last_refusal.get(key, -1e9)
            < self.services.settings.telegram.refusal_interval
        )
        if not quiet:
            self._last_refusal[key] = now
        if query is not None:
            try:  # a toast is ephemeral: its failure (query too old, 5xx) changes nothing
                await query.answer(None if quiet else REFUSAL)
            except TelegramError as exc:
                log.info("refusal toast not shown: %s", exc)
        elif message is not None and not quiet:
            thread = _thread(message)
            await self.services.notifier().send(
                message.chat_id, Reply(REFUSAL), thread_id=thread, reply_to=message.message_id
            )
        elif update.inline_query is not None:
            await update.inline_query.answer([], cache_time=60, is_personal=True)


def _thread(message: Message) -> int | None:
    return message.message_thread_id if message.is_topic_message else None


def _addressed_to_us(update: Update, username: str) -> bool:
    """``/cmd@OtherBot`` is for another bot; ``/cmd`` and ``/cmd@Us`` are for us."""
    text = update.message.text if update.message else None
    if not text or not text.startswith("/"):
        return True
    first = text.split(maxsplit=1)[0]
    return "@" not in first or first.split("@", 1)[1].lower() == username.lower()


def _kind(update: Update) -> str:
    for kind in ("channel_post", "inline_query", "chosen_inline_result", "poll", "my_chat_member"):
        if getattr(update, kind, None) is not None:
            return kind
    return "other"
