"""/health and /logs end to end: chat → fake Bot API → opsbot → real sshd / Docker / servers.

One opsbot runs for the whole module against:
- ``sshbot``: a real process (run as the lab user) checked and tailed over the real sshd;
- ``web``: a real busybox httpd container on the lab dockerd, with an HTTP check;
- ``chatty``: a container that printed 3000 numbered lines (for tails and documents);
- ``db`` and ``cache``: the real PostgreSQL and Redis, checked with pg_isready / redis-cli;
- ``quizbot``: a bot token check (getMe, getWebhookInfo) of another bot on the fake Bot API;
- ``deadhost``: an SSH host that accepts TCP and then says nothing;
- ``canary``: a local target whose status command creates a file, proving when things ran.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import pytest
import pytest_asyncio
from redis.exceptions import ConnectionError as RedisConnectionError

from opsbot.catalog import VERBS
from tests.factories import (
    ALICE,
    ALICE_PRIVATE,
    FOREIGN,
    OPERATED_TOKEN,
    OPERATED_USERNAME,
    OPS,
    OPSBOT_TOKEN,
    OPSBOT_USERNAME,
    STRANGER,
    VIC,
    ChatSession,
    fake_bot_api,
    module_config,
    opsbot_chat,
    ssh_endpoint,
)
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage
from tests.lab.dockerd import DockerLab, run_http_container
from tests.lab.ports import free_port
from tests.lab.postgres import PostgresServer, postgres_bin_dir
from tests.lab.redis import RedisServer
from tests.lab.sshd import SSHServer, count_accepted_connections

SECRET_DSN_PASSWORD = "hunter2-very-secret"
LEAKED_TOKEN = "5123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1"
# Many tests talk in Alice's private chat: opsbot paces group chats at Telegram's 20 a minute.


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeBotAPI]:
    # Rate limits are exercised by the alerts tests; here a chat sends more than 20 a minute.
    with fake_bot_api(group_per_minute=None) as api:
        api.add_bot(OPERATED_TOKEN, OPERATED_USERNAME, "Quiz bot")
        yield api


@pytest.fixture(scope="module")
def silent_host() -> Iterator[int]:
    """A TCP port that accepts connections and never speaks: a hung host."""
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


@pytest.fixture(scope="module")
def sshbot(sshd_server: SSHServer) -> Iterator[Path]:
    """A long-running process of the lab user, and its log file holding secrets."""
    log = sshd_server.workdir / "sshbot.log"
    lines = [f"2026-11-23 12:00:{i:02d} INFO handled update {i}" for i in range(60)]
    lines += [
        "2026-11-23 12:01:00 ERROR payment failed for user 42",
        f"2026-11-23 12:01:01 DEBUG connecting to postgres://bot:{SECRET_DSN_PASSWORD}@db:5432/x",
        f"2026-11-23 12:01:02 DEBUG bot token {LEAKED_TOKEN}",
        "STRIPE_SECRET_KEY=sk_live_51Habcdefghijklmnop",
        "2026-11-23 12:01:03 INFO still alive",
    ]
    log.write_text("\n".join(lines) + "\n")
    subprocess.run(["chown", sshd_server.username, str(log)], check=True)
    proc = subprocess.Popen(
        ["runuser", "-u", sshd_server.username, "--", "sleep", "100000"],
        stdin=subprocess.DEVNULL,
    )
    # `sleep` cannot carry a marker in argv; pgrep on the exact command line instead.
    try:
        yield log
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def containers(docker_lab: DockerLab) -> Iterator[dict[str, int]]:
    web_port = free_port()
    run_http_container(docker_lab, "e2e-web", web_port)
    with closing(docker_lab.client()) as client:
        script = "i=0; while [ $i -lt 3000 ]; do echo chatty line $i; i=$((i+1)); done; sleep 1d"
        chatty = client.containers.run(
            docker_lab.image_v1, ["sh", "-c", script], name="e2e-chatty", detach=True, init=True
        )
        deadline = time.monotonic() + 20
        while b"chatty line 2999" not in chatty.logs(tail=1) and time.monotonic() < deadline:
            time.sleep(0.05)
    yield {"web": web_port}
    with closing(docker_lab.client()) as client:
        for name in ("e2e-web", "e2e-chatty"):
            client.containers.get(name).remove(force=True)


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canary") / "ran"


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI,
    tmp_path_factory: pytest.TempPathFactory,
    sshd_server: SSHServer,
    docker_lab: DockerLab,
    postgres_server: PostgresServer,
    redis_server: RedisServer,
    silent_host: int,
    sshbot: Path,
    containers: dict[str, int],
    canary: Path,
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "e2e")
    config["endpoints"] = {
        "lab-ssh": ssh_endpoint(sshd_server),
        "hung-ssh": ssh_endpoint(sshd_server, port=silent_host, connect_timeout=2),
        "lab-docker": {"type": "docker", "url": docker_lab.base_url},
    }
    fake.set_webhook_info(
        OPERATED_TOKEN,
        url="https://quiz.example.com/hook",
        pending_update_count=3,
        last_error_date=int(time.time()) - 60,
        last_error_message="Wrong response from the webhook: 502 Bad Gateway",
    )
    config["targets"] = {
        "sshbot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "log_file": str(sshbot),
            "actions": {"status": ["pgrep", "-u", sshd_server.username, "-x", "sleep"]},
        },
        "web": {
            "kind": "container",
            "endpoint": "lab-docker",
            "container": "e2e-web",
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{containers['web']}/health"}],
        },
        "chatty": {"kind": "container", "endpoint": "lab-docker", "container": "e2e-chatty"},
        "db": {
            "kind": "command",
            "checks": [
                {
                    "type": "command",
                    "argv": [
                        str(postgres_bin_dir() / "pg_isready"),
                        "-h",
                        postgres_server.host,
                        "-p",
                        str(postgres_server.port),
                    ],
                }
            ],
        },
        "cache": {
            "kind": "command",
            "checks": [
                {"type": "command", "argv": ["redis-cli", "-p", str(redis_server.port), "ping"]}
            ],
        },
        "quizbot": {
            "kind": "command",
            "checks": [{"type": "telegram", "token": OPERATED_TOKEN}],
        },
        "deadhost": {
            "kind": "command",
            "endpoint": "hung-ssh",
            "timeout": 3,
            "actions": {"status": ["true"]},
        },
        "canary": {"kind": "command", "actions": {"status": ["touch", str(canary)]}},
    }
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


# --------------------------------------------------------------------------- /health


async def _health_of_all(chat: ChatSession) -> FakeMessage:
    """/health's final answer (the dead host is slow, so a progress message comes first and
    is edited into the answer)."""
    sent = chat.send("/health")
    return await chat.fake.wait_for_message(
        OPS.id,
        lambda m: (m.text or "").startswith("Health:"),
        timeout=20,
        after_message_id=sent["message_id"],
        token=OPSBOT_TOKEN,
    )


async def test_health_lists_every_target_worst_first_within_the_dead_hosts_timeout(
    chat: ChatSession, canary: Path
) -> None:
    started = time.monotonic()
    reply = await _health_of_all(chat)
    elapsed = time.monotonic() - started
    assert reply.text is not None
    lines = reply.text.splitlines()
    assert lines[0].startswith("Health: 8 targets, 1 failing, 1 warning")
    rows = lines[1:]
    assert [r.split()[1] for r in rows][:2] == ["deadhost", "quizbot"]
    assert rows[0].startswith("❌ deadhost") and "ssh" not in rows[0].split()[0]
    assert rows[1].startswith("⚠️ quizbot") and "502 Bad Gateway" in rows[1]
    healthy = {r.split()[1] for r in rows if r.startswith("✅")}
    assert healthy == {"cache", "canary", "chatty", "db", "sshbot", "web"}
    # The hung host has a 2 s connect timeout inside a 3 s budget: the answer does not wait
    # for anything longer, and the healthy targets still report.
    assert elapsed < 8, f"/health took {elapsed:.1f} s"
    assert canary.exists()
    assert reply.reply_markup is not None


async def test_health_of_one_target_shows_each_check(chat: ChatSession) -> None:
    reply = await chat.ask("/health web")
    assert reply.text is not None
    assert reply.text.startswith("✅ web: ok")
    assert "container" in reply.text and "running" in reply.text
    assert "HTTP 200" in reply.text

    reply = await chat.ask("/health quizbot")
    assert reply.text is not None
    assert f"@{OPERATED_USERNAME}" in reply.text
    assert "3 pending" in reply.text and "webhook error" in reply.text
    assert OPERATED_TOKEN not in reply.text


async def test_repeated_health_reuses_ssh_connections(
    chat: ChatSession, sshd_server: SSHServer
) -> None:
    await chat.ask("/health sshbot")  # warm: the pooled connection exists from here on
    before = count_accepted_connections(sshd_server)
    for _ in range(3):
        reply = await chat.ask("/health sshbot")
        assert reply.text is not None and reply.text.startswith("✅ sshbot")
    assert count_accepted_connections(sshd_server) == before


async def test_refresh_button_edits_the_health_message_in_place(chat: ChatSession) -> None:
    reply = await chat.ask("/health web")
    since = len(chat.fake.calls)
    query = chat.tap(reply, "h:web")
    edit = await chat.fake.wait_for_call(
        "editMessageText", lambda c: c.params["message_id"] == reply.message_id, since=since
    )
    assert "✅ web: ok" in edit.params["text"]
    assert chat.fake.answers(query) is not None
    assert len(chat.bot_messages()) == len([m for m in chat.bot_messages()])  # no new message


# --------------------------------------------------------------------------- /logs


async def test_logs_over_ssh_are_tailed_and_redacted(chat: ChatSession) -> None:
    reply = await chat.ask("/logs sshbot 10")
    assert reply.text is not None
    assert reply.text.startswith("📜 sshbot · last 10 lines")
    assert "still alive" in reply.text and "handled update 59" in reply.text
    assert "handled update 50" not in reply.text  # only the last 10 lines
    assert SECRET_DSN_PASSWORD not in reply.text
    assert LEAKED_TOKEN not in reply.text
    assert "sk_live_51H" not in reply.text
    assert reply.text.count("[REDACTED]") >= 3
    assert any(e["type"] == "pre" for e in reply.entities)


async def test_logs_filter_is_a_fixed_string(chat: ChatSession) -> None:
    reply = await chat.ask("/logs sshbot 100 error")
    assert reply.text is not None
    assert reply.text.startswith("📜 sshbot · 1 line matching 'error' in the last 50,000")
    assert "payment failed for user 42" in reply.text
    assert "handled update" not in reply.text


async def test_container_logs_tail_on_the_engine(chat: ChatSession) -> None:
    reply = await chat.ask("/logs chatty 5")
    assert reply.text is not None
    body = reply.text.splitlines()[1:]
    assert body == [f"chatty line {i}" for i in range(2995, 3000)]


async def test_long_logs_arrive_as_a_document(chat: ChatSession) -> None:
    reply = await chat.ask("/logs chatty 2000")
    assert reply.document_name is not None and reply.document_name.endswith(".log")
    assert reply.document_bytes is not None
    lines = reply.document_bytes.decode().splitlines()
    assert lines == [f"chatty line {i}" for i in range(1000, 3000)]
    assert reply.caption is not None and "attached" in reply.caption
    # Its last lines are in the message too: readable on a phone without opening the file.
    assert reply.caption.splitlines()[-2:] == ["chatty line 2998", "chatty line 2999"]


async def test_container_logs_filter_returns_the_last_matching_lines(chat: ChatSession) -> None:
    reply = await chat.ask("/logs chatty 3 line 5")
    assert reply.text is not None
    assert reply.text.splitlines() == [
        "📜 chatty · last 3 lines matching 'line 5'",
        "chatty line 597",
        "chatty line 598",
        "chatty line 599",
    ]  # far from the tail: the last 3 matches, not the matches among the last 3 lines


async def test_logs_button_posts_the_targets_logs(chat: ChatSession) -> None:
    reply = await chat.ask("/health chatty")
    chat.tap(reply, "l:chatty")
    logs = await chat.fake.wait_for_message(
        OPS.id, lambda m: (m.text or "").startswith("📜 chatty"), after_message_id=reply.message_id
    )
    assert logs.text is not None and "chatty line 2999" in logs.text


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("/logs", "usage: /logs TARGET"),
        ("/logs nosuchbot", "unknown target 'nosuchbot'"),
        ("/logs sshbot 0", "lines must be a whole number from 1 to 10000"),
        ("/logs sshbot 10001", "lines must be a whole number from 1 to 10000"),
        ("/logs sshbot -5", "lines must be a whole number"),
        ("/logs sshbot 1e9", "lines must be a whole number"),
        ("/health web extra", "usage: /health [TARGET]"),
        ("/frobnicate", "unknown command /frobnicate"),
    ],
)
async def test_bad_input_gets_one_line_and_runs_nothing(
    chat: ChatSession, command: str, expected: str
) -> None:
    reply = await chat.ask(command, chat=ALICE_PRIVATE)
    assert reply.text is not None
    assert expected in reply.text
    assert len(reply.text.splitlines()) == 1


# --------------------------------------------------------------------------- the gate


async def _nothing_from_bot(chat: ChatSession, where: Chat, after: int, wait: float = 1.0) -> None:
    await asyncio.sleep(wait)
    later = [m for m in chat.bot_messages(where) if m.message_id > after]
    assert later == [], [m.text for m in later]


async def test_stranger_is_refused_once_and_nothing_runs(chat: ChatSession, canary: Path) -> None:
    canary.unlink(missing_ok=True)
    reply = await chat.ask("/health", user=STRANGER)
    assert reply.text is not None and "Not authorized" in reply.text
    sent = chat.send("/logs sshbot", user=STRANGER)
    await _nothing_from_bot(chat, OPS, sent["message_id"])  # at most one refusal a minute
    assert not canary.exists()
    entries = await chat.services.audit.entries(limit=50)
    refusals = [e for e in entries if e["event"] == "refused"]
    assert [e["user"] for e in refusals[:2]] == [STRANGER.id, STRANGER.id]


async def test_viewer_in_a_foreign_chat_is_refused(chat: ChatSession, canary: Path) -> None:
    canary.unlink(missing_ok=True)
    reply = await chat.ask("/health", user=VIC, chat=FOREIGN)
    assert reply.text is not None and "Not authorized" in reply.text
    await asyncio.sleep(0.5)
    assert not canary.exists()


async def test_stranger_button_tap_executes_nothing(chat: ChatSession, canary: Path) -> None:
    reply = await _health_of_all(chat)
    canary.unlink(missing_ok=True)
    edits = reply.edits
    query = chat.tap(reply, "h", user=STRANGER)
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query
    )
    await asyncio.sleep(0.5)
    current = chat.fake.message(OPS.id, reply.message_id)
    assert current is not None and current.edits == edits
    assert not canary.exists()


async def test_commands_for_another_bot_and_edits_are_ignored(
    chat: ChatSession, canary: Path
) -> None:
    canary.unlink(missing_ok=True)
    sent = chat.send("/health@SomeOtherBot")
    await _nothing_from_bot(chat, OPS, sent["message_id"])
    assert not canary.exists()

    reply = await chat.ask(f"/health@{OPSBOT_USERNAME} canary")
    assert reply.text is not None and reply.text.startswith("✅ canary")

    canary.unlink()
    sent = chat.send("hello")
    chat.fake.edit_text(OPSBOT_TOKEN, OPS, ALICE, sent["message_id"], "/health")
    await _nothing_from_bot(chat, OPS, sent["message_id"])
    assert not canary.exists()


async def test_help_and_bot_commands_follow_the_role(chat: ChatSession) -> None:
    reply = await chat.ask("/help", user=VIC)
    assert reply.text is not None
    assert "You are vic (viewer)" in reply.text
    assert "/health" in reply.text and "/logs" in reply.text
    scopes = chat.fake.commands(OPSBOT_TOKEN)
    per_member = {key: value for key, value in scopes.items() if "chat_member" in key[0]}
    assert per_member, scopes
    names = {c["command"] for commands in per_member.values() for c in commands}
    assert {"health", "logs", "help"} <= names


# --------------------------------------------------------------------------- shell injection

INJECTIONS = [
    "; touch {c}",
    "$(touch {c})",
    "`touch {c}`",
    "| touch {c}",
    "&& touch {c}",
    "|| touch {c}",
    "'; touch {c}; '",
    '"; touch {c}; "',
    "$(IFS=,;cmd=touch,{c};$cmd)",
    "\ntouch {c}",
    "> {c}",
    "< /etc/passwd > {c}",
    "${{IFS}}touch${{IFS}}{c}",
    "-n 1 -f {c}",
    "--help; touch {c}",
    "10; touch {c}",
    "10 $(touch {c})",
    "sshbot; touch {c}",
    "*",
    "../../../../etc/shadow",
]


@pytest.mark.parametrize("payload", INJECTIONS)
async def test_shell_injection_payloads_execute_nothing(
    chat: ChatSession, sshd_server: SSHServer, payload: str
) -> None:
    canary = sshd_server.canary_dir / "pwned"
    before = set(sshd_server.canary_dir.iterdir())
    text = payload.format(c=canary)
    for command in (f"/logs sshbot {text}", f"/logs sshbot 5 {text}", f"/health {text}"):
        reply = await chat.ask(command, chat=ALICE_PRIVATE)
        assert reply.text is not None
    assert not canary.exists()
    assert set(sshd_server.canary_dir.iterdir()) == before


# --------------------------------------------------------------------------- failures


async def test_a_failure_is_reported_to_admins_with_an_id_and_no_traceback(
    chat: ChatSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Replies leave through the outbox (a failing send no longer fails the handler): a bug in
    # a verb is what fails it now.
    async def broken(*args: object) -> object:
        raise RuntimeError("a bug")

    monkeypatch.setitem(VERBS, "help", dataclasses.replace(VERBS["help"], run=broken))
    sent = chat.send("/help")
    notice = await chat.fake.wait_for_message(
        OPS.id, lambda m: "Something failed" in (m.text or ""), after_message_id=sent["message_id"]
    )
    assert notice.text is not None and "error id" in notice.text
    assert "Traceback" not in notice.text


async def test_a_store_outage_in_a_verb_is_logged_in_one_line_without_traceback(
    chat: ChatSession, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def store_down(*args: object) -> object:
        raise RedisConnectionError("Connection closed by server.")

    monkeypatch.setitem(VERBS, "help", dataclasses.replace(VERBS["help"], run=store_down))

    def reported() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "opsbot.handlers.errors"]

    with caplog.at_level(logging.ERROR, logger="opsbot.handlers.errors"):
        chat.send("/help")  # (the chat notice is rate-limited: the test before sent one)
        deadline = time.monotonic() + 10
        while not reported() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    (record,) = reported()
    assert "the store is unreachable (ConnectionError: Connection closed by server.)" in (
        record.getMessage()
    )
    assert record.exc_info is None


async def test_inline_queries_and_channel_posts_execute_nothing(
    chat: ChatSession, canary: Path
) -> None:
    canary.unlink(missing_ok=True)
    query = chat.fake.inline_query(OPSBOT_TOKEN, STRANGER, "/health")
    await chat.fake.wait_for_call(
        "answerInlineQuery", lambda c: c.params["inline_query_id"] == query["id"]
    )
    answer = chat.fake.inline_answers(query["id"])
    assert answer is not None and answer["results"] == []
    channel = Chat(-1001000000777, "channel", "announcements")
    chat.fake.channel_post(OPSBOT_TOKEN, channel, "/health")
    await asyncio.sleep(0.5)
    assert not canary.exists()
    assert chat.fake.bot_messages(channel.id, OPSBOT_TOKEN) == []
    entries = await chat.services.audit.entries(limit=50)
    kinds = [e.get("kind") for e in entries if e["event"] == "refused"]
    assert "inline_query" in kinds and "channel_post" in kinds
