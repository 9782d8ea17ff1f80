"""The fake Bot API, driven by the real python-telegram-bot client and a real Application."""

from __future__ import annotations

import asyncio
import datetime as dtm
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import httpx
import pytest
from telegram import (
    Bot,
    BotCommand,
    BotCommandScopeChat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InputFile,
    Update,
)
from telegram.constants import ParseMode
from telegram.error import BadRequest, Conflict, EndPointNotFound, InvalidToken, RetryAfter
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
)

from tests.fakebotapi import Chat, FakeBotAPI, TelegramAPIError, User, parse_html

TOKEN = "123456:TEST-opsbot"
ADMIN = User(42, "Ada", username="ada")
PRIVATE = Chat(42, "private", title="Ada")
GROUP = Chat(-1001234, "supergroup", title="ops")
FORUM = Chat(-1005678, "supergroup", title="incidents", is_forum=True)


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    with FakeBotAPI() as server:
        server.add_bot(TOKEN, "opsbot_test_bot", first_name="OpsBot")
        yield server


@asynccontextmanager
async def client(fake: FakeBotAPI, token: str = TOKEN) -> AsyncIterator[Bot]:
    async with Bot(token, base_url=fake.bot_base_url, base_file_url=fake.bot_base_file_url) as bot:
        yield bot


@asynccontextmanager
async def running(app: Application) -> AsyncIterator[Application]:  # type: ignore[type-arg]
    await app.initialize()
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    try:
        yield app
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()


def build_app(fake: FakeBotAPI) -> Application:  # type: ignore[type-arg]
    return ApplicationBuilder().token(TOKEN).base_url(fake.bot_base_url).build()


async def test_get_me_and_case_insensitive_methods(fake: FakeBotAPI) -> None:
    async with client(fake) as bot:
        assert bot.username == "opsbot_test_bot"
        assert bot.id == 123456
        assert await bot.do_api_request("GETME") is not None
    assert [c.method for c in fake.calls] == ["getMe", "getMe"]


