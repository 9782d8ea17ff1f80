"""/help for a phone and no dead ends, end to end: chat → fake Bot API → opsbot → real sshd.

One opsbot runs for the module, with three targets on the lab sshd and no on-call rotation
and no backups configured:
- ``quizbot``: failing (its status command fails), restartable, a 60,000-line log file whose
  few ERROR lines are far from its end;
- ``paybot``: healthy, a log file too long for a message whose last line holds a bot token;
- ``nolog``: failing, with no log source and no way to restart it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.alerting.event import AlertEvent, Severity
from tests.factories import (
    ALICE,
    ALICE_PRIVATE,
    OPS,
    OPSBOT_TOKEN,
    VIC,
    VIC_PRIVATE,
    ChatSession,
    base_config,
    fake_fixture,
    opsbot_chat,
    ssh_endpoint,
)
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage
from tests.lab.sshd import SSHServer

LEAKED_TOKEN = "5123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
#: Where quizbot's ERROR lines are (1-based line numbers of its 60,000-line log).
ERRORS_AT = (100, 20_000, 30_000, 40_000, 50_000, 59_000)


fake = fake_fixture(scope="module", group_per_minute=None)


def _write_logs(sshd_server: SSHServer) -> tuple[Path, Path]:
    quiz = sshd_server.workdir / "quiz.log"
    lines = [
        f"ERROR quiz error {n}" if n in ERRORS_AT else f"INFO handled update {n}"
        for n in range(1, 60_001)
    ]
    quiz.write_text("\n".join(lines) + "\n")
    pay = sshd_server.workdir / "pay.log"
    pay_lines = [f"2026-12-06 21:{i // 60:02d}:{i % 60:02d} INFO paid order {i:05d}"
                 for i in range(199)]  # fmt: skip
    pay_lines.append(f"2026-12-06 21:59:59 DEBUG bot token {LEAKED_TOKEN}")
    pay.write_text("\n".join(pay_lines) + "\n")
    return quiz, pay


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, sshd_server: SSHServer
) -> AsyncIterator[ChatSession]:
    tmp = tmp_path_factory.mktemp("words")
    quiz, pay = _write_logs(sshd_server)
    config = base_config(fake, tmp / "data")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "quizbot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "log_file": str(quiz),
            "actions": {"status": ["false"], "restart": ["true"]},
        },
        "paybot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "log_file": str(pay),
            "actions": {"status": ["true"]},
        },
        "nolog": {"kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["false"]}},
    }
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


def _button_data(message: FakeMessage) -> list[list[str]]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [[b["callback_data"] for b in row] for row in rows]


async def _toast(chat: ChatSession, query_id: str) -> str:
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id
    )
    return str((chat.fake.answers(query_id) or {}).get("text", ""))


async def _final_health(chat: ChatSession, command: str, where: Chat = OPS) -> FakeMessage:
    """/health's answer (a slow round first shows "⏳ Health: 1/3 checked…", then is edited)."""
    sent = chat.send(command, chat=where)
    return await chat.fake.wait_for_message(
        where.id,
        lambda m: (m.text or "").startswith("Health: "),
        after_message_id=sent["message_id"],
        token=OPSBOT_TOKEN,
        timeout=20,
    )


# --------------------------------------------------------------------------- /help


async def test_a_viewers_help_is_short_tappable_and_lists_only_what_they_may_do(
    chat: ChatSession,
) -> None:
    reply = await chat.ask("/help", user=VIC, chat=VIC_PRIVATE)
    text = reply.text or ""
    assert text.startswith("You are vic (viewer).")
    assert "/health — Every target's health, worst first" in text.splitlines()
    assert "/logs" in text and "/alerts" in text and "/help COMMAND" in text
    # Refused to a viewer, or not configured here: not listed.
    for absent in ("/restart", "/rollback", "/approve", "/ack", "/silence", "/oncall", "/backup"):
        assert absent not in text, absent
    assert not any(e["type"] == "pre" for e in reply.entities)  # commands stay tappable
    assert len(text) < 600 and len(text.splitlines()) <= 14


async def test_an_admins_help_lists_actions_and_help_restart_explains_one(
    chat: ChatSession,
) -> None:
    reply = await chat.ask("/help", chat=ALICE_PRIVATE)
    text = reply.text or ""
    assert "/restart —" in text and "/approve —" in text and "/deny —" in text
    assert "/oncall" not in text and "/backups" not in text  # nothing configured for them
    assert "Targets: nolog, paybot, quizbot." in text

    page = await chat.ask("/help restart", user=VIC, chat=VIC_PRIVATE)
    lines = (page.text or "").splitlines()
    assert lines[0] == "/restart TARGET"
    assert "Who: operator role and up (alice, bob, oscar); you (viewer) may not." in lines
    assert "Works on: quizbot." in lines  # the only target that can restart
    assert lines[-2:] == ["Examples:", "/restart quizbot"]

    unknown = await chat.ask("/help restrat", chat=ALICE_PRIVATE)
    assert "no command /restrat; did you mean /help restart?" in (unknown.text or "")


