"""A day in the chat (issue 17), end to end: one ops group and one incident chat on the fake
Bot API, admins alice and bob, viewer vic; opsbot watches ``web`` (a real local HTTP server
the test makes fail and recover on cue) and keeps a real SQLite file of ``db`` backed up.

The day, in order, as people would live it: /help, /health, /logs, a restart approved by the
other admin, an outage and its alert's buttons, a per-alert silence that hides no new failure,
Declare incident with its severity question, the incident card following recovery and
unpinned on resolve, /backup with no RPO page on day one, /audit with each act's arguments,
and a refusal that names who can. Each step asserts what the chat shows.
"""

from __future__ import annotations

import asyncio
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from opsbot.actions.backups import schedule as backup_schedule
from opsbot.alerting.buttons import BACKUP_NOW
from opsbot.alerting.engine import ALERT_ENGINE
from tests.factories import (
    ALICE,
    BOB,
    INCIDENTS,
    OPS,
    OPSBOT_TOKEN,
    VIC,
    ChatSession,
    base_config,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage


def restart_argv(tmp_path: Path) -> list[str]:
    """web's restart command: it notes that it ran."""
    return ["sh", "-c", f"echo restarted >> {tmp_path / 'restarts'}"]


class Service:
    """A real HTTP server whose paths answer 200 until the test makes them fail."""

    def __init__(self) -> None:
        self.failing: dict[str, int] = {}
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = service.failing.get(self.path, 200)
                body = b"ok" if status == 200 else b"upstream down"
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service() -> Iterator[Service]:
    opened = Service()
    yield opened
    opened.close()


def day_config(fake: FakeBotAPI, tmp_path: Path, service: Service) -> dict[str, Any]:
    db = tmp_path / "shop.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
        conn.executemany("INSERT INTO orders (item) VALUES (?)", [("tea",), ("cake",)])
        conn.commit()
    log = tmp_path / "web.log"
    log.write_text(
        "".join(f"INFO served request {n}\n" for n in range(1, 41))
        + "ERROR upstream timed out after 30s\n"
    )
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {
        "web": {
            "kind": "command",
            "description": "the shop's web front",
            "status_check": False,
            "log_file": str(log),
            "verify_deadline": 10,
            "checks": [
                {"type": "http", "url": f"{service.url}/health", "timeout": 1},
                {"type": "http", "url": f"{service.url}/checkout", "timeout": 1},
            ],
            "actions": {"restart": restart_argv(tmp_path)},
            "monitor": {"enabled": True, "interval": 0.3, "fail_after": 2, "recover_after": 2},
        },
        "db": {
            "kind": "command",
            "actions": {"status": ["test", "-f", str(db)]},
            "rpo": "6h",
            "backups": [
                {
                    "type": "sqlite",
                    "path": str(db),
                    "remote_dir": str(tmp_path / "bk"),
                    "schedule": "0 3 * * *",
                }
            ],
        },
    }
    return config


def labels(message: FakeMessage) -> list[list[str]]:
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return [[b["text"] for b in row] for row in rows]


def buttons(message: FakeMessage) -> dict[str, str]:
    return {
        b["text"]: b["callback_data"]
        for row in (message.reply_markup or {}).get("inline_keyboard", [])
        for b in row
    }


def edited(message: FakeMessage, needle: str) -> Callable[[FakeMessage], bool]:
    """The same message, once its text shows ``needle``."""
    return lambda m: m.message_id == message.message_id and needle in (m.text or "")


async def toast(chat: ChatSession, query_id: str) -> str:
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query_id
    )
    return str((chat.fake.answers(query_id) or {}).get("text", ""))


async def test_a_day_in_the_chat(fake: FakeBotAPI, tmp_path: Path, service: Service) -> None:
    settings = write_config(tmp_path / "opsbot.yaml", day_config(fake, tmp_path, service))
    started = time.monotonic()
    async with running_opsbot(fake, settings) as chat:
        day = Day()
        await morning(chat, tmp_path, day)
        await outage(chat, service, day)
        await afternoon(chat, day)
    for where in (OPS, INCIDENTS):
        shown = [m.text or m.caption or "" for m in chat.bot_messages(where)]
        assert not [t for t in shown if "Something failed" in t], shown  # no crash all day
    assert time.monotonic() - started < 60


@dataclass
class Day:
    """What the day's later steps look back at (the audit names these ids)."""

    restart_id: str = ""
    first_alert: str = ""
    second_alert: str = ""
    denied_id: str = ""


