"""A Redis Sentinel failover in the middle of an approval, on a real ``opsbot run``.

opsbot's store is ``redis+sentinel://`` on the lab's three real sentinels. A /restart card
is waiting; the master is failed over (``SENTINEL FAILOVER``, or SIGKILL of the master) and
Alice taps Approve at that moment. The action runs once, the card ends "— done" and
"approved by alice", no message is sent twice, and /help typed one after another from the
failover to a second past the promotion is each answered within 10 s.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import time
from pathlib import Path

import pytest

from tests.deploy.test_replicas_e2e import counter_config, request_id, wait_polling
from tests.factories import ALICE, OPS, OPSBOT_TOKEN, OSCAR, runs, start_opsbot
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import LabError
from tests.lab.sentinel import SentinelLab


def promoted_from(lab: SentinelLab, old: int) -> bool:
    try:
        return lab.master_port() != old
    except LabError:  # the sentinels disagree for a moment
        return False


@pytest.mark.parametrize("how", ["sentinel-failover", "sigkill"])
async def test_a_failover_mid_approval_runs_the_action_once(
    fake: FakeBotAPI, tmp_path: Path, sentinel_lab: SentinelLab, how: str
) -> None:
    old = sentinel_lab.settle()
    counter = tmp_path / "runs"
    config = counter_config(fake, tmp_path, counter)
    config["store"] = {"backend": "redis", "redis_url": sentinel_lab.url,
                       "prefix": f"e2e-{how}"}  # fmt: skip
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))
    since = len(fake.calls)
    proc = start_opsbot(path)
    try:
        await wait_polling(fake, since)
        sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/restart counter")
        card = await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"], timeout=30)
        if how == "sigkill":
            await asyncio.to_thread(sentinel_lab.kill_master)
        else:
            await asyncio.to_thread(sentinel_lab.failover)
        failed_over = time.monotonic()
        fake.tap_button(OPSBOT_TOKEN, OPS, ALICE, card.message_id, f"a:{request_id(card)}")
        answered = 0.0  # the longest wait of /help after /help, to a second past promotion
        promoted: float | None = None
        while promoted is None or time.monotonic() - promoted < 1.0:
            typed = time.monotonic()
            probe = fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/help")["message_id"]
            await fake.wait_for_message(
                OPS.id, lambda m, p=probe: m.reply_to_message_id == p, timeout=10
            )
            answered = max(answered, time.monotonic() - typed)
            if promoted is None and await asyncio.to_thread(promoted_from, sentinel_lab, old):
                promoted = time.monotonic()
            assert time.monotonic() - failed_over < 30, "the sentinels never promoted"
        done = await fake.wait_for_message(
            OPS.id,
            lambda m: m.message_id == card.message_id and "— done" in (m.text or ""),
            timeout=30,
        )
        assert done.text is not None and "approved by alice" in done.text
        await asyncio.sleep(1.0)  # a second run or message would be in by now
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        if how == "sigkill":
            sentinel_lab.restart(old)
    assert proc.returncode == 0, stderr[-2000:]
    assert answered < 10
    assert runs(counter) == 1
    assert sentinel_lab.master_port() != old
    sent_texts = collections.Counter(
        (m.reply_to_message_id, m.text) for m in fake.bot_messages(OPS.id)
        if m.message_id > card.message_id
    )  # fmt: skip
    assert all(n == 1 for n in sent_texts.values()), sent_texts
    cards = [m for m in fake.bot_messages(OPS.id) if "restart counter" in (m.text or "")]
    assert [m.message_id for m in cards] == [card.message_id]
    print(f"{how}: /help waited at most {answered:.2f} s for its answer")
