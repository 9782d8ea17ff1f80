"""Express replies on both store backends: a reply queued where a worker runs is stored
claimed and sent at once, without a pass, and keeps the outbox's rules.

Sent once with its message id recorded (a group's pace slot taken); a replica that dies
after the express write, before or after the call, is recovered by another replica without
a double; and the express path stands aside when something is queued ahead in the chat.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from telegram import Bot

from opsbot.handlers import outbox_worker
from opsbot.handlers.outbox_worker import OutboxWorker
from opsbot.render import Reply
from opsbot.state.outbox import NAMESPACE, Entry, Outbox, Priority
from tests.factories import OpenStore, fake_fixture
from tests.fakebotapi import FakeBotAPI, FakeMessage

PRIVATE = 5_000_001
GROUP = -1002000000001


fake = fake_fixture()


async def settled(outbox: Outbox, fake: FakeBotAPI, chat: int, count: int) -> list[str]:
    """The chat's texts once ``count`` messages arrived and nothing is queued."""
    deadline = time.monotonic() + 20.0
    while len(fake.bot_messages(chat)) < count or await outbox.pending():
        assert time.monotonic() < deadline, texts(fake.bot_messages(chat))
        await asyncio.sleep(0.02)
    return texts(fake.bot_messages(chat))


def texts(messages: list[FakeMessage]) -> list[str]:
    return [m.text or "" for m in messages]


@pytest.mark.parametrize("chat", [PRIVATE, GROUP])
async def test_a_reply_is_sent_at_once_without_a_pass_once_with_its_message_id(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI, chat: int
) -> None:
    outbox = Outbox(open_store())
    worker = OutboxWorker(outbox, bots[0], idle=60.0)  # no pass unless woken
    worker.start()
    try:
        while worker.passes == 0:  # its first pass, over an empty outbox
            await asyncio.sleep(0.01)
        passes = worker.passes
        refs = []
        for i in range(3):  # commands typed one after the other, each answered at once
            refs.append(await outbox.send(chat, Reply(f"reply {i}")))
            await settled_count(fake, chat, i + 1)
            while worker._express:  # it records the message id: the chat is busy till then
                await asyncio.sleep(0.01)
        assert await settled(outbox, fake, chat, 3) == ["reply 0", "reply 1", "reply 2"]
        assert worker.passes == passes, fake.dump_calls()  # each went alone: no scan, no wake
    finally:
        await worker.stop()
    assert len(fake.calls_to("sendMessage")) == 3
    messages = fake.bot_messages(chat)
    assert [await outbox.message_id(ref) for ref in refs] == [m.message_id for m in messages]
    assert await outbox.store.scan(NAMESPACE) == {}  # delivered sends do not linger
    if chat < 0:
        assert await outbox.pace.used(chat) == 3  # each took its slot of the group's window