async def test_the_command_menu_says_what_each_command_does(chat: ChatSession) -> None:
    scopes = chat.fake.commands(OPSBOT_TOKEN)

    def menu_of(user_id: int) -> dict[str, str]:
        found: dict[str, str] = {}
        for (scope, _), commands in scopes.items():
            if "chat_member" in scope and str(user_id) in scope:
                found.update((c["command"], c["description"]) for c in commands)
        return found

    vic, alice = menu_of(VIC.id), menu_of(ALICE.id)
    assert vic["health"] == "Every target's health, worst first"
    assert vic["logs"] == "A target's last log lines, filtered"
    assert "restart" not in vic and "approve" not in vic
    assert alice["restart"] == "Restart a target, once an admin approves"
    assert "oncall" not in alice and "backup" not in alice
    assert not any(d.startswith("/") for d in (*vic.values(), *alice.values()))


# --------------------------------------------------------------------------- no dead ends


async def test_a_refusal_names_who_can(chat: ChatSession) -> None:
    reply = await chat.ask("/restart quizbot", user=VIC, chat=VIC_PRIVATE)
    assert reply.text == "/restart needs the operator role: alice, bob, oscar have it"
    health = await _final_health(chat, "/health")
    query = chat.tap(health, "hr:quizbot", user=VIC)
    assert await _toast(chat, query) == "That needs the operator role: alice, bob, oscar have it"


async def test_a_usage_error_lists_the_targets_and_suggests_the_nearest(
    chat: ChatSession,
) -> None:
    bare = await chat.ask("/restart", chat=ALICE_PRIVATE)
    assert bare.text == "⚠️ usage: /restart TARGET; targets: quizbot"
    logs = await chat.ask("/logs", chat=ALICE_PRIVATE)
    assert (logs.text or "").endswith("; targets: paybot, quizbot")  # nolog has no log
    typo = await chat.ask("/restart quizbt", chat=ALICE_PRIVATE)
    assert typo.text == (
        "⚠️ unknown target 'quizbt'; did you mean quizbot? targets: nolog, paybot, quizbot"
    )


async def test_logs_with_a_filter_returns_the_last_n_matching_lines(chat: ChatSession) -> None:
    reply = await chat.ask("/logs quizbot 3 error", chat=ALICE_PRIVATE)
    lines = (reply.text or "").splitlines()
    assert lines[0] == "📜 quizbot · last 3 lines matching 'error'"
    assert lines[1:] == [f"ERROR quiz error {n}" for n in (40_000, 50_000, 59_000)]

    more = await chat.ask("/logs quizbot 50 ERROR", chat=ALICE_PRIVATE)
    lines = (more.text or "").splitlines()
    # Bounded: the search covers the newest 50,000 lines, so line 100's error is not found.
    assert lines[0] == "📜 quizbot · 5 lines matching 'ERROR' in the last 50,000"
    assert lines[1:] == [f"ERROR quiz error {n}" for n in ERRORS_AT[1:]]

    none = await chat.ask("/logs quizbot 5 no such words", chat=ALICE_PRIVATE)
    assert (none.text or "").endswith("nothing to show")


async def test_a_log_sent_as_a_file_shows_its_last_lines_inline_redacted(
    chat: ChatSession,
) -> None:
    reply = await chat.ask("/logs paybot 200", chat=ALICE_PRIVATE)
    assert reply.document_name is not None and reply.document_name.startswith("paybot-")
    caption = reply.caption or ""
    assert caption.startswith("📜 paybot · last 200 lines · ")
    assert "attached" in caption
    assert "INFO paid order 00198" in caption  # the newest lines, readable without the file
    assert "bot token [REDACTED]" in caption and LEAKED_TOKEN not in caption
    assert "paid order 00100" not in caption and len(caption) <= 1024


# --------------------------------------------------------------------------- /health


async def test_health_offers_logs_and_restart_beside_failing_targets_only_where_they_work(
    chat: ChatSession,
) -> None:
    reply = await _final_health(chat, "/health")
    text = reply.text or ""
    assert text.startswith("Health: 3 targets, 2 failing")
    assert " ms" in text and "0.0s" not in text  # sub-second latency in milliseconds
    rows = _button_data(reply)
    assert all(len(row) <= 3 for row in rows)
    data = [d for row in rows for d in row]
    # quizbot: both; nolog: neither (no log, no restart); paybot is healthy: none.
    assert data == ["l:quizbot", "hr:quizbot", "h"]

    query = chat.tap(reply, "hr:quizbot")  # an admin's tap files the restart for approval
    card = await chat.fake.wait_for_message(
        OPS.id, lambda m: "a:" in str(m.reply_markup), after_message_id=reply.message_id
    )
    assert "quizbot" in (card.text or "")
    assert chat.fake.answers(query) is not None


async def test_health_headline_agrees_with_what_is_firing(chat: ChatSession) -> None:
    engine = ALERT_ENGINE.bound(chat.services)
    assert engine is not None
    await engine.ingest([
        AlertEvent(
            source="backup", fingerprint="paybot-rpo", status="firing",
            severity=Severity.critical, summary="paybot: no verified backup within its RPO (1d)",
            target="paybot",
        )
    ])  # fmt: skip
    reply = await _final_health(chat, "/health", ALICE_PRIVATE)
    lines = (reply.text or "").splitlines()
    assert lines[0].startswith("Health: 3 targets, 2 failing, 1 alert firing · ")
    assert lines[1] == "🔔 paybot: no verified backup within its RPO (1d)"  # named once
