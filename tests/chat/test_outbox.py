"""The outbox on both store backends, delivered by real workers to the fake Bot API.

Order per chat, priorities, coalesced edits, at most once with two workers racing, pacing
under Telegram's group limit (the fake's 20 a minute: no 429), retry_after honoured, 5xx
retried, a 400 dropped, and a send abandoned mid-call never sent twice.
"""

from __future__ import annotations

import asyncio
import io
import time

from PIL import Image
from telegram import Bot
from telegram.request import HTTPXRequest

from opsbot.handlers.outbox_worker import OutboxWorker
from opsbot.metrics import OUTBOX_OUTCOMES, Metrics
from opsbot.render import Button, Document, Reply
from opsbot.state import prompts
from opsbot.state.outbox import FILES, Outbox, Priority
from opsbot.state.prompts import Prompt
from tests.factories import OPSBOT_TOKEN, OPSBOT_USERNAME, OpenStore, fake_fixture
from tests.fakebotapi import FakeBotAPI, FakeMessage

GROUP = -1002000000001
OTHER = -1002000000002


# Telegram's limits on: 20 a minute per group, 30/s
fake = fake_fixture()


async def drain(outbox: Outbox, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while await outbox.pending():
        assert time.monotonic() < deadline, await outbox.pending()
        await asyncio.sleep(0.05)


async def deliver(outbox: Outbox, bot: Bot) -> None:
    """Run a worker until the outbox is empty."""
    worker = OutboxWorker(outbox, bot)
    worker.start()
    try:
        await drain(outbox)
    finally:
        await worker.stop()


def texts(messages: list[FakeMessage]) -> list[str]:
    return [m.text or "" for m in messages]


async def test_order_per_chat_and_replies_ahead_of_alerts(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    for i in range(3):
        await outbox.send(GROUP, Reply(f"alert {i}"), priority=Priority.alert)
    for i in range(3):
        await outbox.send(GROUP, Reply(f"reply {i}"))
        await outbox.send(OTHER, Reply(f"other {i}"))
    await deliver(outbox, bots[0])
    assert texts(fake.bot_messages(GROUP)) == [
        "reply 0", "reply 1", "reply 2", "alert 0", "alert 1", "alert 2",
    ]  # fmt: skip
    assert texts(fake.bot_messages(OTHER)) == ["other 0", "other 1", "other 2"]


async def test_edits_queued_before_their_message_become_its_text_and_later_ones_coalesce(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    ref = await outbox.send(GROUP, Reply("v0"))
    for i in range(1, 6):
        await outbox.edit(GROUP, ref, Reply(f"v{i}"))  # all queued before the message exists
    await outbox.pin(GROUP, ref)
    await deliver(outbox, bots[0])
    [message] = fake.bot_messages(GROUP)
    assert message.text == "v5" and message.pinned
    assert message.history == ["v5"]  # posted with its newest text: one call, not two
    assert len(fake.calls_to("sendMessage")) == 1
    assert fake.calls_to("editMessageText") == []
    assert await outbox.message_id(ref) == message.message_id

    for i in range(6, 11):  # queued while no worker runs: one edit, the newest text
        await outbox.edit(GROUP, ref, Reply(f"v{i}"))
    await deliver(outbox, bots[0])
    assert fake.bot_messages(GROUP)[0].text == "v10"
    assert len(fake.calls_to("editMessageText")) == 1


async def test_two_workers_racing_send_each_entry_once(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    first, second = Outbox(open_store()), Outbox(open_store())
    chats = [-1002000000100 - i for i in range(10)]
    for n in range(3):
        for chat in chats:
            await first.send(chat, Reply(f"{chat} #{n}"))
    workers = [OutboxWorker(first, bots[0]), OutboxWorker(second, bots[1])]
    for worker in workers:
        worker.start()
    try:
        await drain(first)
    finally:
        for worker in workers:
            await worker.stop()
    for chat in chats:
        assert texts(fake.bot_messages(chat)) == [f"{chat} #{n}" for n in range(3)]
    assert len(fake.calls_to("sendMessage")) == 30


async def test_a_group_gets_at_most_twenty_a_minute_and_no_429(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    for i in range(25):
        await outbox.send(GROUP, Reply(f"m{i}"))
    worker = OutboxWorker(outbox, bots[0])
    worker.start()
    try:
        deadline = time.monotonic() + 10
        while len(fake.bot_messages(GROUP)) < 19 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(2)  # replies stop at 19: the 20th slot is a critical alert's
        assert texts(fake.bot_messages(GROUP)) == [f"m{i}" for i in range(19)]
        assert len(await outbox.pending()) == 6
        await outbox.send(GROUP, Reply("CRITICAL"), priority=Priority.critical)
        await fake.wait_for_message(GROUP, lambda m: m.text == "CRITICAL", timeout=2)
        await asyncio.sleep(1)  # the 21st would be a 429: it waits for the minute instead
        assert len(fake.bot_messages(GROUP)) == 20
    finally:
        await worker.stop()
    assert fake.too_many_requests == []


async def test_one_window_per_group_counts_edits_and_keeps_room_for_replies(
    open_store: OpenStore,
) -> None:
    """Telegram's minute shrunk to 2 s; edits count as the fake counts them. Alerts stop at
    15 calls a window, counter edits at 8, so a reply typed in a full window goes at once."""
    with FakeBotAPI(group_window=2.0, count_edits=True) as fake:
        fake.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
        outbox = Outbox(open_store(), window=2.0)
        first = await outbox.send(GROUP, Reply("alert 0"), priority=Priority.alert)
        async with Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as bot:
            worker = OutboxWorker(outbox, bot, idle=0.05)
            worker.start()
            try:
                await fake.wait_for_message(GROUP, lambda m: m.text == "alert 0", timeout=5)
                for i in range(1, 25):
                    await outbox.send(GROUP, Reply(f"alert {i}"), priority=Priority.alert)
                await outbox.edit(GROUP, first, Reply("alert 0 ×5"), priority=Priority.update)
                deadline = time.monotonic() + 5
                while len(fake.bot_messages(GROUP)) < 15 and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                await asyncio.sleep(0.3)
                assert len(fake.bot_messages(GROUP)) == 15  # the window is full for alerts
                await outbox.send(GROUP, Reply("the answer to a command"))
                reply = await fake.wait_for_message(GROUP, lambda m: m.text.startswith("the"),
                                                    timeout=1.0)  # fmt: skip
                assert reply.message_id == 16  # at once, ahead of the alerts still queued
                await drain(outbox)
            finally:
                await worker.stop()
        assert texts(fake.bot_messages(GROUP))[0] == "alert 0 ×5"
        calls = [c for c in fake.calls if c.params.get("chat_id") == GROUP]
        assert [c.method for c in calls].index("editMessageText") > 16  # counters come last
        at = [c.at for c in calls]
        assert max(sum(1 for t in at if t0 <= t < t0 + 2.0) for t0 in at) <= 20
        assert fake.too_many_requests == []


async def test_a_stale_text_is_ignored_and_a_once_send_is_queued_once(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    """Two replicas editing one message from one document: the older version loses, in
    whichever order they queue. Two queueing one announcement (one ref): one message."""
    one, two = Outbox(open_store()), Outbox(open_store())
    ref = Outbox.new_ref()
    for outbox in (one, two, one):
        assert await outbox.send(GROUP, Reply("firing"), ref=ref, once=True) == ref
    await two.edit(GROUP, ref, Reply("firing ×3"), priority=Priority.update, stamp=30)
    await one.edit(GROUP, ref, Reply("firing ×2"), priority=Priority.update, stamp=20)
    await one.edit(GROUP, ref, Reply("resolved"), priority=Priority.alert, stamp=40)
    await two.edit(GROUP, ref, Reply("firing ×3"), priority=Priority.update, stamp=30)
    [send] = await one.pending()  # the newest text went into the send still queued
    assert send.kind == "send" and send.reply == Reply("resolved")
    worker = OutboxWorker(one, bots[0])
    worker.start()
    try:
        await drain(one)
        await two.send(GROUP, Reply("firing"), ref=ref, once=True)  # sent already: nothing
        await two.edit(GROUP, ref, Reply("firing ×3"), stamp=30)  # older than shown: nothing
        await drain(one)
    finally:
        await worker.stop()
    [message] = fake.bot_messages(GROUP)
    assert message.text == "resolved" and message.history == ["resolved"]


async def test_retry_after_is_honoured_and_5xx_retried_and_400_dropped(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    fake.inject("sendMessage", error_code=429, description="Too Many Requests: retry after 2",
                retry_after=2)  # fmt: skip
    fake.inject("sendMessage", error_code=502, times=3)
    started = time.monotonic()
    await outbox.send(GROUP, Reply("after a 429 and three 502s"))
    await outbox.send(GROUP, Reply("next in line"))
    metrics = Metrics()
    worker = OutboxWorker(outbox, bots[0], metrics=metrics)
    worker.start()
    try:
        await drain(outbox)
        took = time.monotonic() - started
        fake.inject("sendMessage", error_code=400, description="Bad Request: chat not found")
        await outbox.send(GROUP, Reply("refused for good"))
        await outbox.send(GROUP, Reply("still delivered"))
        await drain(outbox)
    finally:
        await worker.stop()
    assert took >= 2.0  # retry_after honoured
    sample = metrics.registry.get_sample_value
    counted = {o: sample("opsbot_outbox_calls_total", {"outcome": o}) for o in OUTBOX_OUTCOMES}
    assert counted == {"rate_limited": 1, "retried": 3, "dropped": 1, "delivered": 3,
                       "fenced": 0}  # fmt: skip
    assert b"opsbot_outbox_pending 0.0" in metrics.render()
    assert texts(fake.bot_messages(GROUP)) == [
        "after a 429 and three 502s", "next in line", "still delivered",
    ]  # fmt: skip


async def test_a_hung_call_times_out_and_is_retried(
    open_store: OpenStore, fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    fake.inject("sendMessage", hang=2.0)
    quick = HTTPXRequest(read_timeout=1.0)
    async with Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url, request=quick) as bot:
        await outbox.send(GROUP, Reply("through a hang"))
        await deliver(outbox, bot)
    assert texts(fake.bot_messages(GROUP)) == ["through a hang"]


async def test_a_send_abandoned_mid_call_is_never_sent_twice_but_its_card_arrives(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    """A replica claimed a send and died: its outcome is unknown, so it is not sent again;
    the card's next state is posted as a new message instead."""
    outbox = Outbox(open_store(), lease=0.5)
    ref = await outbox.send(GROUP, Reply("card v1"))
    [entry] = await outbox.pending()
    assert await outbox.claim(entry, "a replica that dies now") is not None
    await outbox.edit(GROUP, ref, Reply("card v2: done"))
    await asyncio.sleep(0.6)  # its lease runs out
    await deliver(outbox, bots[0])
    assert texts(fake.bot_messages(GROUP)) == ["card v2: done"]
    assert await outbox.message_id(ref) == fake.bot_messages(GROUP)[0].message_id


async def test_a_document_is_kept_apart_and_sent_with_its_bytes(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    store = open_store()
    outbox = Outbox(store)
    content = bytes(range(256)) * 4096  # 1 MiB, binary
    ref = await outbox.send(GROUP, Reply("backup", document=Document("db.dump", content, True)))
    [entry] = await outbox.pending()
    assert "content" not in entry.doc["reply"]["document"]  # the scanned entry stays small
    await deliver(outbox, bots[0])
    [message] = fake.bot_messages(GROUP)
    assert message.document_name == "db.dump" and message.document_bytes == content
    assert message.caption == "backup"
    assert await store.get(FILES, str(ref)) is None  # nothing left behind


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


async def test_a_photo_carries_its_text_as_caption_or_goes_before_a_long_one(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    chart = Document("chart.png", png(640, 320), raw=True, photo=True)
    buttons = (Button("🔄 Refresh", "h:quizbot"),)
    await outbox.send(GROUP, Reply("quizbot: ok", block="http 200", document=chart,
                                   buttons=buttons))  # fmt: skip
    long = "\n".join(f"check {n}: ok, answered in 12 ms" for n in range(40))  # > 1,024
    await outbox.send(GROUP, Reply("paybot: ok", block=long, document=chart, buttons=buttons))
    await deliver(outbox, bots[0])
    short, photo, text = fake.bot_messages(GROUP)
    assert (short.photo, short.caption) == ((640, 320), "quizbot: ok\nhttp 200")
    assert short.document_bytes == chart.content and short.reply_markup is not None
    assert (photo.photo, photo.caption, photo.reply_markup) == ((640, 320), None, None)
    assert text.text == f"paybot: ok\n{long}" and text.reply_markup is not None


async def test_a_photo_edited_by_message_id_gets_the_new_picture_in_place(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    """A refreshed chart (Refresh on /health TARGET) edits the photo message, as a text
    message's refresh edits its text: editMessageMedia, no second message."""
    outbox = Outbox(open_store())
    buttons = (Button("🔄 Refresh", "h:quizbot"),)
    first = Document("chart.png", png(640, 320), raw=True, photo=True)
    await outbox.send(GROUP, Reply("quizbot: ok", document=first, buttons=buttons))
    await deliver(outbox, bots[0])
    (sent,) = fake.bot_messages(GROUP)
    newer = Document("chart.png", png(640, 321), raw=True, photo=True)
    await outbox.edit_message(GROUP, sent.message_id, Reply("quizbot: slow", document=newer,
                                                           buttons=buttons))  # fmt: skip
    await deliver(outbox, bots[0])
    (edited,) = fake.bot_messages(GROUP)
    assert (edited.message_id, edited.photo, edited.caption) == (
        sent.message_id, (640, 321), "quizbot: slow"
    )  # fmt: skip
    assert edited.document_bytes == newer.content and edited.reply_markup is not None
    assert len(fake.calls_to("editMessageMedia")) == 1


async def test_a_photo_telegram_cannot_read_is_dropped_not_retried(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    outbox = Outbox(open_store())
    broken = Document("chart.png", b"not an image", raw=True, photo=True)
    await outbox.send(GROUP, Reply("quizbot: ok", document=broken))
    await outbox.send(GROUP, Reply("after it"))
    await deliver(outbox, bots[0])
    assert texts(fake.bot_messages(GROUP)) == ["after it"]
    assert len(fake.calls_to("sendPhoto")) == 1


async def test_a_prompt_queued_before_a_restart_goes_out_as_a_force_reply_and_is_noted(
    open_store: OpenStore, bots: list[Bot], fake: FakeBotAPI
) -> None:
    queued = Outbox(open_store())
    ref = Outbox.new_ref()
    await prompts.expect(queued.store, ref, Prompt("incident", ("update", "INC-3")))
    await queued.send(GROUP, Reply("Update for INC-3?", prompt="What changed?"), ref=ref)
    outbox = Outbox(open_store())  # delivered after a restart, or by another replica
    await deliver(outbox, bots[0])
    (sent,) = fake.bot_messages(GROUP)
    assert sent.reply_markup == {
        "force_reply": True, "selective": True, "input_field_placeholder": "What changed?"
    }  # fmt: skip
    found = await prompts.answering(outbox.store, GROUP, sent.message_id)
    assert found == Prompt("incident", ("update", "INC-3"))
