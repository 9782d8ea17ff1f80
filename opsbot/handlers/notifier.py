"""The Telegram implementation of the Notifier port."""

from __future__ import annotations

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import BadRequest

from opsbot.handlers.reply import keyboard, send_reply, to_html
from opsbot.redact import Redactor
from opsbot.render import Reply


class TelegramNotifier:
    """Sends through the bot; every reply is redacted first, like the command replies."""

    def __init__(self, bot: Bot, redactor: Redactor) -> None:
        self.bot = bot
        self.redactor = redactor

    async def send(self, chat_id: int, reply: Reply, *, thread_id: int | None = None) -> int:
        reply = reply.redacted(self.redactor)
        message = await send_reply(self.bot, chat_id, reply, thread_id=thread_id)
        return message.message_id

    async def edit(self, chat_id: int, message_id: int, reply: Reply) -> None:
        reply = reply.redacted(self.redactor)
        try:
            await self.bot.edit_message_text(
                to_html(reply),
                chat_id=chat_id,
                message_id=message_id,
                parse_mode=ParseMode.HTML,
                reply_markup=keyboard(reply),
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
