"""What reaches opsbot's handlers: stale commands are not run, a redelivered update runs once,
and the webhook path lets through only Telegram's requests (the secret) while opsbot runs.

In-process opsbot (SQLite store) polling the fake Bot API; the target is a command whose every
run leaves a line in a file, so the test counts executions, not log lines.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import pytest_asyncio
from telegram import Update

from opsbot.alerting.event import AlertEvent
from opsbot.config import Settings, WebSettings
from opsbot.errors import ConfigError
from opsbot.handlers.ingress import UpdateDedup
from opsbot.metrics import Metrics
from opsbot.services import Services
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.web.server import WebServer
from tests.factories import (
    ALICE,
    OPS,
    OPSBOT_TOKEN,
    ChatSession,
    base_config,
    fake_fixture,
    opsbot_chat,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import free_port

fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    return tmp_path / "runs"


@pytest_asyncio.fixture
async def chat(fake: FakeBotAPI, tmp_path: Path, runs: Path) -> AsyncIterator[ChatSession]:
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {
        "counter": {
            "kind": "command",
            "actions": {"status": ["sh", "-c", f"echo ran >> {runs}"]},
        }
    }
    async with opsbot_chat(fake, tmp_path, config) as session:
        yield session


def metric(session: ChatSession, name: str) -> float:
    text = session.services.metrics.render().decode()
    line = next(x for x in text.splitlines() if x.startswith(f"{name} "))
    return float(line.split()[1])


async def test_a_command_typed_while_opsbot_was_away_is_not_run_and_the_sender_is_told(
    chat: ChatSession, fake: FakeBotAPI, runs: Path
) -> None:
    old = int(time.time()) - 14 * 60
    first = fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/health counter", date=old)
    fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/health counter", date=old + 5)
    notice = await fake.wait_for_message(OPS.id, after_message_id=first["message_id"])
    assert notice.text == (
        "⏳ Ignored: /health was sent 14 min ago while opsbot was unreachable. "
        "Send it again if you still want it."
    )
    assert notice.reply_to_message_id == first["message_id"]
    fresh = await chat.ask("/health counter")  # typed now: runs
    assert fresh.text is not None and "counter" in fresh.text
    await asyncio.sleep(0.5)
    replies = [m for m in chat.bot_messages() if m.message_id > first["message_id"]]
    assert [m.message_id for m in replies] == [notice.message_id, fresh.message_id]  # told once
    assert runs.read_text() == "ran\n"  # only the fresh one ran
    assert metric(chat, "opsbot_updates_stale_total") == 2


async def test_a_tap_on_an_old_card_still_counts(
    chat: ChatSession, fake: FakeBotAPI, runs: Path
) -> None:
    overview = await chat.ask("/health counter")
    with fake._cond:  # the card was posted 20 min ago; the tap is now
        fake._messages[OPS.id][overview.message_id].date = int(time.time()) - 1200
    query = chat.tap(overview, "h:counter")
    deadline = time.monotonic() + 10
    while runs.read_text().count("ran") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert runs.read_text() == "ran\nran\n"  # the refresh ran the check again
    assert fake.answers(query) is not None


async def test_a_redelivered_update_runs_once(
    chat: ChatSession, fake: FakeBotAPI, runs: Path
) -> None:
    sent = chat.send("/health counter")
    update = {"update_id": fake.bot(OPSBOT_TOKEN).next_update_id - 1, "message": sent}
    reply = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"])
    for _ in range(3):  # Telegram redelivers it (or another replica got it too)
        await chat.app.process_update(Update.de_json(dict(update), chat.app.bot))
    await asyncio.sleep(0.5)
    assert [m for m in chat.bot_messages() if m.message_id > reply.message_id] == []
    assert runs.read_text() == "ran\n"
    assert metric(chat, "opsbot_updates_duplicate_total") == 3


async def test_a_read_only_command_delivered_four_times_at_once_answers_once(
    chat: ChatSession, fake: FakeBotAPI
) -> None:
    """/help runs while its claim is being made: every copy runs, one answers, one is audited
    (a copy that loses the claim leaves nothing behind)."""
    before = metric(chat, "opsbot_updates_duplicate_total")
    sent = chat.send("/help")  # polled by opsbot, and three more copies right now
    update = {"update_id": fake.bot(OPSBOT_TOKEN).next_update_id - 1, "message": sent}
    await asyncio.gather(*(
        chat.app.process_update(Update.de_json(dict(update), chat.app.bot)) for _ in range(3)
    ))  # fmt: skip
    reply = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"])
    assert reply.text is not None and reply.text.startswith("You are alice")
    await asyncio.sleep(0.5)
    assert [m for m in chat.bot_messages() if m.message_id > reply.message_id] == []
    await chat.services.audit.flush()
    helps = [e for e in await chat.services.audit.entries(limit=50) if e.get("verb") == "help"]
    assert len(helps) == 1
    assert metric(chat, "opsbot_updates_duplicate_total") == before + 3


async def test_an_unreachable_store_lets_the_update_through_with_one_warning(
    chat: ChatSession, caplog: pytest.LogCaptureFixture
) -> None:
    # Nothing listens on that port: redis-py gives up after its retries, the claim cannot be
    # made, and the update must still reach its handler (PTB then runs the next group).
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    services = cast(Services, SimpleNamespace(store=dead, metrics=chat.services.metrics))
    sent = chat.send("/help")
    message = {**sent, "text": "/health counter"}  # claimed before it runs (reaches a target)
    update = Update.de_json({"update_id": 987654, "message": message}, chat.app.bot)
    try:
        with caplog.at_level(logging.WARNING, logger="opsbot.handlers.ingress"):
            await UpdateDedup(services)(update, cast(Any, None))  # no ApplicationHandlerStop
    finally:
        await dead.close()
    assert [r.getMessage() for r in caplog.records] == [
        "update 987654: the store is unreachable (ConnectionError): "
        "handled without the duplicate check"
    ]
    assert all(r.exc_info is None for r in caplog.records)


async def test_the_audit_entry_of_a_command_outlives_a_stop_right_after_its_reply(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    """The trail is written after the reply (never in its way), yet never lost on shutdown."""
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {"counter": {"kind": "command", "actions": {"status": ["true"]}}}
    settings = write_config(tmp_path / "opsbot.yaml", config)
    async with running_opsbot(fake, settings) as session:
        reply = await session.ask("/health counter")
        assert reply.text is not None and "counter" in reply.text
    store = SQLiteStore(settings.data_dir / "opsbot.sqlite3")
    try:
        entries = await store.tail("audit", "counter", 10)
    finally:
        await store.close()
    assert [(e["event"], e["verb"], e["outcome"]) for e in entries] == [
        ("command", "health", "ok")
    ]


async def test_the_telegram_webhook_path_checks_the_secret_and_queues_updates() -> None:
    settings = Settings(web=WebSettings(enabled=True, port=0, token="web-token-0123456789"))
    queued: list[dict[str, Any]] = []
    running = [False]

    async def accept(update: dict[str, Any]) -> bool:
        if running[0]:
            queued.append(update)
        return running[0]

    server = WebServer(settings, _no_ingest, Metrics())
    server.serve_telegram("/tg/hook", "s3cret-token", accept)
    port = await server.start()
    url = f"http://127.0.0.1:{port}/tg/hook"
    good = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
    update = {
        "update_id": 7,
        "message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}},
    }
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.post(url, json=update)).status_code == 401
            wrong = {"X-Telegram-Bot-Api-Secret-Token": "s3cret-tokeN"}
            assert (await http.post(url, json=update, headers=wrong)).status_code == 401
            assert (await http.post(url, content=b"{", headers=good)).status_code == 400
            assert (await http.post(url, json={"x": 1}, headers=good)).status_code == 400
            assert queued == []
            starting = await http.post(url, json=update, headers=good)
            assert starting.status_code == 503  # not running yet: Telegram sends it again
            running[0] = True
            assert (await http.post(url, json=update, headers=good)).status_code == 200
            assert (await http.get(url)).status_code == 405
    finally:
        await server.stop()
    assert queued == [update]


async def _no_ingest(events: list[AlertEvent]) -> None:
    raise AssertionError("no alert expected")


def test_webhook_mode_config_names_what_is_missing(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("from-a-file_123\n")
    web = {"enabled": True, "token": "web-token-0123456789"}
    hook = {"url": "https://bot.example.org/tg/hook", "secret_token_file": str(secret_file)}
    config = {"telegram": {"mode": "webhook", "webhook": hook}, "web": web}
    settings = write_config(tmp_path / "ok.yaml", config)
    assert settings.telegram.webhook.secret_token is not None
    assert settings.telegram.webhook.secret_token.get_secret_value() == "from-a-file_123"
    assert settings.telegram.webhook.path == "/tg/hook"
    assert "from-a-file_123" in settings.secrets()  # redacted like every other secret

    cases = {
        "needs telegram.webhook.url and telegram.webhook.secret_token": {
            "telegram": {"mode": "webhook"}, "web": web,
        },
        "telegram.mode webhook needs the web server (web.enabled: true)": {
            "telegram": {"mode": "webhook", "webhook": hook},
        },
        "telegram.webhook.secret_token: must be 1-256 characters": {
            "telegram": {"mode": "webhook", "webhook": {**hook, "secret_token": "no spaces"}},
            "web": web,
        },
        "telegram.webhook.url: String should match pattern": {
            "telegram": {"mode": "webhook", "webhook": {**hook, "url": "http://plain"}},
            "web": web,
        },
    }  # fmt: skip
    for expected, bad in cases.items():
        with pytest.raises(ConfigError, match=re.escape(expected)):
            write_config(tmp_path / "bad.yaml", bad)
