"""One audit entry per act: every state-changing command and button, walked one by one.

Each step below is one act a person does in the chat; after it, the trail holds exactly one
new act entry (a ``command`` for what was typed, a ``tap`` for a button), naming who and
what, with its arguments; ``/audit`` shows them and ``/audit export`` carries them.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import yaml

from opsbot.config import Settings
from tests.factories import (
    ALICE,
    BOB,
    INCIDENTS,
    OPS,
    OSCAR,
    ChatSession,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.incidents.test_incidents_e2e import WEBHOOK_TOKEN, fake, settings_for

__all__ = ["fake"]
# What one act leaves: a typed command's entry, a tap's; a request filed or decided, and an
# alert's Ack/Silence/Unsilence, write their own richer entry instead of the generic one.
ACTS = ("command", "tap", "requested", "approved", "denied")


async def acts_since(chat: ChatSession, seen: int) -> list[dict[str, Any]]:
    entries = list(reversed(await chat.services.audit.entries(None, 10_000)))
    return [e for e in entries[seen:] if e["event"] in ACTS]


def as_typed(entry: dict[str, Any]) -> tuple[str, str, list[str]]:
    """An act entry as (who, verb, words) of the command that would do the same."""
    event = entry["event"]
    if event == "requested" and entry["action"] == "restore":  # typed /backup T restore NAME
        return entry["who"], "backup", [entry["target"], "restore", *entry["args"]]
    if event == "requested":
        return entry["who"], entry["action"], [entry["target"], *entry["args"]]
    if event in ("approved", "denied"):
        verb = "approve" if event == "approved" else "deny"
        return entry["who"], verb, [str(entry["request"]).lower()]
    return entry["who"], entry["verb"], entry["args"]


async def trail_length(chat: ChatSession) -> int:
    return len(await chat.services.audit.entries(None, 10_000))


def keys(message: FakeMessage) -> dict[str, str]:
    """A message's buttons' callback data by key ("ak" for "ak:ID")."""
    rows = (message.reply_markup or {}).get("inline_keyboard", [])
    return {b["callback_data"].partition(":")[0]: b["callback_data"] for row in rows for b in row}


def request_of(card: FakeMessage) -> str:
    return (card.text or "").split("id ")[1].split()[0]


def walk_settings(fake: FakeBotAPI, tmp_path: Path) -> Settings:
    """The incidents' config, with a rollback for payments and a SQLite database to back up."""
    settings_for(fake, tmp_path)  # writes opsbot.yaml, extended here
    config = yaml.safe_load((tmp_path / "opsbot.yaml").read_text())
    config["targets"]["payments"]["actions"]["rollback"] = ["true"]
    db = tmp_path / "ledger.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY)")
    config["targets"]["ledger"] = {
        "kind": "command", "actions": {"status": ["true"]},
        "backups": [{"type": "sqlite", "path": str(db), "remote_dir": str(tmp_path / "bk")}],
    }  # fmt: skip
    return write_config(tmp_path / "opsbot.yaml", config)


