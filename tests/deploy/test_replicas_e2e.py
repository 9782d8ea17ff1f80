"""Exactly once, across replicas and restarts.

- Two opsbot Applications share one real Redis, the way replicas behind a webhook would: the
  updates of 50 concurrent Approve taps from two admins are split between them, and the
  action runs once.
- opsbot is killed (SIGKILL) while a request is pending; a new process with the same data dir
  accepts a tap on the old card and runs the action once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from telegram import Update

from opsbot.app import AnyApplication, build_application
from opsbot.config import Settings
from tests.factories import (
    ALICE,
    BOB,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    base_config,
    counting_target,
    start_opsbot,
    write_config,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.redis import RedisServer

_prefixes = itertools.count()


def counter_config(fake: FakeBotAPI, tmp_path: Path, counter: Path) -> dict[str, Any]:
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {"counter": counting_target(counter)}
    return config


@contextlib.asynccontextmanager
async def replica(settings: Settings) -> AsyncIterator[AnyApplication]:
    """An opsbot that does not poll: updates are handed to it, as a webhook would."""
    app = build_application(settings)
    await app.initialize()
    assert app.post_init is not None
    await app.post_init(app)
    try:
        yield app
    finally:
        await app.shutdown()
        assert app.post_shutdown is not None
        await app.post_shutdown(app)


def take_updates(fake: FakeBotAPI, seen: set[int]) -> list[dict[str, Any]]:
    fresh = [u for u in fake.pending_updates(OPSBOT_TOKEN) if u["update_id"] not in seen]
    seen.update(u["update_id"] for u in fresh)
    return fresh


def request_id(card: FakeMessage) -> str:
    assert card.text is not None
    return card.text.split("id ")[1].split()[0]


async def test_fifty_taps_on_two_replicas_sharing_redis_run_the_action_once(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer
) -> None:
    counter = tmp_path / "runs"
    config = counter_config(fake, tmp_path, counter)
    config["store"] = {
        "backend": "redis",
        "redis_url": redis_server.url,
        "prefix": f"replicas-{next(_prefixes)}",
    }
    settings = write_config(tmp_path / "opsbot.yaml", config)
    seen: set[int] = set()
    async with replica(settings) as first, replica(settings) as second:
        sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/restart counter")
        for update in take_updates(fake, seen):
            await first.process_update(Update.de_json(update, first.bot))
        card = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"])
        data = f"a:{request_id(card)}"
        for i in range(50):
            fake.tap_button(OPSBOT_TOKEN, OPS, ALICE if i % 2 else BOB, card.message_id, data)
        taps = take_updates(fake, seen)
        assert len(taps) == 50
        apps = itertools.cycle([first, second])
        await asyncio.gather(
            *(
                app.process_update(Update.de_json(u, app.bot))
                for u, app in zip(taps, apps, strict=False)
            )
        )
        done = await fake.wait_for_message(
            OPS.id, lambda m: m.message_id == card.message_id and "— done" in (m.text or "")
        )
    assert counter.read_text() == "ran\n"
    assert done.text is not None and "healthy after" in done.text
    answers = [fake.answers(u["callback_query"]["id"]) for u in taps]
    texts = [a["text"] for a in answers if a]
    assert len(texts) == 50, fake.dump_calls(80) + str([m.text for m in fake.bot_messages(OPS.id)])
    assert texts.count("Approved: running.") == 1
    assert all(t.startswith("Already approved by") for t in texts if t != "Approved: running.")


async def wait_polling(fake: FakeBotAPI, since: int) -> None:
    await fake.wait_for_call("getUpdates", since=since, timeout=30)


async def test_a_pending_request_survives_a_killed_opsbot_and_runs_once(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    counter = tmp_path / "runs"
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(counter_config(fake, tmp_path, counter)))
    first = start_opsbot(path)
    try:
        await wait_polling(fake, 0)
        sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/restart counter")
        card = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"], timeout=30)
        await asyncio.sleep(1.5)  # let it confirm the update (its next getUpdates)
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
    assert not counter.exists()

    calls = len(fake.calls)
    second = start_opsbot(path)
    try:
        await wait_polling(fake, calls)
        fake.tap_button(OPSBOT_TOKEN, OPS, ALICE, card.message_id, f"a:{request_id(card)}")
        done = await fake.wait_for_message(
            OPS.id,
            lambda m: m.message_id == card.message_id and "— done" in (m.text or ""),
            timeout=30,
        )
        assert done.text is not None and "approved by alice" in done.text
        await asyncio.sleep(1.0)
    finally:
        second.send_signal(signal.SIGTERM)
        _, stderr = second.communicate(timeout=30)
    assert second.returncode == 0, stderr[-2000:]
    assert counter.read_text() == "ran\n"
    cards = [m for m in fake.bot_messages(OPS.id) if "restart counter" in (m.text or "")]
    assert [m.message_id for m in cards] == [card.message_id]  # no duplicate card either
