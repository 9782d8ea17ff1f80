"""Every secret of the corpus, through every way in, read back from every sink.

For each backend (SQLite, then Redis) one opsbot runs against the fake Bot API with its web
server on. Each corpus secret is then:

- typed by an admin as a ``/logs`` filter (the audit trail, the chat);
- typed by a stranger (the gate's refusal audit);
- posted as a webhook alert summary (alerts, their event log, the alert messages);
- used as an incident title and as an incident update (incidents, timelines, the status card,
  the post-mortem document);
- carried by an exception raised while handling an update (the log's traceback);
- logged as an ordinary log line;

and afterwards the raw SQLite file bytes, every Redis key's value, the log output and
everything opsbot sent to the Bot API are searched for it. The target's own output (ANSI
colours included) goes through the same reads.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.incidents.state import INCIDENTS
from opsbot.redact import MASK, Redactor, install_log_redaction
from tests.factories import (
    ALICE,
    ALICE_PRIVATE,
    BOB,
    OPS,
    OPSBOT_TOKEN,
    STRANGER,
    ChatSession,
    base_config,
    fake_fixture,
    running_opsbot,
    web_on,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, UploadedFile
from tests.lab.redis import RedisServer
from tests.secrets_corpus import CORPUS, HMAC_SECRET, OPSBOT_BOT_TOKEN, WEB_TOKEN, leaks

fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """opsbot's log as ``opsbot run`` sets it up: every handler redacted, excepthook too."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    saved = sys.excepthook, threading.excepthook, root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        install_log_redaction(Redactor([OPSBOT_BOT_TOKEN, WEB_TOKEN, HMAC_SECRET]))
        yield stream
    finally:
        root.removeHandler(handler)
        for other in root.handlers:  # pytest's own handlers get their formatters back
            inner = getattr(other.formatter, "inner", None)
            if inner is not None:
                other.setFormatter(inner)
        sys.excepthook, threading.excepthook = saved[0], saved[1]
        root.setLevel(saved[2])


def target_log(tmp: Path) -> Path:
    """What the target prints: coloured lines, and every corpus secret."""
    path = tmp / "canary.log"
    lines = ["\x1b[32mINFO\x1b[0m started", "\x1b[1;31mERROR\x1b[0m payment failed\x07"]
    lines += [f"DEBUG {s.text}" for s in CORPUS]
    path.write_text("\n".join(lines) + "\n")
    return path


def sent_to_telegram(fake: FakeBotAPI) -> str:
    """Everything opsbot sent to the Bot API: every parameter and every uploaded file."""
    parts: list[str] = []
    for call in fake.calls:
        if call.token != OPSBOT_TOKEN:
            continue
        for value in call.params.values():
            if isinstance(value, UploadedFile):
                parts.append(value.data.decode("utf-8", errors="replace"))
            else:
                parts.append(json.dumps(value, ensure_ascii=False, default=str))
    return "\n".join(parts)


def redis_values(server: RedisServer, prefix: str) -> bytes:
    """Every value of every key under the prefix, whatever its type."""
    client = redis.Redis(host=server.host, port=server.port)
    try:
        out: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*"):
            kind = client.type(key)
            out.append(key)
            if kind == b"string":
                out.append(client.get(key) or b"")
            elif kind == b"list":
                out.extend(client.lrange(key, 0, -1))
            elif kind == b"hash":
                for field, value in client.hgetall(key).items():
                    out += [field, value]
            elif kind == b"zset":
                out.extend(client.zrange(key, 0, -1))
            elif kind == b"set":
                out.extend(client.smembers(key))
            elif kind == b"none":
                continue  # deleted between SCAN and TYPE (an outbox entry just delivered)
            else:
                raise AssertionError(f"unexpected redis type {kind!r} of {key!r}")
        assert out, "nothing was written to Redis"
        return b"\n".join(out)
    finally:
        client.close()