async def morning(chat: ChatSession, tmp_path: Path, day: Day) -> None:
    """/help, /health, /logs, and a restart approved by the other admin."""
    help_alice = await chat.ask("/help", user=ALICE)
    text = help_alice.text or ""
    assert text.startswith("You are alice (admin). Targets: db, web.\n")
    for line in (
        "/restart — Restart a target, once an admin approves",
        "/approve — Approve a request (or tap Approve)",
        "/backup — Back up a target now; list, verify, restore",
    ):
        assert line in text.splitlines(), line
    assert "/oncall" not in text  # no rotation configured: not offered
    listed = [line for line in text.splitlines() if line.startswith("/")]
    assert listed[-2].startswith("/help — ")  # last, before the line on /help COMMAND
    assert not any(e["type"] == "pre" for e in help_alice.entities)  # commands stay tappable

    help_vic = await chat.ask("/help", user=VIC)
    text = help_vic.text or ""
    assert text.startswith("You are vic (viewer).")
    assert "/health — Every target's health, worst first" in text.splitlines()
    for absent in ("/restart", "/approve", "/backup ", "/backup —", "/silence", "/ack"):
        assert absent not in text, absent
    assert len(text) < 600 and len(text.splitlines()) <= 14

    sent = chat.send("/health", user=ALICE)
    health = await chat.fake.wait_for_message(
        OPS.id,
        lambda m: (m.text or "").startswith("Health: "),
        after_message_id=sent["message_id"],
        token=OPSBOT_TOKEN,
    )
    lines = (health.text or "").splitlines()
    assert lines[0].startswith("Health: 2 targets, all healthy · ")
    assert [line.split()[:2] for line in lines[1:]] == [["✅", "db"], ["✅", "web"]]
    assert labels(health) == [["🔄 Refresh"]]  # nothing failing: nothing to fix

    logs = await chat.ask("/logs web 3", user=ALICE)
    assert (logs.text or "").splitlines() == [
        "📜 web · last 3 lines",
        "INFO served request 39",
        "INFO served request 40",
        "ERROR upstream timed out after 30s",
    ]

    card = await chat.ask("/restart web", user=ALICE)
    argv = shlex.join(restart_argv(tmp_path))
    text = card.text or ""
    assert text.startswith("⚠️ restart web — approval needed\nrequested by alice · id ")
    assert f"\nrestart web on local: {argv}\n" in text and text.count(argv) == 1
    assert labels(card) == [["✅ Approve", "✖️ Deny"]]
    request_id = day.restart_id = text.split(" · id ")[1].split()[0]
    own = chat.tap(card, buttons(card)["✅ Approve"], user=ALICE)
    assert "own request" in await toast(chat, own)
    approved = await chat.ask(f"/approve {request_id.lower()}", user=BOB)  # typed, lower case
    assert approved.text == "Approved: running."
    done = await chat.fake.wait_for_message(OPS.id, edited(card, "✅ restart web — done"))
    text = done.text or ""
    assert "approved by bob" in text and text.count(argv) == 1
    assert re.search(
        r"\nhealthy after \d+(\.\d)? m?s \(http /health → 200; 1 more check OK\)\n", text
    ), text
    assert not labels(done)  # nothing left to tap
    assert (tmp_path / "restarts").read_text() == "restarted\n"
    copy = await chat.fake.wait_for_message(
        INCIDENTS.id, lambda m: "restart web" in (m.text or "")
    )
    assert (copy.text or "").endswith("\nrequested by alice, approved by bob")