async def test_application_answers_ping(fake: FakeBotAPI) -> None:
    async def ping(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.effective_message is not None
        await update.effective_message.reply_text("pong")

    app = build_app(fake)
    app.add_handler(CommandHandler("ping", ping))
    async with running(app):
        sent = fake.send_text(TOKEN, GROUP, ADMIN, "/ping@opsbot_test_bot")
        reply = await fake.wait_for_message(GROUP.id, lambda m: m.text == "pong", timeout=5)
    assert reply.message_id > sent["message_id"]
    assert reply.from_bot and reply.bot_token == TOKEN
    assert fake.messages(GROUP.id)[0].text == "/ping@opsbot_test_bot"
    assert fake.too_many_requests == []
    assert fake.pending_updates(TOKEN) == []  # confirmed by the updater's offset


async def test_send_document_round_trips_bytes_and_name(fake: FakeBotAPI) -> None:
    data = bytes(range(256)) * 40 + b"\r\n--boundary\r\n\x00end"
    async with client(fake) as bot:
        msg = await bot.send_document(
            PRIVATE.id,
            InputFile(data, filename="отчёт 2024.log"),
            caption="<b>бэкап</b> готов",
            parse_mode=ParseMode.HTML,
        )
        assert msg.document is not None
        assert msg.document.file_name == "отчёт 2024.log"
        assert msg.document.file_size == len(data)
        assert msg.caption == "бэкап готов"
        file = await bot.get_file(msg.document.file_id)
        assert bytes(await file.download_as_bytearray()) == data
    (stored,) = fake.bot_messages(PRIVATE.id)
    assert stored.document_bytes == data
    assert stored.document_name == "отчёт 2024.log"
    call = fake.calls_to("sendDocument")[0]
    assert call.params["chat_id"] == PRIVATE.id  # the multipart text field, decoded


async def test_edit_that_changes_nothing_is_a_bad_request(fake: FakeBotAPI) -> None:
    keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Restart", callback_data="r:api")]])
    async with client(fake) as bot:
        msg = await bot.send_message(GROUP.id, "deploying", reply_markup=keyboard)
        await bot.edit_message_text("deployed", GROUP.id, msg.message_id, reply_markup=keyboard)
        with pytest.raises(BadRequest, match="not modified"):
            await bot.edit_message_text(
                "deployed", GROUP.id, msg.message_id, reply_markup=keyboard
            )
        # Without reply_markup Telegram drops the keyboard: that is a modification.
        await bot.edit_message_text("deployed", GROUP.id, msg.message_id)
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await bot.edit_message_text("x", GROUP.id, 9999)
    current = fake.message(GROUP.id, msg.message_id)
    assert current is not None
    assert (current.text, current.edits, current.reply_markup) == ("deployed", 2, None)
    assert current.history == ["deploying", "deployed", "deployed"]


async def test_text_limits(fake: FakeBotAPI) -> None:
    async with client(fake) as bot:
        await bot.send_message(PRIVATE.id, "x" * 4096)
        with pytest.raises(BadRequest, match="Message is too long"):
            await bot.send_message(PRIVATE.id, "x" * 4097)
        # The limit counts the text after HTML parsing.
        await bot.send_message(PRIVATE.id, f"<b>{'x' * 4096}</b>", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match="Message text is empty"):
            await bot.send_message(PRIVATE.id, "  ")


async def test_html_and_button_data_checks(fake: FakeBotAPI) -> None:
    async with client(fake) as bot:
        ok = await bot.send_message(
            PRIVATE.id, "<b>api</b> &lt;down&gt; <code>503</code>", parse_mode="HTML"
        )
        assert ok.text == "api <down> 503"
        assert [(e.type, e.offset, e.length) for e in ok.entities] == [
            ("bold", 0, 3),
            ("code", 11, 3),
        ]
        for bad in ("<b>open", "a < b", "AT&T", "<div>x</div>", "<b><i>x</b></i>"):
            with pytest.raises(BadRequest, match="parse entities"):
                await bot.send_message(PRIVATE.id, bad, parse_mode=ParseMode.HTML)
        too_long = InlineKeyboardMarkup([[InlineKeyboardButton("x", callback_data="d" * 65)]])
        with pytest.raises(BadRequest, match="Button_data_invalid"):
            await bot.send_message(PRIVATE.id, "pick", reply_markup=too_long)
        with pytest.raises(BadRequest, match="reserved"):
            await bot.send_message(PRIVATE.id, "v1.2 ok", parse_mode=ParseMode.MARKDOWN_V2)
    assert fake.bot_messages(PRIVATE.id)[0].text == "api <down> 503"


def test_parse_html_counts_utf16_offsets() -> None:
    text, entities = parse_html('🔥 <a href="https://x.io/?a=1&amp;b=2">link</a> <i>ok</i>')
    assert text == "🔥 link ok"
    assert entities == [
        {"type": "text_link", "url": "https://x.io/?a=1&b=2", "offset": 3, "length": 4},
        {"type": "italic", "offset": 8, "length": 2},
    ]
    with pytest.raises(TelegramAPIError, match='end tag corresponding to start tag "pre"'):
        parse_html("<pre>x")


async def test_group_flood_limit_answers_retry_after(
    fake: FakeBotAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without it PTB 22 warns (PTBDeprecationWarning, an error here) building RetryAfter.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")
    async with client(fake) as bot:
        for i in range(20):
            await bot.send_message(GROUP.id, f"alert {i}")
        with pytest.raises(RetryAfter) as caught:
            await bot.send_message(GROUP.id, "alert 21")
        await bot.send_message(PRIVATE.id, "private chats are not limited by default")
    assert caught.value.retry_after == dtm.timedelta(seconds=60)
    (hit,) = fake.too_many_requests
    assert (hit.method, hit.chat_id, hit.retry_after) == ("sendMessage", GROUP.id, 60)
    assert len(fake.bot_messages(GROUP.id)) == 20


async def test_callback_query_reaches_handler_and_is_answered(fake: FakeBotAPI) -> None:
    async def on_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        assert query is not None and query.message is not None
        await query.answer(f"restarting {query.data}")
        await query.edit_message_text(f"restart requested by {query.from_user.first_name}")

    app = build_app(fake)
    app.add_handler(CallbackQueryHandler(on_button))
    async with running(app):
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton("Restart", callback_data="api")]])
        msg = await app.bot.send_message(GROUP.id, "api is down", reply_markup=keyboard)
        query_id = fake.tap_button(TOKEN, GROUP, ADMIN, msg.message_id, "api")
        await fake.wait_for_call("answerCallbackQuery")
        edited = await fake.wait_for_message(GROUP.id, lambda m: m.edits == 1)
    assert fake.answers(query_id) == {"text": "restarting api", "show_alert": False}
    assert edited.text == "restart requested by Ada"
    with pytest.raises(ValueError, match="no button"):
        fake.tap_button(TOKEN, GROUP, ADMIN, msg.message_id, "forged")


async def test_unknown_token_and_unknown_method(fake: FakeBotAPI) -> None:
    with pytest.raises(InvalidToken):
        async with client(fake, token="999:nope"):
            pass
    async with client(fake) as bot:
        with pytest.raises(EndPointNotFound):
            await bot.do_api_request("noSuchMethod")
    assert fake.calls[0].token == "999:nope"