async def until(predicate: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def push_every_secret(chat: ChatSession, log: logging.Logger) -> None:
    web = chat.services.settings.web
    url = f"http://{web.host}:{web.port}/alerts/webhook"
    opened = await chat.ask("/incident P2 payments failing", user=ALICE, chat=OPS)
    assert "INC-1" in (opened.text or "")
    async with httpx.AsyncClient(timeout=10) as http:
        for secret in CORPUS:
            reply = await chat.ask(f"/logs canary 50 {secret.text}", chat=ALICE_PRIVATE)
            assert "matching" in (reply.text or "")
            chat.send(f"/health {secret.text}", user=STRANGER, chat=OPS)
            body = {"target": "canary", "severity": "critical", "summary": secret.text}
            headers = {"Authorization": f"Bearer {WEB_TOKEN}"}
            assert (await http.post(url, json=body, headers=headers)).status_code == 202
            await chat.ask(f"/incident P3 {secret.text}", chat=ALICE_PRIVATE)
            await chat.ask(f"/incident update INC-1 {secret.text}", chat=ALICE_PRIVATE)
            chat.fake.fail_next("sendDocument", f"Bad Request: file rejected: {secret.text}")
            chat.send("/audit export", chat=ALICE_PRIVATE)
            log.warning("target printed: %s", secret.text)
            try:  # an exception whose text holds the secret, logged with its traceback
                raise RuntimeError(f"executor said: {secret.text}")
            except RuntimeError:
                log.exception("target failed")


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_no_sink_holds_a_secret(
    backend: str,
    fake: FakeBotAPI,
    redis_server: RedisServer,
    tmp_path: Path,
    log_output: io.StringIO,
) -> None:
    assert OPSBOT_BOT_TOKEN == OPSBOT_TOKEN
    config = base_config(fake, tmp_path / "data")
    config["telegram"]["allow_private_chats"] = True
    # Alerts and incident cards go to a private chat: no 20-a-minute group pacing to wait for.
    config["telegram"]["incident_chat_id"] = BOB.id
    config["web"] = web_on(WEB_TOKEN, hmac_secret=HMAC_SECRET)
    prefix = f"secrets-{backend}"
    if backend == "redis":
        config["store"] = {"backend": "redis", "redis_url": redis_server.url, "prefix": prefix}
    logs = target_log(tmp_path)
    actions = {"status": ["true"], "logs": ["cat", str(logs)]}
    config["targets"] = {"canary": {"kind": "command", "actions": actions}}
    settings = write_config(tmp_path / "opsbot.yaml", config)
    log = logging.getLogger("opsbot.test")

    async with running_opsbot(fake, settings) as chat:
        await push_every_secret(chat, log)
        shown = await chat.ask("/logs canary 100", chat=ALICE_PRIVATE)
        engine, incidents = ALERT_ENGINE.bound(chat.services), INCIDENTS.bound(chat.services)
        assert engine is not None and incidents is not None

        async def settled() -> bool:
            alerts = await engine.list(firing_only=False, limit=1000)
            # each refused document (its error text holds a secret) is logged by the outbox
            errors = log_output.getvalue().count("outbox: dropped")
            return len(alerts) >= len(CORPUS) and errors >= len(CORPUS)

        await until(settled)
        resolved = await chat.ask("/incident resolve INC-1 fixed", chat=ALICE_PRIVATE)
        await fake.wait_for_message(
            ALICE_PRIVATE.id, lambda m: (m.document_name or "").endswith("postmortem.md")
        )
        audit = await chat.services.audit.entries(limit=1000)

    # The flow really ran: refusals, commands, errors audited; alerts; a post-mortem.
    events = [e["event"] for e in audit]
    # (a refused document's error, secret and all, is no longer an audited handler error: the
    # outbox logs it and keeps it beside the lost message's ref; both sinks are read below)
    assert events.count("refused") >= len(CORPUS)
    assert "resolved" in (resolved.text or "").lower() or resolved.document_name
    assert shown.document_name or shown.text

    # Chat: what opsbot sent, messages, captions and documents alike.
    sent = sent_to_telegram(fake)
    assert leaks(sent) == [], "sent to Telegram"
    assert MASK in sent
    assert "\x1b" not in sent and "[31m" not in sent and "[0m" not in sent
    assert "payment failed" in sent

    # Logs: tracebacks of the Bot API errors and the plain log lines.
    output = log_output.getvalue()
    assert "Traceback" in output and "target printed" in output
    assert leaks(output) == [], "in the log"

    # The store's raw bytes.
    if backend == "sqlite":
        files = sorted((tmp_path / "data").glob("opsbot.sqlite3*"))
        raw = b"".join(path.read_bytes() for path in files)
    else:
        raw = redis_values(redis_server, prefix)
    assert leaks(raw) == [], f"in the {backend} store"
    assert MASK.encode() in raw
