"""Builders shared by the tests: people, chats, configs, and a running opsbot to chat with."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
import yaml

from opsbot.alerting.engine import ALERT_ENGINE, AlertEngine
from opsbot.alerting.event import AlertEvent
from opsbot.app import AnyApplication, build_application
from opsbot.config import Settings, load_config
from opsbot.reach.executors.ssh import SSHHost
from opsbot.services import Services
from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage, User
from tests.lab.ports import free_port
from tests.lab.sshd import SSHServer

REPO = Path(__file__).resolve().parents[1]
OPSBOT_TOKEN = "7000000001:AAopsbotTESTtokenXXXXXXXXXXXXXXXXXXX"
OPSBOT_USERNAME = "opsbot_test_bot"
OPERATED_TOKEN = "7000000002:AAoperatedBOTtokenYYYYYYYYYYYYYYYYYY"
OPERATED_USERNAME = "quiz_prod_bot"
#: The bearer token of the alert webhook in the alerting e2e tests' ``web:`` (``web_on``).
WEBHOOK_TOKEN = "webhook-bearer-secret-0123456789"

ALICE = User(1001, "Alice", "alice")  # admin
BOB = User(1002, "Bob", "bob")  # admin
VIC = User(1003, "Vic", "vic")  # viewer
OSCAR = User(1004, "Oscar", "oscar")  # operator
STRANGER = User(6666, "Mallory", "mallory")

# private chats with opsbot (a command there does not use the group's budget)
ALICE_PRIVATE = Chat(ALICE.id, "private")
VIC_PRIVATE = Chat(VIC.id, "private")

OPS = Chat(-1001000000100, "supergroup", "ops")
INCIDENTS = Chat(-1001000000200, "supergroup", "incidents")
FOREIGN = Chat(-1001000000999, "supergroup", "someone else's group")

PEOPLE = [
    {"id": ALICE.id, "name": "alice", "role": "admin"},
    {"id": BOB.id, "name": "bob", "role": "admin"},
    {"id": VIC.id, "name": "vic", "role": "viewer"},
    {"id": OSCAR.id, "name": "oscar", "role": "operator"},
]

#: Opens another store over the same data: a second replica (the ``open_store`` fixture).
OpenStore = Callable[[], Store]


@contextlib.contextmanager
def fake_bot_api(*chats: Chat, **limits: Any) -> Iterator[FakeBotAPI]:
    """The fake Bot API with opsbot's bot on it (and ``chats``); ``limits`` as
    ``FakeBotAPI`` takes them (its defaults: Telegram's rate limits on)."""
    with FakeBotAPI(**limits) as api:
        api.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        for chat in chats:
            api.add_chat(chat)
        yield api


def fake_fixture(
    *chats: Chat, scope: Literal["function", "module"] = "function", **limits: Any
) -> Any:
    """A ``fake`` fixture of ``fake_bot_api(*chats, **limits)`` for a test module that needs
    other limits or scope than conftest's (``fake = fake_fixture(scope="module")``)."""

    @pytest.fixture(scope=scope, name="fake")
    def fake() -> Iterator[FakeBotAPI]:
        with fake_bot_api(*chats, **limits) as api:
            yield api

    return fake


def ssh_endpoint(server: SSHServer, **overrides: Any) -> dict[str, Any]:
    """The config of an SSH endpoint on the lab sshd, as the lab user, host key checked."""
    return {
        "type": "ssh",
        "host": server.host,
        "port": server.port,
        "user": server.username,
        "key_files": [str(server.client_key)],
        "known_hosts": str(server.known_hosts),
        **overrides,
    }


# status.sh NAME: exit 0 while NAME's process runs (a zombie does not count: nothing reaps here);
# NAME's pid is in NAME.pid beside the script (a ``lab_user_dir`` of the lab sshd).
PID_STATUS_SCRIPT = """#!/bin/sh
cd "$(dirname "$0")" || exit 1
pid=$(cat "$1.pid" 2>/dev/null) || { echo "$1: no pid file" >&2; exit 1; }
stat=$(cat "/proc/$pid/stat" 2>/dev/null) || { echo "$1: pid $pid is gone" >&2; exit 1; }
case "$stat" in *") Z "*) echo "$1: pid $pid is a zombie" >&2; exit 1 ;; esac
echo "$1 running as pid $pid"
"""


def lab_user_dir(server: SSHServer, name: str, files: dict[str, str]) -> Path:
    """A new folder ``name`` in the lab sshd's workdir holding ``files`` (name: text), all
    owned by the lab user (its scripts may write pid files beside themselves)."""
    folder = server.workdir / name
    folder.mkdir()
    for file, text in files.items():
        (folder / file).write_text(text)
    subprocess.run(["chown", "-R", server.username, str(folder)], check=True)
    return folder


def counting_target(counter: Path, then: str = "true") -> dict[str, Any]:
    """A command target whose every restart leaves one line in ``counter`` (see ``runs``),
    then runs ``then``."""
    restart = f"echo ran >> {counter}" + ("" if then == "true" else f"; {then}")
    return {
        "kind": "command",
        "verify_deadline": 10,
        "actions": {"status": ["true"], "restart": ["sh", "-c", restart]},
    }


def runs(counter: Path) -> int:
    """How often a ``counting_target`` was restarted."""
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def redis_store(url: str, name: str) -> dict[str, Any]:
    """The ``store:`` of a config on the lab Redis, under a prefix of its own."""
    return {"backend": "redis", "redis_url": url, "prefix": f"{name}-{uuid.uuid4().hex[:8]}"}


def web_on(token: str, **more: Any) -> dict[str, Any]:
    """The ``web:`` of a config: the HTTP server on a free loopback port."""
    return {"enabled": True, "port": free_port(), "token": token, **more}


def write_config(path: Path, data: dict[str, Any]) -> Settings:
    """Write the YAML file a user would write, and load it the way opsbot does."""
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def base_config(fake: FakeBotAPI, data_dir: Path) -> dict[str, Any]:
    return {
        "telegram": {
            "token": OPSBOT_TOKEN,
            "api_url": fake.url,
            "ops_chat_id": OPS.id,
            "incident_chat_id": INCIDENTS.id,
            "poll_timeout": 1,
            # opsbot paces groups as the Bot API it talks to does (no limit: no pacing)
            "group_messages_per_minute": fake.group_per_minute or 100_000,
            "group_window": fake.group_window,
        },
        "people": PEOPLE,
        "data_dir": str(data_dir),
        # The monitor would run checks in the background; tests that want it turn it on.
        "alerts": {"monitor": {"enabled": False}},
        "endpoints": {},
        "targets": {},
    }


def module_config(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, name: str
) -> tuple[Path, dict[str, Any]]:
    """A test module's own folder ``name`` and a ``base_config`` keeping its data in it, for a
    module-scoped opsbot (``opsbot_chat(fake, folder, config)``)."""
    folder = tmp_path_factory.mktemp(name)
    return folder, base_config(fake, folder / "data")


@contextlib.asynccontextmanager
async def backend_store(
    backend: Literal["sqlite", "redis"], tmp_path: Path, redis_url: str, prefix: str
) -> AsyncIterator[Store]:
    """A store on ``backend``: SQLite in ``tmp_path``, or the lab Redis under ``prefix``;
    closed afterwards."""
    opened: Store
    if backend == "sqlite":
        opened = SQLiteStore(tmp_path / "state.sqlite3")
    else:
        opened = RedisStore(redis_url, prefix=prefix)
    try:
        yield opened
    finally:
        await opened.close()


class Clock:
    """Real time plus an offset the test moves forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class FiringAlerts:
    """What an alert engine holds firing, told of events: ``ingest`` and ``firing`` for a
    burn-rate tick (``objectives.alerts.BurnAlerts``) without the engine's chat."""

    def __init__(self) -> None:
        self.seen: list[AlertEvent] = []
        self.open: set[str] = set()

    async def ingest(self, events: Sequence[AlertEvent]) -> None:
        self.seen.extend(events)
        for event in events:
            (self.open.add if event.status == "firing" else self.open.discard)(event.fingerprint)

    async def firing(self) -> set[str]:
        return set(self.open)


@dataclass
class ChatSession:
    """A running opsbot and the fake Bot API it talks to: the test is the chat."""

    fake: FakeBotAPI
    app: AnyApplication
    services: Services

    def send(self, text: str, user: User = ALICE, chat: Chat = OPS) -> dict[str, Any]:
        return self.fake.send_text(OPSBOT_TOKEN, chat, user, text)

    async def ask(
        self, text: str, user: User = ALICE, chat: Chat = OPS, timeout: float = 20.0
    ) -> FakeMessage:
        """Send a message and wait for opsbot's next message in that chat."""
        sent = self.send(text, user, chat)
        return await self.next_message(sent, chat, timeout)

    async def next_message(
        self, sent: dict[str, Any], chat: Chat = OPS, timeout: float = 20.0
    ) -> FakeMessage:
        """opsbot's next message in ``chat`` after the message ``sent`` (``send``'s result)."""
        return await self.fake.wait_for_message(
            chat.id, timeout=timeout, after_message_id=sent["message_id"], token=OPSBOT_TOKEN
        )

    def tap(self, message: FakeMessage, data: str, user: User = ALICE, chat: Chat = OPS) -> str:
        return self.fake.tap_button(OPSBOT_TOKEN, chat, user, message.message_id, data)

    def bot_messages(self, chat: Chat = OPS) -> list[FakeMessage]:
        return self.fake.bot_messages(chat.id, OPSBOT_TOKEN)


async def post_alerts_webhook(chat: ChatSession, body: object) -> httpx.Response:
    """POST ``body`` to the running opsbot's /alerts/webhook with ``WEBHOOK_TOKEN``."""
    web = chat.services.settings.web
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"http://{web.host}:{web.port}/alerts/webhook",
            json=body,
            headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        )


