"""Fuzzing with Hypothesis, bounded to fit CI (each test a fixed number of examples, with a
deadline per example; the whole file runs in well under a minute).

- Arbitrary Telegram updates (any sender, any chat, any text and entities, edits, forwards,
  channel posts, anonymous admins, button taps with any data, inline queries), made by the
  fake Bot API and fed to the real Application with ``Update.de_json`` + ``process_update``.
- Arbitrary command names and arguments straight through ``commands.dispatch``.
- Arbitrary Alertmanager and generic webhook bodies and headers against the real aiohttp
  server.

Throughout: no exception escapes, no ERROR is logged with a traceback, nothing is audited as
an error, the web server answers only 2xx/4xx, and every command that ran on the host is one
of the inventory's configured argv (a recording local executor checks each one).
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update

from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.app import AnyApplication, build_application
from opsbot.catalog import VERBS, dispatch
from opsbot.config import Role
from opsbot.reach.executors import ExecResult
from opsbot.reach.executors.local import LocalExecutor
from opsbot.reach.targets import FILTER_SCRIPT
from opsbot.services import Services
from opsbot.verbs.registry import Caller
from tests.factories import (
    ALICE,
    BOB,
    FOREIGN,
    OPSBOT_TOKEN,
    OPSBOT_USERNAME,
    OSCAR,
    STRANGER,
    VIC,
    base_config,
    fake_fixture,
    web_on,
    write_config,
)
from tests.fakebotapi import Chat, FakeBotAPI, User

WEB_TOKEN = "fuzz-web-token-0123456789"
HMAC_SECRET = "fuzz-hmac-secret-0123456789"
CHANNEL = Chat(-1001000000777, "channel", "announcements")
GROUP_ANONYMOUS_BOT = User(1087968824, "Group", "GroupAnonymousBot")
FUZZ = settings(
    max_examples=120,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


class RecordingExecutor(LocalExecutor):
    """The real local executor, refusing (and remembering) any argv not in the inventory."""

    def __init__(self, allowed: list[list[str]]) -> None:
        super().__init__()
        self.allowed = allowed
        self.outside: list[list[str]] = []
        self.ran = 0

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        probe: bool = False,
    ) -> ExecResult:
        words = [str(a) for a in argv]
        # A filtered /logs: the fixed filter script around a configured argv, the filter and
        # the line count its two positional parameters (data, never code).
        if words[:4] == ["sh", "-c", FILTER_SCRIPT, "sh"] and words[5].isdigit():
            words = words[6:]
        if words not in self.allowed:
            self.outside.append([str(a) for a in argv])
            raise AssertionError(f"executed outside the inventory: {argv!r}")
        self.ran += 1
        return await super().run(argv, timeout=timeout, stdin=stdin, probe=probe)


@dataclass
class Errors(logging.Handler):
    """Every ERROR record, and every record carrying a traceback."""

    records: list[logging.LogRecord] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(logging.DEBUG)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info:
            self.records.append(record)

    def __hash__(self) -> int:
        return id(self)


@dataclass
class Fuzzed:
    fake: FakeBotAPI
    app: AnyApplication
    services: Services
    executor: RecordingExecutor
    errors: Errors
    web_url: str
    cards: dict[int, int] = field(default_factory=dict)
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def feed(self, kind: str, payload: dict[str, Any]) -> None:
        update = Update.de_json({"update_id": next(self.ids), kind: payload}, self.app.bot)
        await self.app.process_update(update)

    async def card(self, chat: Chat) -> int:
        """One opsbot message with a button per chat, for taps to land on."""
        if chat.id not in self.cards:
            markup = InlineKeyboardMarkup([[InlineKeyboardButton("b", callback_data="h")]])
            sent = await self.app.bot.send_message(chat.id, "b", reply_markup=markup)
            self.cards[chat.id] = sent.message_id
        return self.cards[chat.id]

    async def clean(self) -> None:
        """Nothing went wrong so far."""
        shown = [f"{r.levelname} {r.getMessage()}" for r in self.errors.records]
        assert shown == [], shown
        assert self.executor.outside == []
        errors = [e for e in await self.services.audit.entries(limit=50) if e["event"] == "error"]
        assert errors == []


fake = fake_fixture(CHANNEL, scope="module", group_per_minute=None, global_per_second=None)


@pytest_asyncio.fixture(scope="module")
async def fuzzed(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Fuzzed]:
    tmp = tmp_path_factory.mktemp("fuzz")
    (tmp / "app.log").write_text("line one\nERROR two\n\x1b[31mthree\x1b[0m\n")
    actions = {
        "status": ["true"],
        "logs": ["cat", str(tmp / "app.log")],
        "restart": ["true"],
        "rollback": ["true"],
    }
    config = base_config(fake, tmp / "data")
    config["telegram"]["allow_private_chats"] = True
    # Alerts and incident cards in a private chat: no group pacing to wait for.
    config["telegram"]["incident_chat_id"] = BOB.id
    config["web"] = web_on(WEB_TOKEN, hmac_secret=HMAC_SECRET)
    config["targets"] = {"canary": {"kind": "command", "timeout": 5, "actions": actions}}
    settings_ = write_config(tmp / "opsbot.yaml", config)
    services = Services.build(settings_)
    executor = RecordingExecutor([list(argv) for argv in actions.values()])
    services.local = executor
    app = build_application(settings_, services)
    errors = Errors()
    logging.getLogger().addHandler(errors)
    await app.initialize()
    assert app.post_init is not None and app.post_shutdown is not None
    await app.post_init(app)
    web = settings_.web
    try:
        yield Fuzzed(fake, app, services, executor, errors, f"http://{web.host}:{web.port}")
    finally:
        await app.post_shutdown(app)
        await app.shutdown()
        logging.getLogger().removeHandler(errors)


# --------------------------------------------------------------------------- strategies

WORDS = st.sampled_from(
    ["canary", "CANARY", "nosuch", "../../etc/passwd", "*", "0", "-1", "1e9", "99999999999",
     "all", "list", "export", "restore", "P0", "P1", "P9", "INC-1", "1h", "0s", "99999d",
     "$(touch /tmp/pwned)", ";", "`id`", "&&", "|", "\x00", "@alice", "ack", "update"]
)  # fmt: skip
ARGS = st.lists(st.one_of(WORDS, st.text(max_size=30)), max_size=6)
VERB_NAMES = st.one_of(
    st.sampled_from([*VERBS, "start", "", "x" * 80]),
    st.text(max_size=12),
)
COMMANDS = st.builds(
    lambda verb, to, args: f"/{verb}{to} {' '.join(args)}".strip(),
    VERB_NAMES,
    st.sampled_from(["", "", f"@{OPSBOT_USERNAME}", "@OtherBot", "@"]),
    ARGS,
)
TEXTS = st.one_of(COMMANDS, st.text(max_size=400))
KNOWN = [ALICE, BOB, VIC, OSCAR]
USERS = st.one_of(
    st.sampled_from([*KNOWN, STRANGER, GROUP_ANONYMOUS_BOT]),
    st.builds(User, st.integers(1, 2**40), st.text(min_size=1, max_size=12)),
)
CHATS = st.one_of(
    st.sampled_from([FOREIGN, *(Chat(u.id) for u in KNOWN)]),
    st.builds(Chat, st.integers(-(2**40), -1), st.just("supergroup"), st.text(max_size=8)),
)
ENTITY = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["bot_command", "mention", "url", "bold", "text_mention"]),
        "offset": st.integers(-5, 500),
        "length": st.integers(-5, 500),
    }
)


@st.composite
def updates(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(kind, what the fake made) with some fields bent the way a client or forger could."""
    kind = draw(
        st.sampled_from(["message", "message", "edited_message", "channel_post", "callback_query",
                         "inline_query"])
    )  # fmt: skip
    user, chat, text = draw(USERS), draw(CHATS), draw(TEXTS)
    if draw(st.booleans()):  # known people in their private chats reach the verbs
        user = draw(st.sampled_from(KNOWN))
        chat = Chat(user.id)
    return kind, {"user": user, "chat": chat, "text": text, "data": draw(st.text(max_size=80)),
                  "entities": draw(st.none() | st.lists(ENTITY, max_size=3)),
                  "forward": draw(st.booleans()), "sender_chat": draw(st.booleans()),
                  "thread": draw(st.none() | st.integers(-5, 2**31))}  # fmt: skip


