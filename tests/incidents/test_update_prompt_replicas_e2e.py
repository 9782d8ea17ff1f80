"""The Update prompt across replicas: two ``opsbot run`` processes on one real Redis behind a
webhook "load balancer"; the tap lands on one replica, the reply on the other."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from opsbot.state import prompts
from opsbot.state.store.redis import RedisStore
from tests.deploy.test_replicas_modes_e2e import (
    HOOK_URL,
    SECRET,
    _healthy,
    replicas,
    until,
    write_config,
)
from tests.factories import ALICE, INCIDENTS, OPS, OPSBOT_TOKEN, OSCAR, fake_fixture
from tests.fakebotapi import FakeBotAPI
from tests.lab.redis import RedisServer

fake = fake_fixture(INCIDENTS, group_per_minute=None)


async def test_a_prompt_posted_by_one_replica_is_answered_through_another(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer
) -> None:
    config = write_config(fake, tmp_path, redis_server.url, tmp_path / "runs")
    prefix = json.loads(config.read_text())["store"]["prefix"]
    env = {
        "OPSBOT_TELEGRAM__MODE": "webhook",
        "OPSBOT_TELEGRAM__WEBHOOK__URL": HOOK_URL,
        "OPSBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN": SECRET,
    }
    store = RedisStore(redis_server.url, prefix)  # what the replicas share, as they see it
    try:
        with replicas(config, 2, **env) as group:
            for replica in group:
                await until(lambda r=replica: _healthy(r), 30, "the replica's web server")
            await fake.wait_for_call("setWebhook", timeout=20)
            first, second = ([r.url + "/telegram/hook"] for r in group)

            async def deliver(hook: list[str]) -> None:
                sent = await asyncio.to_thread(fake.deliver_webhook, OPSBOT_TOKEN, hook)
                assert [status for _, _, status in sent] == [200]

            fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/incident P1 checkout failing")
            await deliver(first)
            card = await fake.wait_for_message(INCIDENTS.id, lambda m: m.pinned, timeout=20)
            fake.tap_button(OPSBOT_TOKEN, INCIDENTS, OSCAR, card.message_id, "iu:INC-1")
            await deliver(first)
            prompt = await fake.wait_for_message(
                INCIDENTS.id, lambda m: "Update for INC-1" in (m.text or ""), timeout=20
            )
            deadline = time.monotonic() + 20  # noted once the Bot API has answered the send
            while await prompts.answering(store, INCIDENTS.id, prompt.message_id) is None:
                assert time.monotonic() < deadline, "no replica noted the prompt"
                await asyncio.sleep(0.05)

            reply = fake.send_text(OPSBOT_TOKEN, INCIDENTS, OSCAR, "rolled back the release",
                                   reply_to_message_id=prompt.message_id)  # fmt: skip
            await deliver(second)
            answer = await fake.wait_for_message(  # the answer, threaded to the reply (an
                INCIDENTS.id,  # alert of the config's failing target may come in between)
                lambda m: m.reply_to_message_id == reply["message_id"],
                after_message_id=reply["message_id"],
                timeout=20,
            )
            assert answer.text == "📝 INC-1 updated."
            await fake.wait_for_message(
                INCIDENTS.id,
                lambda m: m.message_id == card.message_id
                and "oscar · update — rolled back the release" in (m.text or ""),
                timeout=20,
            )
    finally:
        await store.close()
    stderrs = "".join(r.stderr() for r in group)
    assert "Traceback" not in stderrs, stderrs[-3000:]
