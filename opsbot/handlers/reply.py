"""Turning a ``Reply`` into Telegram messages: HTML text, a <pre> block, buttons, documents."""

from __future__ import annotations

import html
from dataclasses import replace

from telegram import (
    Bot,
    ForceReply,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    InputMediaPhoto,
    Message,
    ReplyParameters,
)
from telegram.constants import ParseMode

from opsbot.render import Reply, button_rows


def to_html(reply: Reply) -> str:
    text = html.escape(reply.text)
    if reply.block:
        text += f"\n<pre>{html.escape(reply.block)}</pre>"
    return text


def keyboard(reply: Reply) -> InlineKeyboardMarkup | None:
    if not reply.buttons:
        return None
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(b.label, url=b.data)
                if b.is_link
                else InlineKeyboardButton(b.label, callback_data=b.data)
                for b in row
            ]
            for row in button_rows(reply.buttons)
        ]
    )


#: Telegram's limit on a ForceReply's input field placeholder.
PLACEHOLDER_CHARS = 64
#: Telegram's limit on a caption (its text once the HTML is parsed away).
MAX_CAPTION = 1024


def new_message_markup(reply: Reply) -> InlineKeyboardMarkup | ForceReply | None:
    """A new message's markup: a prompt asks the person it answers to reply (``selective``:
    only them, not the whole group), anything else gets its buttons."""
    if reply.prompt is not None:
        return ForceReply(selective=True, input_field_placeholder=reply.prompt[:PLACEHOLDER_CHARS])
    return keyboard(reply)


async def send_reply(
    bot: Bot,
    chat_id: int,
    reply: Reply,
    *,
    thread_id: int | None = None,
    reply_to: int | None = None,
) -> Message:
    """Send a reply: as a document when it carries one, else as one HTML message; a photo
    with the message as its caption (one message), or, when that is over Telegram's 1,024
    characters, the photo and then the message (which is returned: it has the buttons).

    ``reply_to`` threads it to that message; if the message is gone it is sent all the same."""
    answering = (
        ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
    )
    if reply.document is not None and reply.document.photo:
        html_text = to_html(reply)
        fits = fits_caption(reply)
        photo = await bot.send_photo(
            chat_id,
            InputFile(reply.document.content, filename=reply.document.filename),
            caption=html_text if fits else None,
            parse_mode=ParseMode.HTML if fits else None,
            message_thread_id=thread_id,
            reply_markup=new_message_markup(reply) if fits else None,
            reply_parameters=answering,
        )
        if fits:
            return photo
        reply = replace(reply, document=None)
    if reply.document is not None:
        return await bot.send_document(
            chat_id,
            InputFile(reply.document.content, filename=reply.document.filename),
            caption=reply.text[:1024],
            message_thread_id=thread_id,
            reply_markup=new_message_markup(reply),
            reply_parameters=answering,
        )
    return await bot.send_message(
        chat_id,
        to_html(reply),
        parse_mode=ParseMode.HTML,
        message_thread_id=thread_id,
        reply_markup=new_message_markup(reply),
        reply_parameters=answering,
    )


def fits_caption(reply: Reply) -> bool:
    """Whether the reply's text fits under a photo (Telegram's 1,024 characters)."""
    return len(reply.text) + (len(reply.block) + 1 if reply.block else 0) <= MAX_CAPTION


async def edit_text(bot: Bot, chat_id: int, message_id: int, reply: Reply) -> None:
    """A text message rewritten in place: the reply's HTML and its buttons."""
    await bot.edit_message_text(
        to_html(reply),
        chat_id=chat_id,
        message_id=message_id,
        parse_mode=ParseMode.HTML,
        reply_markup=keyboard(reply),
    )


async def edit_photo(bot: Bot, chat_id: int, message_id: int, reply: Reply) -> None:
    """A photo message refreshed in place: the new picture with the reply as its caption and
    buttons (``editMessageMedia``), where ``send_reply`` would post a new photo."""
    assert reply.document is not None and reply.document.photo and fits_caption(reply)
    # the bytes themselves (not an InputFile): PTB then attaches them as attach://NAME
    media = InputMediaPhoto(reply.document.content, filename=reply.document.filename,
                            caption=to_html(reply), parse_mode=ParseMode.HTML)  # fmt: skip
    await bot.edit_message_media(
        media, chat_id=chat_id, message_id=message_id, reply_markup=keyboard(reply)
    )
