"""The authorization matrix, generated from the verb and button registry (commands.VERBS and
commands.BUTTONS): every verb and every button × every kind of sender → the expected outcome,
run through the real Application (``Update.de_json`` + ``process_update``) with the bot on the
fake Bot API.

A canary target's every action (status, logs, restart, rollback) appends its name to a file, so
what ran on the host is read back after each cell: nothing may run in a cell whose sender is
not authorized, and a destructive action runs only when another admin approves. A verb or a
button without a row here fails the test.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.app import AnyApplication, build_application
from opsbot.catalog import BUTTONS, VERBS
from opsbot.config import Role
from opsbot.handlers.gate import REFUSAL
from opsbot.incidents.state import INCIDENTS
from opsbot.services import Services
from tests.factories import (
    ALICE,
    BOB,
    FOREIGN,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    STRANGER,
    VIC,
    base_config,
    fake_fixture,
    write_config,
)
from tests.fakebotapi import Chat, FakeBotAPI, User

# How each verb is invoked in its row: arguments whose requirement is the verb's own role.
VERB_ARGS: dict[str, str] = {
    "health": "canary",
    "logs": "canary 5",
    "restart": "canary",
    "rollback": "canary",
    "deploy": "canary 1.0",
    "freeze": "",
    "unfreeze": "",
    "backup": "canary list",
    "audit": "3",
    "alerts": "",
    "ack": "nosuch",
    "silence": "list",
    "unsilence": "nosuch",
    "incident": "list",
    "help": "",
    "backups": "",
    "oncall": "",
    "approve": "nosuch",
    "deny": "nosuch",
    "retry": "nosuch",
    "discover": "nosuch",
    "board": "",
    "slo": "canary",
    "report": "7d",
    "latency": "canary",
}
# What each kind of button carries in its row ({alert} and {request} are filled in).
BUTTON_DATA: dict[str, str] = {
    "h": "h:canary",
    "l": "l:canary",
    "hr": "hr:canary",
    "a": "a:{request}",
    "d": "d:{request}",
    "al": "al:{alert}",
    "ar": "ar:{alert}",
    "ab": "ab:{alert}",
    "as": "as:{alert}",
    "au": "au:{alert}",
    "ak": "ak:{alert}",
    "ai": "ai:{alert}",
    "rt": "rt:{request}",
    "rb": "rb:canary",
    "ri": "ri:{request}",
    "is": "is:{alert}:P2",
    "i": "i:ack INC-99",
    "iu": "iu:INC-99",
    "lc": "lc:canary",
    "ud": "ud:nonotice",  # an update notice's Deploy (none is known: a toast says so)
    "ui": "ui:nonotice",
}
# What may run on the host when a cell's action is allowed to run.
MAY_RUN: dict[str, set[str]] = {
    "health": {"status"},
    "logs": {"logs"},
    "h": {"status"},
    "l": {"logs"},
    "al": {"logs"},
    "a": {"restart", "status"},  # the restart, then its health verification
    "is": {"status"},  # the incident's status card shows its targets' health
}

GROUP_ANONYMOUS_BOT = User(1087968824, "Group", "GroupAnonymousBot")
CHANNEL = Chat(-1001000000777, "channel", "ops announcements")
ANONYMOUS_ADMIN, EDITED, FORWARDED, OTHER_BOT = (
    "anonymous group admin",
    "edited message",
    "forwarded message",
    "/cmd@OtherBot",
)
ROLES: dict[str, tuple[User, Role]] = {
    "viewer": (VIC, Role.viewer),
    "operator": (OSCAR, Role.operator),
    "admin": (ALICE, Role.admin),
    "second admin": (BOB, Role.admin),
}
GATE_REFUSED = ("stranger", "admin in a foreign chat", "channel post", ANONYMOUS_ADMIN)
IGNORED = (EDITED, FORWARDED, OTHER_BOT)
ACTORS = ("stranger", *ROLES, "admin in a foreign chat", "channel post", ANONYMOUS_ADMIN,
          *IGNORED)  # fmt: skip
# A button tap is a callback query from a user: it is never a channel post, an edit, a
# forward or a command addressed to another bot (an anonymous admin taps as themselves).
BUTTON_ACTORS = ("stranger", *ROLES, "admin in a foreign chat")


def expected_verb(actor: str, verb: str) -> str:
    if actor in GATE_REFUSED:
        return "refused"
    if actor in IGNORED:
        return "ignored"
    return "ran" if ROLES[actor][1].allows(VERBS[verb].role) else "denied"


def expected_button(actor: str, key: str) -> str:
    """Requests in the a/d rows are filed by the admin Alice: only another admin approves;
    an admin denies, and Alice may cancel her own; an operator who is neither is refused."""
    if actor in GATE_REFUSED:
        return "refused"
    role = ROLES[actor][1]
    if not role.allows(BUTTONS[key].role):
        return "denied"
    if key == "a":
        return "ran" if actor == "second admin" else "policy"
    if key == "d":
        return "policy" if role is Role.operator else "ran"
    return "ran"


@dataclass
class Cell:
    row: str
    actor: str
    expected: str
    seen: str = ""
    ran: tuple[str, ...] = ()


fake = fake_fixture(CHANNEL, scope="module", group_per_minute=None)


class Matrix:
    """The application, fed one update at a time, and what each update left behind."""

    def __init__(self, fake: FakeBotAPI, app: AnyApplication, services: Services, canary: Path):
        self.fake, self.app, self.services, self.canary = fake, app, services, canary
        self.ids = itertools.count(1)
        self.cards: dict[int, int] = {}

    async def feed(self, kind: str, payload: dict[str, Any]) -> None:
        data = {"update_id": next(self.ids), kind: payload}
        await self.app.process_update(Update.de_json(data, self.app.bot))

    def ran(self) -> list[str]:
        return self.canary.read_text().split() if self.canary.exists() else []

    async def audit_since(self, count: int) -> list[dict[str, Any]]:
        entries = await self.services.audit.entries(limit=10_000)
        return list(reversed(entries))[count:]

    async def audit_count(self) -> int:
        return len(await self.services.audit.entries(limit=10_000))

    async def command(self, actor: str, text: str) -> None:
        """``text`` sent the way ``actor`` sends things."""
        token = OPSBOT_TOKEN
        if actor in ROLES:
            user = ROLES[actor][0]
            await self.feed("message", self.fake.send_text(token, Chat(user.id), user, text))
        elif actor == "stranger":
            await self.feed("message", self.fake.send_text(token, OPS, STRANGER, text))
        elif actor == "admin in a foreign chat":
            await self.feed("message", self.fake.send_text(token, FOREIGN, ALICE, text))
        elif actor == "channel post":
            await self.feed("channel_post", self.fake.channel_post(token, CHANNEL, text))
        elif actor == ANONYMOUS_ADMIN:
            message = self.fake.send_text(token, OPS, GROUP_ANONYMOUS_BOT, text)
            message["from"]["is_bot"] = True
            message["sender_chat"] = OPS.to_api()
            await self.feed("message", message)
        elif actor == EDITED:
            sent = self.fake.send_text(token, OPS, ALICE, "nothing yet")
            edited = self.fake.edit_text(token, OPS, ALICE, sent["message_id"], text)
            await self.feed("edited_message", edited)
        elif actor == FORWARDED:
            message = self.fake.send_text(token, OPS, ALICE, text)
            message["forward_origin"] = {
                "type": "user", "sender_user": BOB.to_api(), "date": message["date"],
            }  # fmt: skip
            await self.feed("message", message)
        elif actor == OTHER_BOT:
            first, _, rest = text.partition(" ")
            sent = self.fake.send_text(token, OPS, ALICE, f"{first}@OtherBot {rest}".strip())
            await self.feed("message", sent)
        else:
            raise AssertionError(f"no way to send as {actor!r}")

    async def tap(self, actor: str, data: str) -> str:
        """``actor`` taps a button with ``data`` on an opsbot message; the toast shown."""
        user, chat = (ALICE, FOREIGN) if actor == "admin in a foreign chat" else (STRANGER, OPS)
        if actor in ROLES:
            user = ROLES[actor][0]
            # Approve/Deny are tapped on the card in the shared chat; others in private.
            chat = OPS if data[0] in "ad" and data[1] == ":" else Chat(user.id)
        card = self.cards.get(chat.id)
        if card is None:  # one opsbot message per chat carries the taps (data is not checked)
            markup = InlineKeyboardMarkup([[InlineKeyboardButton("b", callback_data="h")]])
            card = (await self.app.bot.send_message(chat.id, "b", reply_markup=markup)).message_id
            self.cards[chat.id] = card
        query_id = self.fake.tap_button(OPSBOT_TOKEN, chat, user, card, data, strict=False)
        update = next(
            u for u in self.fake.pending_updates(OPSBOT_TOKEN)
            if u.get("callback_query", {}).get("id") == query_id
        )  # fmt: skip
        await self.feed("callback_query", update["callback_query"])
        answer = self.fake.answers(query_id) or {}
        return str(answer.get("text") or "")

    async def request(self) -> str:
        """A restart request filed by the admin Alice in the ops chat: its opaque id."""
        sent = self.fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/restart canary")
        await self.feed("message", sent)
        card = await self.fake.wait_for_message(  # the card leaves through the outbox
            OPS.id, after_message_id=sent["message_id"], token=OPSBOT_TOKEN
        )
        buttons = [b for row in (card.reply_markup or {}).get("inline_keyboard", []) for b in row]
        return next(b["callback_data"][2:] for b in buttons if b["callback_data"][:2] == "a:")


@pytest_asyncio.fixture(scope="module")
async def matrix(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Matrix]:
    tmp = tmp_path_factory.mktemp("authz")
    canary = tmp / "ran"

    def writes(name: str, *then: str) -> list[str]:
        return ["sh", "-c", f'echo {name} >> "$0"; {"; ".join(then) or "true"}', str(canary)]

    config = base_config(fake, tmp / "data")
    config["telegram"]["allow_private_chats"] = True
    config["targets"] = {
        "canary": {
            "kind": "command",
            "timeout": 5,
            "actions": {
                "status": writes("status"),
                "logs": writes("logs", "echo a log line"),
                "restart": writes("restart"),
                "rollback": writes("rollback"),
            },
        }
    }
    settings = write_config(tmp / "opsbot.yaml", config)
    services = Services.build(settings)
    app = build_application(settings, services)
    await app.initialize()
    assert app.post_init is not None and app.post_shutdown is not None
    await app.post_init(app)
    try:
        yield Matrix(fake, app, services, canary)
    finally:
        await app.post_shutdown(app)
        await app.shutdown()


async def run_verb_cell(matrix: Matrix, verb: str, actor: str) -> Cell:
    cell = Cell(f"/{verb}", actor, expected_verb(actor, verb))
    matrix.canary.unlink(missing_ok=True)
    count = await matrix.audit_count()
    await matrix.command(actor, f"/{verb} {VERB_ARGS[verb]}".strip())
    new = await matrix.audit_since(count)
    cell.ran = tuple(matrix.ran())
    if any(e["event"] == "command" and e.get("verb") == verb for e in new):
        cell.seen = "ran"
    elif any(e["event"] == "requested" and e.get("action") == verb for e in new):
        cell.seen = "ran"  # a destructive verb's own entry: the request it filed
    elif any(e["event"] == "refused" and e.get("verb") == verb for e in new):
        cell.seen = "denied"
    elif any(e["event"] == "refused" and "kind" in e for e in new):
        cell.seen = "refused"
    elif not new:
        cell.seen = "ignored"
    else:
        cell.seen = f"unexpected audit {new}"
    return cell


async def run_button_cell(matrix: Matrix, key: str, actor: str, alert: str) -> Cell:
    cell = Cell(f"button {key}", actor, expected_button(actor, key))
    request = await matrix.request() if key in ("a", "d") else ""
    incidents = INCIDENTS.bound(matrix.services)
    if key == "is" and incidents is not None:  # one open incident per failure: each declares
        for declared in await incidents.all():
            if not declared.resolved:
                await incidents.resolve(declared.id, "matrix")
    matrix.canary.unlink(missing_ok=True)
    count = await matrix.audit_count()
    toast = await matrix.tap(actor, BUTTON_DATA[key].format(alert=alert, request=request))
    new = await matrix.audit_since(count)
    cell.ran = tuple(matrix.ran())
    events = [e["event"] for e in new]
    if toast == REFUSAL or any(e["event"] == "refused" and "kind" in e for e in new):
        cell.seen = "refused"
    elif any(e["event"] == "refused" and e.get("button") == key for e in new):
        cell.seen = "denied"
    elif key in ("a", "d"):
        done = "executed" if key == "a" else "denied"
        cell.seen = "ran" if done in events else "policy" if "refused" in events else toast
    elif "refused" in events or "needs the" in toast:
        cell.seen = f"unexpected refusal {toast!r}"
    else:
        cell.seen = "ran"
    return cell


def check(cell: Cell, row_key: str, destructive: bool) -> str | None:
    """What is wrong with a cell, if anything."""
    if cell.seen != cell.expected:
        return f"expected {cell.expected}, saw {cell.seen}"
    allowed = MAY_RUN.get(row_key, set()) if cell.seen == "ran" else set()
    if not set(cell.ran) <= allowed:
        return f"UNAUTHORIZED EXECUTION {cell.ran}"
    if cell.seen == "ran" and allowed and not cell.ran:
        return "the canary did not run although the action was allowed"
    if destructive and cell.seen == "ran" and row_key != "a" and cell.ran:
        return "a destructive action ran without approval"
    return None


async def test_every_verb_and_button_for_every_sender(matrix: Matrix) -> None:
    assert set(VERB_ARGS) == set(VERBS), "each verb needs its row in VERB_ARGS"
    assert set(BUTTON_DATA) == set(BUTTONS), "each button needs its row in BUTTON_DATA"
    engine = ALERT_ENGINE.bound(matrix.services)
    assert engine is not None
    event = AlertEvent("webhook", "matrix-1", "firing", Severity.critical, "canary down", "canary")
    await engine.ingest([event])
    alert = (await engine.list(firing_only=True, limit=10))[0].id

    cells: list[tuple[Cell, str | None]] = []
    for verb, actor in itertools.product(VERBS, ACTORS):
        cell = await run_verb_cell(matrix, verb, actor)
        cells.append((cell, check(cell, verb, VERBS[verb].destructive)))
    for key, actor in itertools.product(BUTTONS, BUTTON_ACTORS):
        cell = await run_button_cell(matrix, key, actor, alert)
        cells.append((cell, check(cell, key, BUTTONS[key].destructive)))

    table = "\n".join(
        f"{c.row:<14} {c.actor:<24} {c.expected:<8} {c.seen:<8} {' '.join(c.ran)}"
        + (f"  <-- {problem}" if problem else "")
        for c, problem in cells
    )
    problems = [p for _, p in cells if p]
    assert not problems, f"{len(problems)} wrong cells:\n{table}"
    assert len(cells) == len(VERBS) * len(ACTORS) + len(BUTTONS) * len(BUTTON_ACTORS)
    errors = [
        e for e in await matrix.services.audit.entries(limit=10_000) if e["event"] == "error"
    ]
    assert errors == [], json.dumps(errors)
