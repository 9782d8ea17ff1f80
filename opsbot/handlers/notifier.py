"""The Telegram implementation of the Notifier port."""

from __future__ import annotations

import logging

from telegram import Bot
from telegram.error import BadRequest, TelegramError

from opsbot.handlers.reply import edit_text, send_reply
from opsbot.redact import Redactor
from opsbot.render import Reply

log = logging.getLogger(__name__)


class TelegramNotifier:
    """Sends through the bot; every reply is redacted first, like the command replies."""

    def __init__(self, bot: Bot, redactor: Redactor) -> None:
        self.bot = bot
        self.redactor = redactor

    async def send(
        self,
        chat_id: int,
        reply: Reply,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        reply = reply.redacted(self.redactor)
        message = await send_reply(
            self.bot, chat_id, reply, thread_id=thread_id, reply_to=reply_to
        )
        return message.message_id

    async def edit(self, chat_id: int, message_id: int, reply: Reply) -> None:
        reply = reply.redacted(self.redactor)
        try:
            await edit_text(self.bot, chat_id, message_id, reply)
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise

    async def pin(self, chat_id: int, message_id: int, *, pinned: bool = True) -> None:
        try:
            if not pinned:
                await self.bot.unpin_chat_message(chat_id, message_id)
                return
            await self.bot.pin_chat_message(chat_id, message_id, disable_notification=True)
        except TelegramError as exc:  # e.g. not an admin of the chat: the card still works
            log.warning("could not pin message %s in %s: %s", message_id, chat_id, exc)

    async def create_topic(self, chat_id: int, name: str) -> int | None:
        try:
            topic = await self.bot.create_forum_topic(chat_id, self.redactor.redact(name)[:128])
        except TelegramError as exc:  # not a forum, or no right to manage topics
            log.info("no forum topic in %s (%s): posting in the chat", chat_id, exc)
            return None
        return topic.message_thread_id