async def make(fuzzed: Fuzzed, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    fake, token = fuzzed.fake, OPSBOT_TOKEN
    user, chat, text = spec["user"], spec["chat"], spec["text"]
    if kind == "callback_query":
        card = await fuzzed.card(chat)
        query_id = fake.tap_button(token, chat, user, card, spec["data"], strict=False)
        return next(
            u["callback_query"] for u in reversed(fake.pending_updates(token))
            if u.get("callback_query", {}).get("id") == query_id
        )  # fmt: skip
    if kind == "inline_query":
        return fake.inline_query(token, user, text[:256])
    if kind == "channel_post":
        return fake.channel_post(token, CHANNEL, text)
    message = fake.send_text(token, chat, user, text)
    if kind == "edited_message":
        message = fake.edit_text(token, chat, user, message["message_id"], text + " ")
    if spec["entities"] is not None:
        message["entities"] = spec["entities"]
    if spec["forward"]:
        message["forward_origin"] = {"type": "user", "sender_user": BOB.to_api(), "date": 1}
    if spec["sender_chat"]:
        message["sender_chat"] = chat.to_api()
    if spec["thread"] is not None:
        message["message_thread_id"] = spec["thread"]
        message["is_topic_message"] = True
    return message


# --------------------------------------------------------------------------- the fuzz tests


PLAIN = {"data": "", "entities": None, "forward": False, "sender_chat": False, "thread": None}


@settings(FUZZ, max_examples=300)
@given(update=updates())
@example(
    update=("message", {**PLAIN, "user": VIC, "chat": Chat(VIC.id), "text": "/logs canary 2"})
)
@example(update=("callback_query", {**PLAIN, "user": ALICE, "chat": Chat(ALICE.id), "text": "",
                                    "data": "h:canary"}))  # fmt: skip
async def test_arbitrary_updates_never_crash_nor_run_anything_unknown(
    fuzzed: Fuzzed, update: tuple[str, dict[str, Any]]
) -> None:
    kind, spec = update
    payload = await make(fuzzed, kind, spec)
    await fuzzed.feed(kind, payload)
    await fuzzed.clean()


@settings(FUZZ, max_examples=300)
@given(
    verb=st.one_of(st.sampled_from(list(VERBS)), VERB_NAMES),
    args=ARGS,
    role=st.sampled_from(list(Role)),
)
@example(verb="logs", args=["canary", "3", "ERROR"], role=Role.viewer)
@example(verb="restart", args=["canary"], role=Role.operator)
async def test_arbitrary_commands_through_the_verbs(
    fuzzed: Fuzzed, verb: str, args: list[str], role: Role
) -> None:
    caller = Caller("fuzzer", role, ALICE.id, ALICE.id)
    reply = await dispatch(fuzzed.services, caller, verb, args)
    assert reply.text  # always an answer, never an exception
    await fuzzed.clean()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=5),
    max_leaves=20,
)  # fmt: skip
ALERT_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["firing", "resolved", "", "odd"]) | JSON_VALUES,
        "labels": st.dictionaries(
            st.sampled_from(["alertname", "target", "service", "job", "severity", "x"]),
            st.text(max_size=30) | JSON_VALUES, max_size=5,
        ),
        "annotations": st.dictionaries(st.sampled_from(["summary", "description"]),
                                       st.text(max_size=60) | JSON_VALUES),
        "startsAt": st.sampled_from(["2026-12-01T00:00:00Z", "yesterday", ""]) | JSON_VALUES,
        "fingerprint": st.text(max_size=20) | JSON_VALUES,
    },
)  # fmt: skip
ALERTMANAGER = st.fixed_dictionaries(
    {"version": st.sampled_from(["4", "3"]) | JSON_VALUES},
    optional={"alerts": st.lists(ALERT_ITEM, max_size=4) | JSON_VALUES,
              "status": JSON_VALUES, "groupLabels": JSON_VALUES},
)  # fmt: skip
GENERIC_ITEM = st.fixed_dictionaries(
    {},
    optional={
        "target": st.sampled_from(["canary", "nosuch", ""]) | JSON_VALUES,
        "severity": st.sampled_from(["critical", "warning", "info", "P1", ""]) | JSON_VALUES,
        "summary": st.text(max_size=300) | JSON_VALUES,
        "fingerprint": st.text(max_size=20) | JSON_VALUES,
        "status": st.sampled_from(["firing", "resolved"]) | JSON_VALUES,
        "labels": JSON_VALUES,
    },
)
# Header values a client can send at all: printable ASCII, no surrounding blanks.
VALID_GENERIC = st.fixed_dictionaries(
    {
        "target": st.sampled_from(["canary", "nosuch"]),
        "severity": st.sampled_from(["critical", "warning", "info"]),
        "summary": st.text(min_size=1, max_size=200).filter(str.strip),
    }
)
VALID_ALERTMANAGER = st.builds(
    lambda name, summary, status: {
        "version": "4",
        "alerts": [
            {
                "status": status,
                "labels": {"alertname": name, "target": "canary"},
                "annotations": {"summary": summary},
            }
        ],
    },
    st.text(min_size=1, max_size=20),
    st.text(max_size=100),
    st.sampled_from(["firing", "resolved"]),
)
HEADER_TEXT = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(
    str.strip
)


