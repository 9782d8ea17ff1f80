"""A replica dying mid-pass, on both store backends: its chat is taken over within its
liveness lease, and the same replica waking up as a zombie sends nothing.

The dying replica holds the chat's delivery lease (30 s) and a claim on a send (60 s) when it
stops renewing its liveness (3 s), as a SIGKILLed process does. Another replica's worker, at
the default lease lengths, takes the chat over once that liveness lapses: the send the dead
one was making is not sent again (its outcome is unknown: at most once), the card's next
state is posted anew and what was queued behind it goes out, in order, once. When the frozen
replica resumes, its fence stops it before the Bot API: no call, its claim is given back.
"""

from __future__ import annotations

import asyncio
import time

from telegram import Bot

from opsbot.handlers.outbox_worker import OutboxWorker
from opsbot.metrics import Metrics
from opsbot.render import Reply
from opsbot.state.outbox import Entry, Outbox
from tests.factories import OpenStore, fake_fixture
from tests.fakebotapi import FakeBotAPI

GROUP = -1002000000001

fake = fake_fixture()


async def eventually(check: object, what: str, timeout: float = 20.0) -> None:
    """Poll an async ``check()`` until true (a deadline, not a measure: the leases at stake
    are 30 and 60 s, the liveness 3 s)."""
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_replica_killed_mid_pass_hands_its_chat_over_and_its_zombie_sends_nothing(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    queue = Outbox(open_store())  # a replica without a worker queues the chat's messages
    one = await queue.send(GROUP, Reply("one"))
    two = await queue.send(GROUP, Reply("two"))
    await queue.send(GROUP, Reply("three"))

    dying_outbox = Outbox(open_store())
    frozen, froze = asyncio.Event(), asyncio.Event()
    reply_of = dying_outbox.reply_of

    async def freeze_on_two(entry: Entry) -> Reply | None:
        if entry.ref == two:  # claimed, chat lease held, just before the Bot API call
            froze.set()
            await frozen.wait()
        return await reply_of(entry)

    dying_outbox.reply_of = freeze_on_two  # type: ignore[method-assign]
    metrics = Metrics()
    dying = OutboxWorker(dying_outbox, bots[0], metrics=metrics)
    dying.start()
    survivor: OutboxWorker | None = None
    try:
        await asyncio.wait_for(froze.wait(), 20)
        assert dying.liveness._task is not None
        dying.liveness._task.cancel()  # "SIGKILL": it stops renewing, nothing is cleaned up
        await queue.edit(GROUP, two, Reply("two v2: done"))

        survivor_outbox = Outbox(open_store())  # the default leases: 30 s chat, 60 s claim
        survivor = OutboxWorker(survivor_outbox, bots[1])
        survivor.start()

        async def all_out() -> bool:
            return len(fake.bot_messages(GROUP)) >= 3 and not await survivor_outbox.pending()

        await eventually(all_out, "the survivor delivers the dead replica's chat")
        assert [m.text for m in fake.bot_messages(GROUP)] == ["one", "three", "two v2: done"]
        # "two" was marked lost, then its final state became a message of its own.
        assert await survivor_outbox.message_id(two) == fake.bot_messages(GROUP)[2].message_id

        frozen.set()  # the zombie wakes, its liveness long lapsed

        async def fenced() -> bool:
            sample = metrics.registry.get_sample_value
            return sample("opsbot_outbox_calls_total", {"outcome": "fenced"}) == 1.0

        await eventually(fenced, "the zombie stops at its fence")
        await queue.send(GROUP, Reply("four"))  # still delivered, by the live replica only

        async def four() -> bool:
            return len(fake.bot_messages(GROUP)) >= 4 and not await survivor_outbox.pending()

        await eventually(four, "the next message")
    finally:
        frozen.set()
        await dying.stop()
        if survivor is not None:
            await survivor.stop()
    assert [m.text for m in fake.bot_messages(GROUP)] == [
        "one", "three", "two v2: done", "four",
    ]  # fmt: skip
    assert len(fake.calls_to("sendMessage")) == 4  # "two" never went out, nothing twice
    assert await queue.message_id(one) == fake.bot_messages(GROUP)[0].message_id