@pytest.mark.parametrize("dies", ["before the call", "after the call"])
async def test_a_replica_dying_after_the_express_write_is_recovered_without_a_double(
    open_store: OpenStore,
    bots: list[Bot],
    fake: FakeBotAPI,
    monkeypatch: pytest.MonkeyPatch,
    dies: str,
) -> None:
    """The entry was durable and claimed before the call: another replica's pass finds the
    claim lapsed and, the outcome being unknown, never sends it again (at most once, as for
    a pass's claim); the card's next state still arrives, as a message of its own."""
    monkeypatch.setattr(outbox_worker, "CHAT_LEASE", 0.5)  # a dead replica's leases lapse fast
    first, second = Outbox(open_store(), lease=0.5), Outbox(open_store(), lease=0.5)
    dying = OutboxWorker(first, bots[0], idle=60.0)
    dying.start()
    frozen = asyncio.Event()  # never set: the replica stops where it froze
    if dies == "after the call":  # before it records the message id

        async def freeze(entry: Entry, message_id: int | None) -> None:
            await frozen.wait()

        monkeypatch.setattr(first, "delivered", freeze)
    else:  # after the write, before the Bot API call

        async def freeze_call(entry: Entry, deadline: object) -> None:
            await frozen.wait()

        monkeypatch.setattr(dying, "_deliver", freeze_call)
    try:
        await asyncio.sleep(0.1)
        ref = await first.send(GROUP, Reply("card v1"))
        if dies == "after the call":
            await settled_count(fake, GROUP, 1)
        else:
            await asyncio.sleep(0.2)  # the express task reaches the frozen call
        for task in list(dying._express):
            task.cancel()
        [entry] = await second.pending()
        assert entry.state == "claimed"  # durable, and claimed by the replica that died
    finally:
        await dying.stop()
    await second.edit(GROUP, ref, Reply("card v2: done"))
    await asyncio.sleep(0.6)  # its leases run out
    survivor = OutboxWorker(second, bots[1])
    survivor.start()
    try:
        shown = await settled(second, fake, GROUP, 1 if dies == "before the call" else 2)
    finally:
        await survivor.stop()
    if dies == "before the call":
        assert shown == ["card v2: done"]  # v1 never went out; the final state did, once
    else:
        assert shown == ["card v1", "card v2: done"]  # v1 not sent again; v2 posted anew
    assert len(fake.calls_to("sendMessage")) == len(shown)
    assert await second.message_id(ref) == fake.bot_messages(GROUP)[-1].message_id


async def settled_count(fake: FakeBotAPI, chat: int, count: int) -> None:
    deadline = time.monotonic() + 10.0
    while len(fake.bot_messages(chat)) < count:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_a_reply_stands_aside_for_an_earlier_entry_of_another_replica(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    """Another replica queued a reply in the chat that nobody sent yet: ours goes after it."""
    here, there = Outbox(open_store()), Outbox(open_store())
    worker = OutboxWorker(here, bots[0], idle=60.0)  # has not seen the other's entry
    worker.start()
    try:
        await asyncio.sleep(0.1)
        await there.send(PRIVATE, Reply("first (other replica)"))  # it runs no worker
        await here.send(PRIVATE, Reply("second (here)"))
        shown = await settled(here, fake, PRIVATE, 2)
    finally:
        await worker.stop()
    assert shown == ["first (other replica)", "second (here)"]
    assert len(fake.calls_to("sendMessage")) == 2


async def test_a_reply_waits_behind_an_earlier_one_being_retried(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    """The first reply met a 502 and backs off: the next is held behind it, in order."""
    outbox = Outbox(open_store())
    fake.inject("sendMessage", error_code=502, description="Bad Gateway", times=1)
    worker = OutboxWorker(outbox, bots[0])
    worker.start()
    try:
        await asyncio.sleep(0.1)
        await outbox.send(PRIVATE, Reply("one"))
        await asyncio.sleep(0.1)  # its call failed; it waits for its retry
        await outbox.send(PRIVATE, Reply("two"))
        shown = await settled(outbox, fake, PRIVATE, 2)
    finally:
        await worker.stop()
    assert shown == ["one", "two"]


async def test_replies_from_two_replicas_in_one_chat_each_arrive_once_in_their_order(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outboxes = [Outbox(open_store()), Outbox(open_store())]
    workers = [OutboxWorker(o, b) for o, b in zip(outboxes, bots, strict=True)]
    for worker in workers:
        worker.start()
    try:
        await asyncio.gather(*(
            outbox.send(GROUP, Reply(f"r{n} #{i}"), priority=Priority.reply)
            for i in range(5) for n, outbox in enumerate(outboxes)
        ))  # fmt: skip
        shown = await settled(outboxes[0], fake, GROUP, 10)
    finally:
        for worker in workers:
            await worker.stop()
    assert sorted(shown) == sorted(f"r{n} #{i}" for i in range(5) for n in range(2))
    for n in range(2):
        assert [t for t in shown if t.startswith(f"r{n}")] == [f"r{n} #{i}" for i in range(5)]
    assert len(fake.calls_to("sendMessage")) == 10
