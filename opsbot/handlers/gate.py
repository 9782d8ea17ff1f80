"""The one gate every update passes before any handler runs (handler group -1).

It admits an update only when it comes from a known person in an allowed chat: the ops chat,
the incident chat, or (if enabled) a known person's private chat. Everything else, messages,
edits, channel posts, button taps and inline queries alike, is stopped here: nothing runs, the
refusal is audited, and the sender gets at most one short refusal per interval.
"""

from __future__ import annotations

import logging
import time

from telegram import Chat, Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from opsbot.config import Person
from opsbot.services import Services

log = logging.getLogger(__name__)

REFUSAL = "⛔ Not authorized. This bot only answers its team."


class Gate:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._last_refusal: dict[tuple[int, int], float] = {}

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
            return
        await self._refuse(update)
        raise ApplicationHandlerStop

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
            await query.answer(None if quiet else REFUSAL)
        elif message is not None and not quiet:
            await message.reply_text(REFUSAL)
        elif update.inline_query is not None:
            await update.inline_query.answer([], cache_time=60, is_personal=True)


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