@st.composite
def webhook_requests(draw: st.DrawFn) -> tuple[str, bytes, dict[str, str]]:
    path = draw(st.sampled_from(["/alerts/alertmanager", "/alerts/webhook"]))
    shaped = (
        ALERTMANAGER
        if path.endswith("alertmanager")
        else GENERIC_ITEM | st.lists(GENERIC_ITEM, max_size=4)
    )
    valid = VALID_ALERTMANAGER if path.endswith("alertmanager") else VALID_GENERIC
    body_kind = draw(st.sampled_from(["valid", "shaped", "shaped", "json", "bytes"]))
    if body_kind == "valid":
        body = json.dumps(draw(valid)).encode()
    elif body_kind == "bytes":
        body = draw(st.binary(max_size=300))
    else:
        body = json.dumps(draw(shaped if body_kind == "shaped" else JSON_VALUES)).encode()
    headers = {"Content-Type": draw(st.sampled_from(["application/json", "text/plain", ""]))}
    auth = draw(st.sampled_from(["bearer", "hmac", "wrong", "none", "garbage"]))
    if auth == "bearer":
        headers["Authorization"] = f"Bearer {WEB_TOKEN}"
    elif auth == "hmac":
        digest = hmac.new(HMAC_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-Opsbot-Signature"] = f"sha256={digest}"
    elif auth == "wrong":
        headers["Authorization"] = f"Bearer {draw(HEADER_TEXT)}".strip()
        headers["X-Opsbot-Signature"] = draw(HEADER_TEXT)
    elif auth == "garbage":
        headers[draw(st.sampled_from(["Authorization", "X-Opsbot-Signature"]))] = draw(HEADER_TEXT)
    return path, body, headers


@FUZZ
@given(request=webhook_requests())
async def test_arbitrary_webhooks_get_only_2xx_or_4xx(
    fuzzed: Fuzzed, request: tuple[str, bytes, dict[str, str]]
) -> None:
    path, body, headers = request
    async with httpx.AsyncClient(base_url=fuzzed.web_url, timeout=10) as http:
        response = await http.post(path, content=body, headers=headers)
    assert 200 <= response.status_code < 500, (response.status_code, response.text)
    await fuzzed.clean()


async def test_the_fuzzing_reached_the_verbs_and_the_host(fuzzed: Fuzzed) -> None:
    """The runs above did exercise the verbs, not only the gate (runs in file order)."""
    entries = await fuzzed.services.audit.entries(limit=10_000)
    ran = {e.get("verb") for e in entries if e["event"] == "command"}
    ran |= {e.get("action") for e in entries if e["event"] == "requested"}  # a request's own
    assert {"health", "logs", "restart"} <= ran, ran  # the explicit examples, at least
    assert any(e["event"] == "refused" for e in entries)
    assert fuzzed.executor.ran > 0 and fuzzed.executor.outside == []
    alerts = await ALERT_ENGINE.of(fuzzed.services).list(firing_only=False, limit=1000)
    assert alerts, "no webhook was ever accepted"