async def outage(chat: ChatSession, service: Service, day: Day) -> None:
    """web fails; its alert's buttons; a silence of that alert hides no other failure;
    Declare incident; the card follows the recovery and is unpinned on resolve."""
    fake = chat.fake
    service.failing["/health"] = 503
    alert = await fake.wait_for_message(INCIDENTS.id, lambda m: "CRITICAL" in (m.text or ""))
    day.first_alert = buttons(alert)["👀 Ack"].partition(":")[2]
    assert (alert.text or "").endswith(f" · id {day.first_alert}")
    lines = (alert.text or "").splitlines()
    assert lines[0] == "🔥 CRITICAL · web"
    assert lines[1].endswith("/health: HTTP 503 (2 checks in a row)"), lines
    assert lines[2].startswith("since ") and " · monitor · id " in lines[2]
    assert labels(alert) == [
        ["📜 Logs", "🔄 Restart", "🔕 Silence 1h"],
        ["👀 Ack", "🚨 Declare incident"],
    ]
    # Every button works: Logs shows the log; Restart files a request for approval.
    chat.tap(alert, buttons(alert)["📜 Logs"], user=VIC, chat=INCIDENTS)
    shown = await fake.wait_for_message(
        INCIDENTS.id,
        lambda m: (m.text or "").startswith("📜 web · last "),
        after_message_id=alert.message_id,
    )
    # a glance that fits beside the alert (the log has 41 lines): /logs web N for more
    assert (shown.text or "").startswith("📜 web · last 20 lines\n")
    assert (shown.text or "").endswith("ERROR upstream timed out after 30s")
    assert "served request 21\n" not in (shown.text or "") and shown.document_name is None
    chat.tap(alert, buttons(alert)["🔄 Restart"], user=ALICE, chat=INCIDENTS)
    filed = await fake.wait_for_message(
        INCIDENTS.id,
        lambda m: "restart web — approval needed" in (m.text or ""),
        after_message_id=shown.message_id,
    )
    assert (filed.text or "").startswith("⚠️ restart web — approval needed\nrequested by alice")
    day.denied_id = (filed.text or "").split(" · id ")[1].split()[0]
    chat.tap(filed, buttons(filed)["✖️ Deny"], user=BOB, chat=INCIDENTS)  # not now, says bob
    shown = await fake.wait_for_message(INCIDENTS.id, edited(filed, "🚫 restart web — denied"))
    assert (shown.text or "").endswith("\ndenied by bob") and not labels(shown)

    chat.tap(alert, buttons(alert)["🔕 Silence 1h"], user=ALICE, chat=INCIDENTS)
    alert = await fake.wait_for_message(INCIDENTS.id, edited(alert, "🔕 silenced by alice until"))
    assert (alert.text or "").endswith("(this alert only)")
    assert "🔔 Unsilence" in buttons(alert) and "🔕 Silence 1h" not in buttons(alert)

    service.failing["/checkout"] = 500  # a different failure of the same target: posted
    second = await fake.wait_for_message(
        INCIDENTS.id,
        lambda m: "/checkout: HTTP 500" in (m.text or ""),
        after_message_id=shown.message_id,
    )
    assert (second.text or "").startswith("🔥 CRITICAL · web\n")
    assert "silenced" not in (second.text or "") and "🔕 Silence 1h" in buttons(second)
    day.second_alert = buttons(second)["👀 Ack"].partition(":")[2]

    chat.tap(second, buttons(second)["🚨 Declare incident"], user=BOB, chat=INCIDENTS)
    prompt = await fake.wait_for_message(
        INCIDENTS.id, lambda m: "Which severity?" in (m.text or "")
    )
    assert prompt.reply_to_message_id == second.message_id
    assert prompt.text == "🚨 Declare an incident: web: http /checkout HTTP 500\nWhich severity?"
    assert labels(prompt) == [["P0", "P1", "P2"], ["P3"]]
    assert not [m for m in chat.bot_messages(INCIDENTS) if "INC-1" in (m.text or "")]
    declared = chat.tap(prompt, buttons(prompt)["P1"], user=BOB, chat=INCIDENTS)
    assert "INC-1 declared (P1)" in await toast(chat, declared)
    answered = await fake.wait_for_message(INCIDENTS.id, edited(prompt, "INC-1 declared"))
    assert answered.text == "🚨 INC-1 declared (P1) by bob: web: http /checkout HTTP 500"
    assert not labels(answered)  # nothing left to tap twice
    card = await fake.wait_for_message(INCIDENTS.id, lambda m: "INC-1 · P1" in (m.text or ""))
    await fake.wait_for_call("pinChatMessage", lambda c: c.params["message_id"] == card.message_id)
    lines = (card.text or "").splitlines()
    assert lines[0] == "🟠 INC-1 · P1 · web: http /checkout HTTP 500"  # brief, once
    assert "Commander: bob · declared by bob" in lines and "Targets: web" in lines
    assert "Health: ❌ web" in lines
    assert labels(card) == [["👀 Ack", "🩹 Mitigated", "✅ Resolve"], ["✏️ Update"]]

    again = chat.tap(second, buttons(second)["🚨 Declare incident"], user=ALICE, chat=INCIDENTS)
    assert await toast(chat, again) == "Already declared: INC-1 (P1)."  # not a second one
    assert not [m for m in chat.bot_messages(INCIDENTS) if "Which severity?" in (m.text or "")]

    service.failing.clear()  # web recovers: the card says so by itself
    card = await fake.wait_for_message(INCIDENTS.id, edited(card, "Health: ✅ web"), timeout=15)
    assert "🔥 open" in (card.text or "")  # recovered, but nobody said it is over
    for needle in ("/health: HTTP 200", "/checkout: HTTP 200"):
        await fake.wait_for_message(
            INCIDENTS.id,
            lambda m, n=needle: (
                n in (m.text or "") and (m.text or "").startswith("✅ RESOLVED · web")
            ),
        )

    recovery = await fake.wait_for_message(
        INCIDENTS.id, lambda m: (m.text or "").startswith("✅ web recovered after ")
    )
    text = recovery.text or ""  # the alert that was not silenced says it is over, once
    assert "/checkout: HTTP 200 (2 checks in a row) (id " in text and "web: " not in text
    assert text.count("recovered") == 1, text

    chat.tap(card, buttons(card)["✅ Resolve"], user=ALICE, chat=INCIDENTS)
    await fake.wait_for_call(
        "unpinChatMessage", lambda c: c.params.get("message_id") == card.message_id
    )
    card = await fake.wait_for_message(INCIDENTS.id, edited(card, "State: ✅ resolved"))
    assert (card.text or "").startswith("✅ INC-1 · P1 · ") and not card.pinned
    assert labels(card) == [["🔥 Reopen"]]
    assert "resolved — resolved" not in (card.text or "")
    postmortem = await fake.wait_for_message(
        INCIDENTS.id, lambda m: m.document_name == "INC-1-postmortem.md"
    )
    assert (postmortem.caption or "").startswith("✅ INC-1 resolved after ")