async def replies_say(
    chat: ChatSession, cases: Sequence[tuple[str, str]], user: User = OSCAR
) -> list[FakeMessage]:
    """``user`` sends each command of ``cases`` (command, what its reply says) in turn; each
    reply says it. The replies, in order."""
    replies = []
    for command, expected in cases:
        reply = await chat.ask(command, user=user)
        assert reply.text is not None and expected in reply.text, (command, reply.text)
        replies.append(reply)
    return replies


async def viewer_refused(chat: ChatSession, command: str) -> None:
    """Vic (a viewer) sends ``command``: opsbot says it needs the operator role."""
    viewer = await chat.ask(command, user=VIC)
    assert viewer.text is not None and "needs the operator role" in viewer.text


def request_id(card: FakeMessage) -> str:
    """The id of the approval request a card shows ("… id 3f2a9c …")."""
    return (card.text or "").split("id ")[1].split()[0]


def approve(chat: ChatSession, card: FakeMessage, user: User = BOB) -> None:
    """``user`` taps Approve on the request ``card`` shows in the ops group."""
    chat.tap(card, f"a:{request_id(card)}", user=user)


async def approved(
    chat: ChatSession, card: FakeMessage, done: str, timeout: float = 60.0
) -> FakeMessage:
    """Bob approves the request on ``card``: the card, once opsbot has edited it to ``done``."""
    approve(chat, card)
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == card.message_id and done in (m.text or ""),
        timeout=timeout,
    )  # fmt: skip


