"""Chat manners: replies threaded to what they answer, "typing…" while a command is slow.

Through the fake Bot API (which keeps each message's ``reply_to_message_id`` and every
``sendChatAction``), against the real lab sshd: one target's logs take 2.5 s over SSH.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest
import pytest_asyncio

from tests.factories import (
    ALICE_PRIVATE,
    OPS,
    OPSBOT_TOKEN,
    ChatSession,
    approve,
    fake_fixture,
    module_config,
    opsbot_chat,
    ssh_endpoint,
)
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage
from tests.lab.sshd import SSHServer

BIG_MB = 16  # a real copy home (bytes done while copying: tests/test_backups.py)


@pytest.fixture(scope="module")
def big_db(sshd_server: SSHServer) -> Path:
    path = sshd_server.workdir / "big.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE blobs (b BLOB)")
        db.executemany("INSERT INTO blobs VALUES (randomblob(1048576))", [()] * BIG_MB)
        db.commit()
    subprocess.run(["chown", sshd_server.username, str(path)], check=True)
    return path


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI,
    tmp_path_factory: pytest.TempPathFactory,
    sshd_server: SSHServer,
    big_db: Path,
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "manners")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "slowbot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "actions": {
                "status": ["true"],
                "logs": ["sh", "-c", "sleep 2.5; echo slow line"],
            },
        },
        "fastbot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "actions": {"status": ["true"], "logs": ["echo", "fast line"]},
        },
        "bigdb": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "actions": {"status": ["true"]},
            "backups": [
                {
                    "type": "sqlite",
                    "path": str(big_db),
                    # a slow start: the dump runs for seconds, as a big one does
                    "sqlite3": ["sh", "-c", 'sleep 2.5; exec sqlite3 "$@"', "sqlite3"],
                    "send_max_bytes": 1000,  # kept, not sent to the chat
                    "timeout": 120,
                    "remote_dir": str(sshd_server.workdir / "backups"),
                }
            ],
        },
    }
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


def _typing(fake: FakeBotAPI, since: int) -> list[dict[str, object]]:
    return [c.params for c in fake.calls[since:] if c.method == "sendChatAction"]


async def edited_to(chat: ChatSession, where: Chat, card: FakeMessage, says: str) -> FakeMessage:
    """``card`` (in ``where``) once opsbot has edited it to say ``says``: 90 s at most."""
    return await chat.fake.wait_for_message(
        where.id,
        lambda m: m.message_id == card.message_id and says in (m.text or ""),
        token=OPSBOT_TOKEN,
        timeout=90,
    )


async def test_a_slow_command_shows_typing_and_its_answer_is_threaded(
    chat: ChatSession,
) -> None:
    since = len(chat.fake.calls)
    sent = chat.send("/logs slowbot", chat=ALICE_PRIVATE)
    reply = await chat.next_message(sent, ALICE_PRIVATE, timeout=15)
    assert "slow line" in (reply.text or "")
    assert reply.reply_to_message_id == sent["message_id"]
    actions = _typing(chat.fake, since)
    assert actions, chat.fake.dump_calls()
    assert all(a["action"] == "typing" and a["chat_id"] == ALICE_PRIVATE.id for a in actions)
    # 2.5 s: one after 1 s, the next only ~4 s later (after the reply): no flood.
    assert len(actions) <= 2


async def test_a_fast_command_shows_no_typing(chat: ChatSession) -> None:
    since = len(chat.fake.calls)
    sent = chat.send("/help", chat=ALICE_PRIVATE)
    reply = await chat.next_message(sent, ALICE_PRIVATE, timeout=10)
    assert reply.reply_to_message_id == sent["message_id"]
    await chat.fake.wait_for_call("sendMessage", since=since)
    assert _typing(chat.fake, since) == []


async def test_an_answer_to_a_deleted_command_still_arrives(chat: ChatSession) -> None:
    sent = chat.send("/logs slowbot", chat=ALICE_PRIVATE)
    chat.fake.delete_message(ALICE_PRIVATE.id, sent["message_id"])  # gone before the answer
    reply = await chat.next_message(sent, ALICE_PRIVATE, timeout=15)
    assert "slow line" in (reply.text or "")
    assert reply.reply_to_message_id is None


async def test_a_button_answer_is_threaded_to_the_tapped_message(chat: ChatSession) -> None:
    health = await chat.ask("/health fastbot", chat=ALICE_PRIVATE)
    assert health.reply_markup is not None
    chat.tap(health, "l:fastbot", chat=ALICE_PRIVATE)
    logs = await chat.fake.wait_for_message(
        ALICE_PRIVATE.id, after_message_id=health.message_id, token=OPSBOT_TOKEN, timeout=10
    )
    assert "fast line" in (logs.text or "")
    assert logs.reply_to_message_id == health.message_id


async def test_a_backup_card_shows_elapsed_time_and_bytes_and_ends_on_the_result(
    chat: ChatSession,
) -> None:
    sent = chat.send("/backup bigdb", chat=ALICE_PRIVATE)
    card = await chat.next_message(sent, ALICE_PRIVATE, timeout=10)
    assert card.reply_to_message_id == sent["message_id"]
    final = await edited_to(chat, ALICE_PRIVATE, card, "backup bigdb — done")
    shown = [t for t in final.history if t is not None]
    assert any(re.search(r"dumping .*… · [1-9]\d* s", t) for t in shown), shown
    seconds = [int(m[1]) for t in shown if (m := re.search(r"… · (\d+) s\n", t))]
    assert len(seconds) >= 2 and seconds == sorted(seconds), shown  # the clock moves on
    assert final.text is not None and re.search(r"took \d+(\.\d)? m?s", final.text)
    assert shown[-1] == final.text and "…" not in final.text  # it ends on the result


async def test_an_approved_restore_card_shows_elapsed_time_then_the_total(
    chat: ChatSession,
) -> None:
    """The approval path: the card itself (in a group) is edited with progress."""
    listed = await chat.ask("/backup bigdb list", chat=ALICE_PRIVATE)
    names = [line.split()[0] for line in (listed.text or "").splitlines()[1:]]
    if not names:  # this test run alone: make one
        await chat.ask("/backup bigdb", chat=ALICE_PRIVATE, timeout=90)
        listed = await chat.ask("/backup bigdb list", chat=ALICE_PRIVATE)
        names = [line.split()[0] for line in (listed.text or "").splitlines()[1:]]
    sent = chat.send(f"/backup bigdb restore {names[0]}", chat=OPS)
    card = await chat.next_message(sent, OPS, timeout=15)
    assert card.text is not None and "approval needed" in card.text
    assert card.reply_to_message_id == sent["message_id"]
    approve(chat, card)
    final = await edited_to(chat, OPS, card, "restore bigdb — done")
    shown = [t for t in final.history if t is not None]
    assert any(re.search(r"restoring .*… · [1-9]\d* s", t) for t in shown), shown
    assert final.text is not None and re.search(r"\ntook \d+(\.\d)? m?s\n", final.text)
    assert shown[-1] == final.text