async def afternoon(chat: ChatSession, day: Day) -> None:
    """/backup (and no RPO page on day one), /audit with arguments, a refusal naming who can."""
    backup = await chat.ask("/backup db", user=ALICE)
    text = backup.text or ""
    assert text.startswith("✅ backup db — done\nrequested by alice")
    assert "1 backup, verified and checksummed" in text and "first backup" in text

    # The backup scheduler has looked (it notes when it first saw each backup); an RPO is
    # judged a schedule interval later, so day one pages nobody about it.
    deadline = time.monotonic() + 10
    while not await chat.services.store.scan(backup_schedule.FIRST_SEEN):
        assert time.monotonic() < deadline, "the backup scheduler never ran"
        await asyncio.sleep(0.05)
    alerts = await chat.ask("/alerts", user=VIC)
    assert "RPO" not in (alerts.text or "")
    assert not [m.text for m in chat.bot_messages(INCIDENTS) if "RPO" in (m.text or "")]
    for where in (OPS, INCIDENTS):
        assert not [m for m in chat.bot_messages(where) if BACKUP_NOW in buttons(m)]
    engine = ALERT_ENGINE.bound(chat.services)
    assert engine is not None
    firing = await engine.list(firing_only=True, limit=100)
    assert not [a for a in firing if a.source == backup_schedule.SOURCE]

    audit = await chat.ask("/audit 50", user=ALICE)
    lines = (audit.text or "").splitlines()
    assert lines[0].startswith("🧾 last ") and lines[0].endswith(" audit entries")
    oldest_first = [line.split(" ", 2)[2] for line in reversed(lines[1:])]
    restart, first, second = day.restart_id, day.first_alert, day.second_alert
    acts = [  # each act once, in the order of the day, with its arguments
        "command alice help ok",
        "command vic help ok",
        "command alice health ok",
        "command alice logs web 3 ok",
        f"requested alice restart web id={restart}",
        f"refused alice web id={restart} You cannot approve your own request; another admin must.",
        f"approved bob restart web id={restart}",
        f"executed alice restart web id={restart} ok healthy after ",
        "command vic logs web 20 ok",  # the alert's Logs button: a glance of 20 lines
        f"requested alice restart web id={day.denied_id}",
        f"denied bob restart web id={day.denied_id}",
        f"tap alice silence alert={first} for=1h web 🔕 This alert (web · http /health) ",
        f"tap bob declare an incident from an alert, at a severity id={second}:P1",
        "command alice incident resolve INC-1 ok",
        "requested alice backup db id=",
        "executed alice backup db id=",
    ]
    at = [next((i for i, e in enumerate(oldest_first) if e.startswith(act)), -1) for act in acts]
    assert -1 not in at and at == sorted(at), list(zip(acts, at, strict=True))
    said_once = f"approved bob restart web id={restart}"  # not "… approved" twice
    assert said_once in oldest_first

    refused = await chat.ask("/restart web", user=VIC)
    assert refused.text == "/restart needs the operator role: alice, bob, oscar have it"