def start_opsbot(config_path: Path) -> subprocess.Popen[str]:
    """``opsbot run`` as its own process (a test may SIGKILL it), its stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "opsbot", "run", "--config", str(config_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(REPO),
             "HOME": str(config_path.parent)},
    )  # fmt: skip


def engine_of(chat: ChatSession) -> AlertEngine:
    """The running opsbot's alert engine (alerts are on in ``base_config``)."""
    return ALERT_ENGINE.of(chat.services)


@contextlib.asynccontextmanager
async def opsbot_chat(
    fake: FakeBotAPI, directory: Path, config: dict[str, Any]
) -> AsyncIterator[ChatSession]:
    """``config`` written as ``directory/opsbot.yaml`` and loaded as a user's would be, and an
    opsbot running on it to chat with."""
    async with running_opsbot(fake, write_config(directory / "opsbot.yaml", config)) as chat:
        yield chat


@contextlib.asynccontextmanager
async def running_opsbot(fake: FakeBotAPI, settings: Settings) -> AsyncIterator[ChatSession]:
    """Start opsbot exactly as ``run_polling`` would (post_init included), then stop it."""
    services = Services.build(settings)
    app = build_application(settings, services)
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)
    await app.start()
    assert app.updater is not None
    await app.updater.start_polling(poll_interval=0.0, timeout=1)
    try:
        yield ChatSession(fake, app, services)
    finally:
        await app.updater.stop()
        await app.stop()
        if app.post_stop is not None:
            await app.post_stop(app)
        await app.shutdown()
        assert app.post_shutdown is not None
        await app.post_shutdown(app)


def lab_ssh_host(server: SSHServer, **changes: Any) -> SSHHost:
    """The lab's sshd as an opsbot SSH host (its own key and known_hosts), with ``changes``."""
    host = SSHHost(
        name="lab",
        host=server.host,
        port=server.port,
        username=server.username,
        client_keys=(server.client_key,),
        known_hosts=server.known_hosts,
        connect_timeout=5.0,
    )
    return dataclasses.replace(host, **changes)