async def test_every_state_changing_verb_and_button_is_one_audit_entry_with_its_arguments(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = walk_settings(fake, tmp_path)
    async with running_opsbot(fake, settings) as chat:

        async def typed(text: str, user: Any = ALICE, where: Any = OPS) -> FakeMessage:
            seen = await trail_length(chat)
            reply = await chat.ask(text, user=user, chat=where)
            acts = await acts_since(chat, seen)
            verb, *words = text[1:].split()
            who = chat.services.settings.person(user.id)
            assert who is not None
            if verb in ("approve", "deny"):
                words = [w.lower() for w in words]
            assert [as_typed(a) for a in acts] == [(who.name, verb, words)], (text, acts)
            return reply

        async def tapped(message: FakeMessage, data: str, what: str, user: Any = BOB,
                         where: Any = OPS, entries: int = 1) -> None:  # fmt: skip
            seen = await trail_length(chat)
            query = chat.tap(message, data, user=user, chat=where)
            await fake.wait_for_call(
                "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query
            )
            acts = await acts_since(chat, seen)
            assert len(acts) == entries, (data, acts)
            if not entries:
                return
            arg = data.partition(":")[2]
            act = acts[0]
            if act["event"] in ("approved", "denied"):  # the decision's own entry
                assert act["request"] == arg, act
                assert act["event"] == {"approve": "approved", "deny": "denied"}[what], act
            elif "alert" in act:  # an alert's tap: its ids beside the arguments
                assert act["event"] == "tap" and what in act["verb"], act
                assert act["args"]["alert"] == arg and act["alert"] == arg, act
            else:
                assert act["event"] == "tap" and what in act["verb"], acts
                assert act["args"] == {"id": arg}, acts

        async def done(card: FakeMessage, what: str) -> None:
            await fake.wait_for_message(
                OPS.id,
                lambda m: m.message_id == card.message_id and f"{what} — done" in (m.text or ""),
                timeout=60,
            )

        async def alert(summary: str) -> FakeMessage:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    f"http://127.0.0.1:{settings.web.port}/alerts/webhook",
                    json={"target": "payments", "severity": "critical", "summary": summary},
                    headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
                )
            assert response.status_code == 202
            return await fake.wait_for_message(  # the alert's card (not the incident's)
                INCIDENTS.id, lambda m: summary in (m.text or "") and "ak" in keys(m)
            )

        # Two alerts first (more later in a busy minute would be folded into a storm digest).
        first = await alert("5xx at 40%")
        card = await alert("queue stuck")

        # Commands, typed.
        await typed("/incident P1 payments failing payments")
        await typed("/incident ack INC-1", user=BOB)
        await typed("/incident update INC-1 provider is back")
        await typed("/incident severity INC-1 P2")
        await typed("/incident assign INC-1 @bob")
        await typed("/incident mitigated INC-1 retries on")
        await typed("/incident resolve INC-1 provider outage")
        await typed("/incident reopen INC-1 it came back")
        silenced = await typed("/silence payments 30m deploy")
        silence_id = (silenced.text or "").split("· id ")[1].split()[0]
        await typed(f"/unsilence {silence_id}", user=BOB)
        alert_id = keys(first)["ak"].partition(":")[2]
        await typed(f"/ack {alert_id}", user=BOB)
        restart = await typed("/restart payments", user=OSCAR)
        await typed(f"/deny {request_of(restart)}", user=BOB)
        again = await typed("/restart payments", user=OSCAR)
        await typed(f"/approve {request_of(again)}", user=BOB)
        back = await typed("/rollback payments", user=OSCAR)
        await typed(f"/approve {request_of(back)}", user=BOB)
        await done(back, "rollback payments")
        backup = await typed("/backup ledger", user=OSCAR)
        if "approval needed" in (backup.text or ""):
            await typed(f"/approve {request_of(backup)}", user=BOB)
        await done(backup, "backup ledger")
        listed = await chat.ask("/backup ledger list", user=OSCAR)
        name = next(w for w in (listed.text or "").split() if w.startswith("ledger-"))
        restore = await typed(f"/backup ledger restore {name}", user=OSCAR)
        await typed(f"/approve {request_of(restore)}", user=BOB)
        await done(restore, "restore ledger")

        # Buttons, tapped.
        await tapped(card, keys(card)["ak"], "ack", where=INCIDENTS)
        await tapped(card, keys(card)["as"], "silence", where=INCIDENTS)
        await tapped(card, keys(card)["ai"], "", where=INCIDENTS, entries=0)  # only asks
        prompt = await fake.wait_for_message(
            INCIDENTS.id, lambda m: "Which severity?" in (m.text or "")
        )
        await tapped(prompt, keys(prompt)["is"].rsplit(":", 1)[0] + ":P1", "declare",
                     where=INCIDENTS)  # fmt: skip
        third = await chat.ask("/restart payments", user=OSCAR)
        await tapped(third, f"d:{request_of(third)}", "deny")
        fourth = await chat.ask("/restart payments", user=OSCAR)
        await tapped(fourth, f"a:{request_of(fourth)}", "approve")

        # The incident card's buttons: each step one command entry, as if typed.
        incident_card = await fake.wait_for_message(
            INCIDENTS.id, lambda m: " INC-1 · P2 · " in (m.text or "") and "i" in keys(m)
        )
        for step, said in (("ack", "acknowledged"), ("mitigated", "mitigated"),
                           ("resolve", "resolved")):  # fmt: skip
            seen = await trail_length(chat)
            chat.tap(incident_card, f"i:{step} INC-1", user=BOB, chat=INCIDENTS)
            await fake.wait_for_message(
                INCIDENTS.id,
                lambda m: m.reply_to_message_id == incident_card.message_id
                and f"INC-1 {said}" in (m.text or m.caption or ""),  # noqa: B023
            )
            acts = await acts_since(chat, seen)
            assert [(a["event"], a["who"], a["verb"], a["args"]) for a in acts] == [
                ("command", "bob", "incident", [step, "INC-1"])
            ], acts

        # /audit shows the arguments; the export carries them.
        shown = await chat.ask("/audit 60", user=BOB)
        assert shown.text is not None
        assert "incident update INC-1 provider is back" in shown.text
        assert request_of(fourth) in shown.text
        export = await chat.ask("/audit export", user=BOB)
        assert export.document_bytes is not None
        rows = [json.loads(line) for line in export.document_bytes.decode().splitlines()]
        assert any(r.get("args") == ["severity", "INC-1", "P2"] for r in rows)
        filed = {(r["action"], r["target"]) for r in rows if r["event"] == "requested"}
        assert {("rollback", "payments"), ("restore", "ledger")} <= filed, filed
        assert any(
            r["event"] == "approved" and r.get("request") == request_of(fourth) for r in rows
        )
