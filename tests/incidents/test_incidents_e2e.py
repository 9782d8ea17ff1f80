"""/incident end to end: declared in a forum topic, a live status card, the automatic timeline,
the post-mortem on resolve, a restart of opsbot, and the Declare incident alert button."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from opsbot.config import Settings
from tests.factories import (
    ALICE,
    BOB,
    INCIDENTS,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    STRANGER,
    VIC,
    ChatSession,
    base_config,
    fake_fixture,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage
from tests.lab.ports import free_port

FORUM = Chat(INCIDENTS.id, "supergroup", "incidents", is_forum=True)
WEBHOOK_TOKEN = "incident-webhook-token-0123456789"


fake = fake_fixture(FORUM, group_per_minute=None)


def settings_for(fake: FakeBotAPI, tmp_path: Path) -> Settings:
    config: dict[str, Any] = base_config(fake, tmp_path / "data")
    config["targets"] = {
        "payments": {
            "kind": "command",
            "verify_deadline": 10,
            "actions": {
                "status": ["true"],
                "restart": ["sh", "-c", f"echo restarted >> {tmp_path / 'restarts'}"],
            },
        }
    }
    config["web"] = {"enabled": True, "port": free_port(), "token": WEBHOOK_TOKEN}
    return write_config(tmp_path / "opsbot.yaml", config)


def card_of(chat: ChatSession) -> FakeMessage:
    cards = [m for m in chat.bot_messages(INCIDENTS) if " · P" in (m.text or "").split("\n")[0]]
    assert len(cards) == 1, [m.text for m in chat.bot_messages(INCIDENTS)]
    return cards[0]


async def test_an_incident_from_declaration_to_post_mortem_across_a_restart(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = settings_for(fake, tmp_path)
    async with running_opsbot(fake, settings) as chat:
        reply = await chat.ask("/incident P1 payments failing payments", user=ALICE)
        assert reply.text is not None and "INC-1" in reply.text
        topics = fake.topics(INCIDENTS.id)
        assert len(topics) == 1 and "INC-1" in next(iter(topics.values())).name
        card = await fake.wait_for_message(  # pinned right after it is posted
            INCIDENTS.id, lambda m: "INC-1" in (m.text or "") and m.pinned
        )
        assert card.thread_id in topics
        assert card.text is not None and "Targets: payments" in card.text

        # A restart approved during the incident lands on its timeline by itself.
        request = await chat.ask("/restart payments", user=OSCAR)
        request_id = (request.text or "").split("id ")[1].split()[0]
        chat.tap(request, f"a:{request_id}", user=BOB)
        await fake.wait_for_message(
            OPS.id,
            lambda m: m.message_id == request.message_id and "— done" in (m.text or ""),
            timeout=30,
        )
        await chat.ask("/incident update INC-1 payment provider is back", user=ALICE)
        # The card's buttons are the next steps; Ack is one tap (by an operator or admin).
        steps = {b["text"]: b["callback_data"]
                 for row in (card_of(chat).reply_markup or {})["inline_keyboard"] for b in row}
        assert steps == {"👀 Ack": "i:ack INC-1", "🩹 Mitigated": "i:mitigated INC-1",
                         "✅ Resolve": "i:resolve INC-1", "✏️ Update": "iu:INC-1"}  # fmt: skip
        chat.tap(card, steps["👀 Ack"], user=BOB, chat=INCIDENTS)
        acked = await fake.wait_for_message(
            INCIDENTS.id, lambda m: "State: 👀 acknowledged" in (m.text or "")
        )
        assert acked.message_id == card.message_id
        later = {b["text"] for row in (acked.reply_markup or {})["inline_keyboard"] for b in row}
        assert later == {"🩹 Mitigated", "✅ Resolve", "✏️ Update"}

        shown = await chat.ask("/incident show INC-1", user=VIC)  # viewers may look
        assert shown.text is not None
        assert "restart" in shown.text and "approved" in shown.text
        assert "payment provider is back" in shown.text
        refused = await chat.ask("/incident mitigated INC-1", user=VIC)
        assert refused.text is not None and "operator role" in refused.text
        stranger = await chat.ask("/incident list", user=STRANGER)
        assert stranger.text is not None and "Not authorized" in stranger.text

    # opsbot restarts: the incident, its card and its timeline are still there.
    async with running_opsbot(fake, settings) as chat:
        listed = await chat.ask("/incident list", user=VIC)
        assert listed.text is not None and "INC-1" in listed.text
        await chat.ask("/incident mitigated INC-1", user=ALICE)
        resolved = await chat.ask("/incident resolve INC-1 provider outage, retried", user=ALICE)
        await fake.wait_for_call(  # a resolved incident is unpinned
            "unpinChatMessage", lambda c: c.params.get("message_id") == card.message_id
        )
        assert resolved.document_name == "INC-1-postmortem.md"
        assert resolved.document_bytes is not None
        postmortem = resolved.document_bytes.decode()
        for heading in ("Timeline", "Impact", "Root Cause", "Resolution", "Action Items",
                        "Lessons Learned"):  # fmt: skip
            assert heading.lower() in postmortem.lower(), heading
        assert "restart" in postmortem and "payment provider is back" in postmortem
        assert "P1" in postmortem

    final = card_of(chat)
    assert final.message_id == card.message_id  # one card for the whole life
    assert final.edits >= 4 and final.text is not None and final.text.startswith("✅ INC-1")


async def test_declare_incident_from_an_alert_button(fake: FakeBotAPI, tmp_path: Path) -> None:
    settings = settings_for(fake, tmp_path)
    async with running_opsbot(fake, settings) as chat:
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"http://127.0.0.1:{settings.web.port}/alerts/webhook",
                json={"target": "payments", "severity": "critical", "summary": "5xx at 40%"},
                headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
            )
        assert response.status_code == 202
        alert = await fake.wait_for_message(INCIDENTS.id, lambda m: "5xx at 40%" in (m.text or ""))
        data = {
            b["text"]: b["callback_data"]
            for row in (alert.reply_markup or {})["inline_keyboard"]
            for b in row
        }
        chat.tap(alert, data["🚨 Declare incident"], user=ALICE, chat=INCIDENTS)
        # The severity is asked, with one button per level, in reply to the alert.
        prompt = await fake.wait_for_message(
            INCIDENTS.id, lambda m: "Which severity?" in (m.text or "")
        )
        assert prompt.reply_to_message_id == alert.message_id
        assert prompt.text is not None and "payments: 5xx at 40%" in prompt.text
        levels = {
            b["text"]: b["callback_data"]
            for row in (prompt.reply_markup or {})["inline_keyboard"]
            for b in row
        }
        assert list(levels) == ["P0", "P1", "P2", "P3"]
        assert all(len(row) <= 3 for row in (prompt.reply_markup or {})["inline_keyboard"])
        assert fake.bot_messages(INCIDENTS.id, OPSBOT_TOKEN) and not [
            m for m in chat.bot_messages(INCIDENTS) if "INC-1" in (m.text or "")
        ]  # nothing is declared before the severity is chosen
        query = chat.tap(prompt, levels["P2"], user=ALICE, chat=INCIDENTS)
        await fake.wait_for_call(
            "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query
        )
        answer = fake.answers(query)
        assert answer is not None and "INC-1 declared (P2)" in str(answer["text"])
        answered = await fake.wait_for_message(  # the question answered: no level tapped twice
            INCIDENTS.id, lambda m: m.message_id == prompt.message_id and not m.reply_markup
        )
        assert answered.text == "🚨 INC-1 declared (P2) by alice: payments: 5xx at 40%"
        card = await fake.wait_for_message(INCIDENTS.id, lambda m: "INC-1 · P2" in (m.text or ""))
        assert card.text is not None
        # A brief title, once: not the check's raw text three times.
        assert card.text.split("\n")[0] == "🟠 INC-1 · P2 · payments: 5xx at 40%" or (
            card.text.split("\n")[0].endswith("· P2 · payments: 5xx at 40%")
        )
        assert "Targets: payments" in card.text
