"""/restart, /rollback, /backup and /audit end to end, with two-person approval.

The operator Oscar asks; the admins Alice and Bob decide by tapping the card's buttons in the
fake Bot API; opsbot acts on a real container (lab dockerd), a real process behind the real
sshd, and a real PostgreSQL database and SQLite file, with state in the default SQLite store.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.factories import (
    ALICE,
    BOB,
    INCIDENTS,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    VIC,
    ChatSession,
    fake_fixture,
    module_config,
    opsbot_chat,
    replies_say,
    ssh_endpoint,
    viewer_refused,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.dockerd import DockerLab, run_http_container
from tests.lab.ports import free_port
from tests.lab.postgres import PostgresServer, postgres_bin_dir
from tests.lab.sshd import SSHServer

TTL = 8  # seconds an unapproved request lives here (short, for the expiry test)

PROCESS_SCRIPT = """#!/bin/sh
# restart|status a long-running process of the lab user, by pid file
dir=$(dirname "$0")
case "$1" in
  status) kill -0 "$(cat "$dir/proc.pid")" 2>/dev/null && echo "running $(cat "$dir/proc.pid")" ;;
  restart)
    [ -f "$dir/proc.pid" ] && kill "$(cat "$dir/proc.pid")" 2>/dev/null
    setsid nohup sleep 100000 >/dev/null 2>&1 < /dev/null &
    echo $! > "$dir/proc.pid"
    echo "restarted as $!" ;;