async def test_webhook_info_via_ptb_and_plain_httpx(fake: FakeBotAPI) -> None:
    fake.set_webhook_info(
        TOKEN,
        url="https://hooks.example/tg",
        pending_update_count=7,
        last_error_date=1_700_000_000,
        last_error_message="Connection refused",
    )
    async with client(fake) as bot:
        info = await bot.get_webhook_info()
        assert (info.url, info.pending_update_count) == ("https://hooks.example/tg", 7)
        assert info.last_error_message == "Connection refused"
        with pytest.raises(Conflict, match="webhook is active"):
            await bot.get_updates()
    async with httpx.AsyncClient(base_url=fake.url) as http:
        answer = (await http.get(f"/bot{TOKEN}/getwebhookinfo")).json()
        assert answer["ok"] is True
        assert answer["result"]["pending_update_count"] == 7
        assert answer["result"]["last_error_date"] == 1_700_000_000
        sent = await http.post(f"/bot{TOKEN}/sendMessage", json={"chat_id": 42, "text": "hi"})
        assert sent.json()["result"]["chat"] == {
            "id": 42,
            "type": "private",
            "first_name": "User 42",
        }
        missing = await http.get("/nothing/here")
        assert (missing.status_code, missing.json()["error_code"]) == (404, 404)


async def test_long_poll_delivers_injected_update_and_conflicts(fake: FakeBotAPI) -> None:
    async with client(fake) as bot:
        poll = asyncio.create_task(bot.get_updates(timeout=5))
        await asyncio.sleep(0.1)
        assert not poll.done()
        fake.send_text(TOKEN, PRIVATE, ADMIN, "/logs api 50")
        (update,) = await asyncio.wait_for(poll, 2)
        assert update.message is not None and update.message.text == "/logs api 50"
        assert update.message.entities[0].type == "bot_command"
        assert update.message.entities[0].length == len("/logs")
        assert await bot.get_updates(offset=update.update_id + 1, timeout=0) == ()
        fake.set_other_poller(TOKEN)
        with pytest.raises(Conflict, match="only one bot instance"):
            await bot.get_updates(timeout=0)


async def test_commands_topics_pins_reactions(fake: FakeBotAPI) -> None:
    fake.add_chat(FORUM)
    async with client(fake) as bot:
        await bot.set_my_commands([BotCommand("health", "Health of all targets")])
        await bot.set_my_commands(
            [BotCommand("restart", "Restart a service")], scope=BotCommandScopeChat(GROUP.id)
        )
        assert [c.command for c in await bot.get_my_commands()] == ["health"]
        topic = await bot.create_forum_topic(FORUM.id, "INC-1 api down")
        msg = await bot.send_message(
            FORUM.id, "timeline", message_thread_id=topic.message_thread_id
        )
        await bot.pin_chat_message(FORUM.id, msg.message_id)
        await bot.set_message_reaction(FORUM.id, msg.message_id, "👀")
        await bot.close_forum_topic(FORUM.id, topic.message_thread_id)
        with pytest.raises(BadRequest, match="Topic_not_modified"):
            await bot.close_forum_topic(FORUM.id, topic.message_thread_id)
        with pytest.raises(BadRequest, match="not a forum"):
            await bot.create_forum_topic(GROUP.id, "nope")
        member = await bot.get_chat_member(FORUM.id, ADMIN.id)
        assert member.status == "administrator"
        chat = await bot.get_chat(FORUM.id)
        assert chat.is_forum and chat.title == "incidents"
    commands = fake.commands(TOKEN)
    assert commands[fake.scope_key()][0]["command"] == "health"
    scope = fake.scope_key({"type": "chat", "chat_id": GROUP.id})
    assert commands[scope] == [{"command": "restart", "description": "Restart a service"}]
    stored = fake.message(FORUM.id, msg.message_id)
    assert stored is not None and stored.pinned and stored.thread_id == topic.message_thread_id
    assert stored.reactions == [{"type": "emoji", "emoji": "👀"}]
    assert fake.topics(FORUM.id)[topic.message_thread_id].closed


async def test_wait_for_message_times_out_with_a_useful_dump(fake: FakeBotAPI) -> None:
    fake.send_text(TOKEN, PRIVATE, ADMIN, "/health")
    with pytest.raises(AssertionError, match=r"no matching bot message(.|\n)*'/health'"):
        await fake.wait_for_message(PRIVATE.id, timeout=0.05)
    with pytest.raises(ValueError, match="add_bot"):
        fake.send_text("0:unknown", PRIVATE, ADMIN, "hi")
