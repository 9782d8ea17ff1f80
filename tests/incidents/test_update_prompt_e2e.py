"""The incident card's ✏️ Update button end to end: the tap posts a ForceReply prompt; a
reply to it becomes ``/incident update ID TEXT`` (role, audit, redaction), also after a
restart of opsbot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from opsbot.state import prompts
from tests.factories import (
    ALICE,
    INCIDENTS,
    OPSBOT_TOKEN,
    OSCAR,
    VIC,
    ChatSession,
    fake_fixture,
    running_opsbot,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage, User
from tests.incidents.test_incidents_e2e import FORUM, card_of, settings_for

fake = fake_fixture(FORUM, group_per_minute=None)


async def noted_by_opsbot(chat: ChatSession, prompt: FakeMessage, timeout: float = 10) -> None:
    """Wait until opsbot has noted the prompt's message id, which it learns from the Bot
    API's answer just after the message shows here: a person takes seconds to reply, a test
    does not."""
    deadline = time.monotonic() + timeout
    store = chat.services.store
    while await prompts.answering(store, prompt.chat_id, prompt.message_id) is None:
        assert time.monotonic() < deadline, "opsbot never noted the prompt it sent"
        await asyncio.sleep(0.02)


async def reply_to(chat: ChatSession, prompt: FakeMessage, user: User, text: str) -> FakeMessage:
    """``user`` replies to the prompt in its topic; opsbot's answer to that reply."""
    sent = chat.fake.send_text(OPSBOT_TOKEN, FORUM, user, text, prompt.thread_id,
                               reply_to_message_id=prompt.message_id)  # fmt: skip
    return await chat.fake.wait_for_message(
        INCIDENTS.id, after_message_id=sent["message_id"], token=OPSBOT_TOKEN
    )


async def update_commands(chat: ChatSession) -> list[dict[str, Any]]:
    entries = await chat.services.audit.entries(None, 10_000)
    return [e for e in entries if e["event"] == "command" and e.get("args", [""])[0] == "update"]


async def test_the_update_button_asks_and_the_reply_updates_across_a_restart(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    async with running_opsbot(fake, settings) as chat:
        await chat.ask("/incident P1 payments failing payments", user=ALICE)
        card = await fake.wait_for_message(INCIDENTS.id, lambda m: m.pinned)
        steps = {b["text"]: b["callback_data"]
                 for row in (card.reply_markup or {})["inline_keyboard"] for b in row}
        assert steps["✏️ Update"] == "iu:INC-1"

        chat.tap(card, steps["✏️ Update"], user=OSCAR, chat=FORUM)
        prompt = await fake.wait_for_message(
            INCIDENTS.id, lambda m: "Update for INC-1" in (m.text or "")
        )
        assert prompt.text == "✏️ @oscar Update for INC-1 — reply to this message with the text."
        assert prompt.reply_to_message_id == card.message_id
        assert prompt.thread_id == card.thread_id
        assert prompt.reply_markup == {"force_reply": True, "selective": True,
                                       "input_field_placeholder": "What changed in INC-1?"}
        await noted_by_opsbot(chat, prompt)

        answer = await reply_to(
            chat, prompt, OSCAR, "failover to the standby done, db password=hunter2hunter2"
        )
        assert answer.text == "📝 INC-1 updated."
        shown = await fake.wait_for_message(
            INCIDENTS.id,
            lambda m: m.message_id == card.message_id and "failover" in (m.text or ""),
        )
        assert shown.text is not None
        assert "oscar · update — failover to the standby done" in shown.text
        assert "hunter2hunter2" not in shown.text
        (entry,) = await update_commands(chat)  # audited once, as the command
        assert entry["who"] == "oscar" and entry["verb"] == "incident"
        assert entry["args"][:3] == ["update", "INC-1", "failover"]
        assert "hunter2hunter2" not in str(entry) and entry["outcome"] == "ok"

        # a viewer's reply is refused like the typed command, and changes nothing
        refused = await reply_to(chat, prompt, VIC, "vic was here")
        assert refused.text is not None and "needs the operator role" in refused.text
        assert "vic was here" not in (card_of(chat).text or "")

        # a reply without text changes nothing and says so
        empty = await reply_to(chat, prompt, OSCAR, "   ")
        assert empty.text is not None and empty.text.startswith("Nothing changed")
        assert len(await update_commands(chat)) == 2  # oscar's and vic's refused one

    # opsbot restarts: the prompt is still known (the store), a reply still updates.
    async with running_opsbot(fake, settings) as chat:
        answer = await reply_to(chat, prompt, OSCAR, "standby holding steady")
        assert answer.text == "📝 INC-1 updated."
        await fake.wait_for_message(
            INCIDENTS.id,
            lambda m: m.message_id == card.message_id and "standby holding" in (m.text or ""),
        )
        await chat.ask("/incident resolve INC-1 provider outage", user=ALICE, chat=FORUM)
        late = await reply_to(chat, prompt, OSCAR, "one more thing")
        assert late.text is not None and "INC-1 is resolved and cannot be updated" in late.text
        resolved = card_of(chat)
        assert "one more thing" not in (resolved.text or "")
        labels = {b["text"] for row in (resolved.reply_markup or {})["inline_keyboard"]
                  for b in row}  # fmt: skip
        assert labels == {"🔥 Reopen"}  # no Update on a resolved card


async def test_a_viewer_cannot_open_the_prompt(fake: FakeBotAPI, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path)
    async with running_opsbot(fake, settings) as chat:
        await chat.ask("/incident P2 slow checkout", user=ALICE)
        card = await fake.wait_for_message(INCIDENTS.id, lambda m: m.pinned)
        query = chat.tap(card, "iu:INC-1", user=VIC, chat=FORUM)
        await fake.wait_for_call(
            "answerCallbackQuery", lambda c: c.params.get("callback_query_id") == query
        )
        toast = fake.answers(query)
        assert toast is not None and "operator" in str(toast.get("text"))
        assert not [m for m in chat.bot_messages(INCIDENTS) if "Update for" in (m.text or "")]