esac
"""


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture(scope="module")
def process_dir(sshd_server: SSHServer) -> Iterator[Path]:
    script = sshd_server.workdir / "proc.sh"
    script.write_text(PROCESS_SCRIPT)
    script.chmod(0o755)
    subprocess.run(
        ["runuser", "-u", sshd_server.username, "--", str(script), "restart"], check=True
    )
    yield sshd_server.workdir
    pid = (sshd_server.workdir / "proc.pid").read_text().strip()
    subprocess.run(["kill", pid], check=False)


@pytest.fixture(scope="module")
def web_port(docker_lab: DockerLab) -> Iterator[int]:
    port = free_port()
    run_http_container(docker_lab, "act-web", port)
    yield port
    with closing(docker_lab.client()) as client:
        client.containers.get("act-web").remove(force=True)


@pytest.fixture(scope="module")
def rollback_port(docker_lab: DockerLab) -> Iterator[int]:
    """A container started from :1 with env and a restart policy, to be deployed to :2."""
    port = free_port()
    with closing(docker_lab.client()) as client:
        client.containers.run(
            docker_lab.image_v1,
            ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name="act-rb",
            detach=True,
            network_mode="host",
            init=True,
            environment={"QUIZ_MODE": "prod"},
            restart_policy={"Name": "on-failure", "MaximumRetryCount": 3},
        )
    yield port
    with closing(docker_lab.client()) as client:
        client.containers.get("act-rb").remove(force=True)


@pytest.fixture(scope="module")
def sqlite_db(sshd_server: SSHServer) -> Path:
    path = sshd_server.workdir / "faceswap.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users (name) VALUES (?)", [("ann",), ("ben",), ("cy",)])
        db.commit()
    subprocess.run(["chown", sshd_server.username, str(path)], check=True)
    return path


def psql(server: PostgresServer, sql: str) -> str:
    done = subprocess.run(
        [str(postgres_bin_dir() / "psql"), "-h", server.host, "-p", str(server.port),
         "-U", server.user, "-d", server.dbname, "-tAc", sql],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI,
    tmp_path_factory: pytest.TempPathFactory,
    sshd_server: SSHServer,
    docker_lab: DockerLab,
    postgres_server: PostgresServer,
    process_dir: Path,
    web_port: int,
    rollback_port: int,
    sqlite_db: Path,
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "actions")
    config["approvals"] = {"ttl": TTL}
    config["endpoints"] = {
        "lab-ssh": ssh_endpoint(sshd_server),
        "lab-docker": {"type": "docker", "url": docker_lab.base_url},
    }
    bin_dir = postgres_bin_dir()
    script = str(process_dir / "proc.sh")
    config["targets"] = {
        "web": {
            "kind": "container",
            "endpoint": "lab-docker",
            "container": "act-web",
            "verify_deadline": 20,
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{web_port}/health"}],
        },
        "quiz": {
            "kind": "container",
            "endpoint": "lab-docker",
            "container": "act-rb",
            "verify_deadline": 20,
            "checks": [{"type": "http", "url": f"http://127.0.0.1:{rollback_port}/health"}],
        },
        "proc": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "verify_deadline": 20,
            "actions": {"status": [script, "status"], "restart": [script, "restart"]},
        },
        # Its restart fails: a failed card with every next step (it has logs and a rollback)
        "flaky": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "log_file": str(process_dir / "flaky.log"),
            "actions": {
                "status": [script, "status"],
                "restart": ["false"],
                "rollback": [script, "status"],
            },
        },
        # Likewise, with neither logs nor a rollback to offer
        "bare": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "actions": {"status": [script, "status"], "restart": ["false"]},
        },
        "db": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "actions": {
                "status": [
                    str(bin_dir / "pg_isready"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(postgres_server.port),
                ]
            },
            "backups": [
                {
                    "type": "postgres",
                    "database": postgres_server.dbname,
                    "host": "127.0.0.1",
                    "port": postgres_server.port,
                    "user": postgres_server.user,
                    "pg_dump": [str(bin_dir / "pg_dump")],
                    "pg_restore": [str(bin_dir / "pg_restore")],
                    "remote_dir": str(sshd_server.workdir / "backups"),
                },
                {
                    "type": "sqlite",
                    "path": str(sqlite_db),
                    "send_max_bytes": 1_000_000,  # small: sent to the chat as well
                    "remote_dir": str(sshd_server.workdir / "backups"),
                },
            ],
        },
    }
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


async def tap_and_wait(
    chat: ChatSession, card: FakeMessage, data: str, user: Any, done: str, timeout: float = 40
) -> FakeMessage:
    chat.tap(card, data, user=user)
    return await chat.fake.wait_for_message(
        OPS.id,
        lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=timeout,
    )


def toast(chat: ChatSession, query_id: str) -> str:
    answer = chat.fake.answers(query_id)
    return str(answer.get("text") if answer else None)


async def wait_toast(chat: ChatSession, query_id: str) -> str:
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id
    )
    return toast(chat, query_id)


# --------------------------------------------------------------------------- restart


async def test_container_restart_needs_a_second_admin_and_is_verified(
    chat: ChatSession, docker_lab: DockerLab
) -> None:
    with closing(docker_lab.client()) as client:
        started_before = client.containers.get("act-web").attrs["State"]["StartedAt"]
    card = await chat.ask("/restart web", user=OSCAR)
    assert card.text is not None and "restart web — approval needed" in card.text
    assert "requested by oscar" in card.text
    assert "restart" in card.text and "act-web" in card.text  # the exact API call
    buttons = [b["callback_data"] for row in card.reply_markup["inline_keyboard"] for b in row]  # type: ignore[index]
    assert all(len(b.encode()) <= 64 for b in buttons)
    assert not any("web" in b for b in buttons)  # opaque ids, not the target

    operator_tap = chat.tap(card, buttons[0], user=OSCAR)
    assert "needs the admin role" in await wait_toast(chat, operator_tap)
    done = await tap_and_wait(chat, card, buttons[0], ALICE, "restart web — done")
    assert done.text is not None and "healthy after" in done.text
    assert "approved by alice" in done.text
    with closing(docker_lab.client()) as client:
        assert client.containers.get("act-web").attrs["State"]["StartedAt"] != started_before
    copy = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: "restart web" in (m.text or "")
    )
    assert copy.text is not None and "approved by alice" in copy.text


async def test_ssh_process_restart_self_approval_refused(
    chat: ChatSession, process_dir: Path
) -> None:
    pid_before = (process_dir / "proc.pid").read_text()
    card = await chat.ask("/restart proc", user=ALICE)
    approve = f"a:{card.text.split('id ')[1].split()[0]}" if card.text else ""
    own = chat.tap(card, approve, user=ALICE)
    assert "own request" in await wait_toast(chat, own)
    assert (process_dir / "proc.pid").read_text() == pid_before
    done = await tap_and_wait(chat, card, approve, BOB, "restart proc — done")
    assert done.text is not None and "healthy after" in done.text
    assert (process_dir / "proc.pid").read_text() != pid_before


async def test_a_card_reads_like_a_person_wrote_it(chat: ChatSession, process_dir: Path) -> None:
    """What runs, said once; one clock while it runs; the check that proved it at the end."""
    argv = f"{process_dir / 'proc.sh'} restart"
    card = await chat.ask("/restart proc", user=OSCAR)
    assert card.text is not None and f"restart proc on lab-ssh: {argv}\n" in card.text
    assert card.text.count(argv) == 1 and "via" not in card.text, card.text
    request_id = card.text.split("id ")[1].split()[0]
    done = await tap_and_wait(chat, card, f"a:{request_id}", BOB, "restart proc — done")
    assert done.text is not None and done.text.count(argv) == 1, done.text
    proved = re.search(r"healthy after \d+(\.\d)? m?s \(status → running \d+\)", done.text)
    assert proved, done.text
    assert "took" not in done.text  # "healthy after" says how long it took
    for shown in filter(None, done.history):
        for line in shown.splitlines():
            assert len(re.findall(r"\b\d+ s\b", line)) <= 1, shown  # one clock a line
    assert not done.reply_markup or not done.reply_markup.get("inline_keyboard")


def labels(message: FakeMessage) -> list[list[str]]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [[button["text"] for button in row] for row in rows]


def button_data(message: FakeMessage) -> dict[str, str]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return {button["text"]: button["callback_data"] for row in rows for button in row}


async def test_a_failed_card_offers_the_next_steps_that_exist(chat: ChatSession) -> None:
    card = await chat.ask("/restart flaky", user=OSCAR)
    request_id = (card.text or "").split("id ")[1].split()[0]
    failed = await tap_and_wait(chat, card, f"a:{request_id}", BOB, "restart flaky — failed")
    assert failed.text is not None and "restart command failed (exit 1)" in failed.text
    assert labels(failed) == [["📜 Logs", "🔁 Retry", "⏪ Rollback"], ["🚨 Declare incident"]]
    data = button_data(failed)
    assert data["📜 Logs"] == "l:flaky" and data["⏪ Rollback"] == "rb:flaky"

    # Retry files the same request again, through the same approval policy.
    chat.tap(failed, data["🔁 Retry"], user=OSCAR)
    again = await chat.fake.wait_for_message(
        OPS.id, lambda m: "restart flaky — approval needed" in (m.text or ""),
        after_message_id=failed.message_id, timeout=20,
    )  # fmt: skip
    assert again.text is not None and "requested by oscar" in again.text
    assert f"id {request_id}" not in again.text and again.reply_to_message_id == card.message_id
    assert labels(again) == [["✅ Approve", "✖️ Deny"]]

    # Declare incident: an incident about what failed, its target involved.
    declared = chat.tap(failed, data["🚨 Declare incident"], user=OSCAR)
    assert re.fullmatch(r"INC-\d+ declared \(P2\).*", await wait_toast(chat, declared))
    incident = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: "flaky: restart failed" in (m.text or ""), timeout=20
    )
    assert incident.text is not None and "flaky" in incident.text

    # Only the steps that exist for the target: no logs, no rollback here.
    bare = await chat.ask("/restart bare", user=OSCAR)
    bare_id = (bare.text or "").split("id ")[1].split()[0]
    failed = await tap_and_wait(chat, bare, f"a:{bare_id}", BOB, "restart bare — failed")
    assert labels(failed) == [["🔁 Retry", "🚨 Declare incident"]]


async def test_typed_approve_and_deny_work_where_buttons_do_not(
    chat: ChatSession, process_dir: Path
) -> None:
    """/approve ID and /deny ID: the same decisions as the buttons, under the same policy."""
    pid_before = (process_dir / "proc.pid").read_text()
    card = await chat.ask("/restart proc", user=OSCAR)
    request_id = (card.text or "").split("id ")[1].split()[0]
    # /approve is the Approve button typed: the admin role, as the button (approvals.APPROVER)
    own = await chat.ask(f"/approve {request_id}", user=OSCAR)
    assert own.text is not None and "/approve needs the admin role: alice, bob" in own.text
    viewer = await chat.ask(f"/approve {request_id}", user=VIC)
    assert viewer.text is not None and "needs the admin role" in viewer.text
    assert (process_dir / "proc.pid").read_text() == pid_before
    since = len(chat.fake.calls)
    typed = chat.send(f"/approve {request_id.lower()}", user=BOB)  # any case will do
    done = await chat.fake.wait_for_message(
        OPS.id,
        lambda m: m.message_id == card.message_id and "restart proc — done" in (m.text or ""),
        timeout=40,
    )
    assert done.text is not None and "approved by bob" in done.text
    assert (process_dir / "proc.pid").read_text() != pid_before
    # In the order things happened: "Approved: running." (threaded to the card), then the
    # card's result; the card is in this chat, so the result is not said a second time.
    approved = next(
        m for m in chat.bot_messages()
        if m.message_id > typed["message_id"] and m.text == "Approved: running."
    )  # fmt: skip
    assert approved.reply_to_message_id == card.message_id
    calls = [c for c in chat.fake.calls[since:] if c.params.get("chat_id") == OPS.id]

    def first(method: str, found: Any) -> int:
        return next(i for i, c in enumerate(calls) if c.method == method and found(c.params))

    said = first("sendMessage", lambda p: p.get("text") == "Approved: running.")
    finished = first(
        "editMessageText",
        lambda p: p.get("message_id") == card.message_id and "— done" in str(p.get("text")),
    )
    assert said < finished, (said, finished)
    await chat.ask("/help", user=BOB)  # the next reply: nothing else was queued before it
    repeats = [m for m in chat.bot_messages() if "✅ restart proc: healthy" in (m.text or "")]
    assert repeats == [], [m.text for m in repeats]

    second = await chat.ask("/restart proc", user=OSCAR)
    second_id = (second.text or "").split("id ")[1].split()[0]
    denied = await chat.ask(f"/deny {second_id}", user=ALICE)
    assert denied.text is not None and "Denied by alice" in denied.text
    await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == second.message_id and "denied" in (m.text or "")
    )
    bad = await chat.ask("/approve ../../etc", user=BOB)
    assert bad.text is not None and "usage: /approve ID" in bad.text
    unknown = await chat.ask("/approve abc234", user=BOB)
    assert unknown.text is not None and "no request ABC234" in unknown.text


async def test_expired_and_denied_requests_never_run(chat: ChatSession, process_dir: Path) -> None:
    pid_before = (process_dir / "proc.pid").read_text()
    denied = await chat.ask("/restart proc", user=OSCAR)
    request_id = (denied.text or "").split("id ")[1].split()[0]
    await tap_and_wait(chat, denied, f"d:{request_id}", BOB, "denied")

    expiring = await chat.ask("/restart proc", user=OSCAR)
    request_id = (expiring.text or "").split("id ")[1].split()[0]
    # The card turns "expired" at its expiry, by itself (no tap needed).
    shown = await chat.fake.wait_for_message(
        OPS.id,
        lambda m: m.message_id == expiring.message_id and "— expired" in (m.text or ""),
        timeout=TTL + 10,
    )
    assert shown.reply_markup is None or not shown.reply_markup.get("inline_keyboard")
    # A tap that raced the edit (an old client still showing the button) runs nothing.
    late = chat.fake.tap_button(
        OPSBOT_TOKEN, OPS, ALICE, expiring.message_id, f"a:{request_id}", strict=False
    )
    at = re.search(r"expires (\d\d:\d\d UTC)", expiring.text or "")
    assert at is not None, expiring.text  # today: the time alone
    assert await wait_toast(chat, late) == f"{request_id} expired at {at[1]}."
    typed = await chat.ask(f"/approve {request_id.lower()}", user=ALICE)
    assert typed.text is not None and f"{request_id} expired at {at[1]}." in typed.text
    assert (process_dir / "proc.pid").read_text() == pid_before


# --------------------------------------------------------------------------- rollback


async def test_container_rollback_to_the_recorded_known_good_image(
    chat: ChatSession, docker_lab: DockerLab
) -> None:
    healthy = await chat.ask("/health quiz")  # seen healthy on :1: recorded as known-good
    assert healthy.text is not None and healthy.text.startswith("✅ quiz")
    from opsbot.reach.executors.docker import DockerEngine

    engine = DockerEngine("deploy", docker_lab.base_url)
    try:
        await engine.recreate_with_image("act-rb", docker_lab.image_v2)  # a deploy of :2
    finally:
        await engine.close()
    healthy = await chat.ask("/health quiz")
    assert healthy.text is not None and "busybox:2" in healthy.text

    card = await chat.ask("/rollback quiz", user=OSCAR)
    assert card.text is not None and "approval needed" in card.text
    assert "busybox:2" in card.text and "busybox:1" in card.text
    request_id = card.text.split("id ")[1].split()[0]
    done = await tap_and_wait(chat, card, f"a:{request_id}", BOB, "rollback quiz — done")
    assert done.text is not None and "healthy after" in done.text
    with closing(docker_lab.client()) as client:
        container = client.containers.get("act-rb")
        assert container.image.tags == [docker_lab.image_v1]
        assert "QUIZ_MODE=prod" in container.attrs["Config"]["Env"]
        policy = container.attrs["HostConfig"]["RestartPolicy"]
        assert policy == {"Name": "on-failure", "MaximumRetryCount": 3}
        assert container.status == "running"


async def test_rollback_without_history_says_why(chat: ChatSession) -> None:
    reply = await chat.ask("/rollback web", user=OSCAR)
    assert reply.text is not None and "⚠️" in reply.text and reply.reply_markup is None


# --------------------------------------------------------------------------- backups


async def test_backups_of_postgres_and_sqlite_are_verified_listed_and_restorable(
    chat: ChatSession, postgres_server: PostgresServer
) -> None:
    psql(postgres_server, "CREATE TABLE IF NOT EXISTS quiz (id int primary key, q text)")
    psql(postgres_server, "DELETE FROM quiz; INSERT INTO quiz VALUES (1,'a'),(2,'b'),(3,'c')")
    sent = chat.send("/backup db", user=OSCAR)  # not destructive: runs now, with progress
    reply = await chat.fake.wait_for_message(
        OPS.id,
        lambda m: m.document_name is not None,
        after_message_id=sent["message_id"],
        timeout=90,
    )
    assert reply.caption is not None and "backup db — done" in reply.caption, reply.caption
    assert reply.document_name is not None and reply.document_name.startswith("db-sqlite-")
    assert reply.document_bytes is not None
    assert reply.document_bytes.startswith(b"SQLite format 3\x00")  # sent as is, not redacted
    listed = await chat.ask("/backup db list", user=OSCAR)
    assert listed.text is not None
    names = [line.split()[0] for line in listed.text.splitlines()[1:]]
    dump = next(n for n in names if n.startswith("db-postgres-"))
    assert any(n.startswith("db-sqlite-") for n in names)
    assert "sha256" in listed.text

    psql(postgres_server, "DELETE FROM quiz")  # the disaster
    card = await chat.ask(f"/backup db restore {dump}", user=OSCAR)
    assert card.text is not None and "restore db — approval needed" in card.text
    request_id = card.text.split("id ")[1].split()[0]
    restored = await tap_and_wait(
        chat, card, f"a:{request_id}", ALICE, "restore db — done", timeout=90
    )
    assert restored.text is not None and re.search(r"\ntook \d+(\.\d)? m?s\n", restored.text)
    assert psql(postgres_server, "SELECT string_agg(q, ',' ORDER BY id) FROM quiz") == "a,b,c"


# --------------------------------------------------------------------------- audit


async def test_the_audit_trail_shows_who_did_what(chat: ChatSession) -> None:
    reply = await chat.ask("/audit web 50", user=BOB)
    assert reply.text is not None
    assert "requested oscar" in reply.text or "requested" in reply.text
    assert "executed" in reply.text and "approved" in reply.text
    export = await chat.ask("/audit export", user=BOB)
    assert export.document_name is not None and export.document_name.endswith(".jsonl")
    assert export.document_bytes is not None and b'"event": "executed"' in export.document_bytes


async def test_each_request_and_decision_is_one_audit_entry(chat: ChatSession) -> None:
    """Walks what the tests above did: typed and tapped approvals and denials, restarts, a
    backup and a restore. Each act is one entry with who, what and its arguments."""
    trail = list(reversed(await chat.services.audit.entries(limit=5000)))
    acts = [e for e in trail if e["event"] in ("requested", "approved", "denied")]
    per_act = [(e["event"], e["request"], e["who"]) for e in acts]
    assert len(per_act) == len(set(per_act)), per_act  # never twice
    assert all(isinstance(e.get("args"), list) and e.get("action") for e in acts), acts
    # The generic "command" entry does not double a typed act that wrote its own.
    doubled = [
        e for e in trail
        if e["event"] == "command" and e.get("outcome") == "ok"
        and (e["verb"] in ("approve", "deny", "restart", "rollback", "retry")
             or (e["verb"] == "backup" and e["args"][1:2] in ([], ["restore"])))
    ]  # fmt: skip
    assert doubled == [], doubled
    events = {(e["event"], e["action"], e["who"]) for e in acts}
    assert {("approved", "restart", "bob"), ("denied", "restart", "alice")} <= events
    assert ("requested", "backup", "oscar") in events
    restore = next(e for e in acts if e["event"] == "requested" and e["action"] == "restore")
    assert restore["args"] and restore["args"][0].startswith("db-postgres-")
    approved = [e for e in acts if e["event"] == "approved" and e["request"] == restore["request"]]
    assert len(approved) == 1 and approved[0]["args"] == restore["args"]


async def test_bad_requests_run_nothing(chat: ChatSession) -> None:
    await replies_say(chat, [
        ("/restart", "usage: /restart TARGET"),
        ("/restart nosuch", "unknown target"),
        ("/backup db restore nosuch.dump", "no backup named"),
        ("/backup web", "has no backups configured"),
    ])  # fmt: skip
    await viewer_refused(chat, "/restart web")
