"""The Telegram implementation of the Notifier port."""

from __future__ import annotations

from telegram import Bot
from telegram.constants import ParseMode
from telegram.error import BadRequest

from opsbot.handlers.reply import keyboard, send_reply, to_html
from opsbot.render import Reply


class TelegramNotifier:
    def __init__(self, bot: Bot) -> None:
        self.bot = bot

    async def send(self, chat_id: int, reply: Reply, *, thread_id: int | None = None) -> int:
        message = await send_reply(self.bot, chat_id, reply, thread_id=thread_id)
        return message.message_id

    async def edit(self, chat_id: int, message_id: int, reply: Reply) -> None:
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
