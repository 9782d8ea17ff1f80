"""The outbox's Telegram side: delivers queued entries through the Bot API.

Every replica runs one worker; they share the work through the store (a lease per chat, a
claim per entry; see ``opsbot/state/outbox.py`` for the rules). Both point at the worker's
owner, whose short liveness lease (:mod:`opsbot.state.liveness`) says whether it still runs:
a dead replica's chat lease and claims are taken over within that lease, not their own
length, and a worker whose liveness lapsed (a zombie) gives its claims back unsent. The
worker wakes at once when this replica queues something and every ``idle`` seconds
otherwise; a reply it can send at once (nothing queued ahead of it in its chat) skips the
scan altogether (``express``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import warnings
from collections.abc import Awaitable
from datetime import timedelta

from telegram import Bot
from telegram.error import BadRequest, NetworkError, RetryAfter, TelegramError

from opsbot.handlers.reply import edit_photo, edit_text, send_reply
from opsbot.metrics import Metrics
from opsbot.state import prompts
from opsbot.state.liveness import Liveness
from opsbot.state.outbox import MAX_AGE, NAMESPACE, Entry, Outbox
from opsbot.state.store import ExpectScan, JSONDoc, Versioned, Write

log = logging.getLogger(__name__)

CHAT_LEASE = 30.0  # one replica delivers a chat at a time (a dead one's: see Liveness)
CHAT_PASS = 10.0  # a pass over one chat stops starting calls after this long
TELEGRAM_ID_LIMIT = 2**31  # refs are above it; a smaller "ref" is a message id from before


def replica_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Fenced(Exception):
    """This worker's liveness lapsed: another replica may have taken its claims over."""


class OutboxWorker:
    def __init__(
        self,
        outbox: Outbox,
        bot: Bot,
        *,
        owner: str | None = None,
        idle: float = 0.5,
        metrics: Metrics | None = None,
    ) -> None:
        self.outbox = outbox
        self.metrics = metrics
        self.bot = bot
        self.owner = owner or replica_id()
        self.liveness = Liveness(outbox.store, self.owner)
        self.idle = idle
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.passes = 0
        self._chats = asyncio.Semaphore(8)
        self._busy: set[int] = set()  # chats this worker is delivering now (pass or express)
        self._skipped = False  # a pass left a chat to an express send: look again after it
        self._express: set[asyncio.Task[None]] = set()
        self._epochs: dict[str, int] = {}  # entry key -> the liveness epoch it was claimed in

    def start(self) -> None:
        self.liveness.start()
        self._task = asyncio.create_task(self._loop(), name="outbox-worker")
        self.outbox.express = self.express

    async def stop(self, grace: float = 5.0) -> None:
        """Finish the pass under way (so no claim is left behind), then stop."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self.outbox.express = None
        self.outbox.wakeup.set()
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(asyncio.gather(task, *self._express), grace)
        await self.liveness.stop()  # after the pass: its claims are settled or given back

    async def _loop(self) -> None:
        failing = False
        await self.liveness.beat()  # alive before the first pass (the heartbeat task races it)
        while not self._stopping:
            self.outbox.wakeup.clear()
            try:
                busy = await self.run_once()
                if failing:
                    log.info("outbox: the store answers again")
                failing = False
            except Exception as exc:  # the store is down (Redis restarting): wait and retry
                if not failing:
                    log.warning("outbox: cannot read the store: %s", exc)
                failing, busy = True, False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.outbox.wakeup.wait(), self.idle)

    async def run_once(self) -> bool:
        """One pass over every chat with work; True when something moved."""
        if not self.liveness.held:  # not started (a pass driven by hand) or just lapsed
            await self.liveness.beat()
        due = await self.outbox.due()
        if self.metrics is not None:
            self.metrics.outbox_pending.set(sum(len(entries) for entries in due.values()))
        self.passes += 1
        moved = await asyncio.gather(*(self._chat(c, e) for c, e in due.items()))
        return any(moved)

    async def _chat(self, chat: int, entries: list[Entry]) -> bool:
        if chat in self._busy:  # an express send holds it (under this worker's own lease)
            self._skipped = True
            return False
        self._busy.add(chat)  # before any await: an express send now stands aside
        try:
            async with self._chats:
                lease = f"outbox-chat:{chat}"
                if not self.liveness.held or not await self._take(lease):
                    return False  # another replica delivers this chat now (or this is fenced)
                try:
                    return await self._deliver_chat(chat, entries)
                finally:
                    await self.outbox.store.release(lease, self.owner)
        finally:
            self._busy.discard(chat)

    async def _take(self, lease: str) -> bool:
        """The chat's lease, taken over from a holder whose liveness lapsed (it died)."""
        store = self.outbox.store
        holder = await store.acquire(lease, self.owner, CHAT_LEASE)
        if holder is None:
            return True
        if await self.liveness.alive(holder):
            return False
        # Released only if still the dead one's (two replicas racing: one acquire wins).
        await store.release(lease, holder)
        return await store.acquire(lease, self.owner, CHAT_LEASE) is None

    async def express(self, key: str, doc: JSONDoc, claim: Awaitable[bool] | None = None) -> bool:
        """Store a reply already claimed by this worker and send it at once; False when it
        is not for here (the caller queues it as usual).

        Why: a pass costs a wake-up, a scan of the whole outbox, the chat lease and a claim,
        each a store round trip, before the call; a command's reply waited ~4 ms on that.
        Here the entry is written claimed (durable before the call, as a pass would claim
        it), on condition that the outbox is still as last scanned (idle: one round trip),
        else followed by a fresh scan: it is sent only when nothing in the chat goes before
        it or is in flight (a group takes its pace slot first); otherwise its claim is given
        back and the next pass delivers it in order. No chat lease is needed: a pass
        that meets the claimed entry stops at it (the chat keeps its order), and of two
        replicas writing at once each sees the other's claim and stands aside. A replica
        that dies in between leaves a claimed send, recovered like any other (never twice).
        Returns once the entry is stored, like a queued send: the call runs in a task.
        ``claim`` (the answered update's, still being made) is awaited only before the call:
        its store round trip overlaps the write; if it does not hold, the entry is withdrawn."""
        chat = int(doc["chat"])
        if not self.liveness.held and not await self.liveness.beat():
            return False  # just started (or fenced): alive first, else others take it over
        if self._task is None or self._stopping or chat in self._busy:
            return False
        self._busy.add(chat)
        stored: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(self._send_express(key, doc, stored, claim))
        self._express.add(task)
        task.add_done_callback(self._express.discard)
        await asyncio.shield(stored)  # a caller cancelled now leaves the task to finish it
        return True

    async def _send_express(
        self,
        key: str,
        doc: JSONDoc,
        stored: asyncio.Future[None],
        claim: Awaitable[bool] | None,
    ) -> None:
        chat = int(doc["chat"])
        outbox = self.outbox
        claimed = {**doc, "state": "claimed", "owner": self.owner,
                   "lease_until": outbox.clock() + outbox.lease}  # fmt: skip
        self._epochs[key] = self.liveness.epoch
        try:
            try:
                entry, go = await self._write_claimed(key, claimed)
            except Exception as exc:  # not stored: the caller gets the error
                stored.set_exception(exc)
                return
            stored.set_result(None)
            if claim is not None and not await claim:
                await outbox.withdraw(entry)  # a copy of the update answered elsewhere
                return
            pace = outbox.pace
            if go and (chat > 0 or await pace.take(chat, pace.limit(entry.priority))):
                await self._deliver(entry, None)  # settled like a pass's (retry, drop, done)
            else:
                await outbox.unclaim(entry)  # pending again: a pass sends it in order
        except Exception:
            log.exception("outbox: express send in chat %s", chat)
        finally:
            self._epochs.pop(key, None)
            if not stored.done():
                stored.cancel()
            self._busy.discard(chat)
            if self._skipped:
                self._skipped = False
                outbox.wakeup.set()

    async def _write_claimed(self, key: str, claimed: JSONDoc) -> tuple[Entry, bool]:
        """Store the claimed entry; with it, whether it may go now (nothing ahead in its
        chat, nothing in flight there)."""
        outbox, store = self.outbox, self.outbox.store
        seen = outbox.seen
        if seen is not None:
            versions = {k: v.version for k, v in seen.items()}
            entry = Entry.from_stored(key, Versioned(claimed, 0))
            if not _ahead(entry, seen, outbox.clock()):
                done = await store.commit([
                    Write(NAMESPACE, key, claimed, "absent", MAX_AGE),
                    ExpectScan(NAMESPACE, versions),
                ])  # fmt: skip
                if done is not None:  # the outbox was as seen: nothing else in the chat
                    return Entry.from_stored(key, Versioned(claimed, done[0])), True
        version = await store.put(NAMESPACE, key, claimed, ttl=MAX_AGE)
        entry = Entry.from_stored(key, Versioned(claimed, version))
        try:  # after the write: a replica writing at the same time sees one or the other
            scan = await store.scan(NAMESPACE)
        except Exception:
            return entry, False  # the next pass decides
        outbox.seen = {k: v for k, v in scan.items() if k != key}  # as it is once sent
        return entry, not _ahead(entry, scan, outbox.clock())

    async def _deliver_chat(self, chat: int, entries: list[Entry]) -> bool:
        moved = False
        started = self.outbox.clock()
        for entry in entries:
            now = self.outbox.clock()
            if now - started > CHAT_PASS:
                return moved  # well within the chat's lease; the next pass goes on
            if entry.state == "claimed":
                if entry.lease_until > now and await self.liveness.alive(entry.owner):
                    return moved  # in flight elsewhere: the chat keeps its order
                await self.outbox.recover(entry)
                return True
            if entry.not_before > now:
                return moved  # backing off: what follows waits behind it
            where: JSONDoc | None = None
            if entry.kind != "send" and entry.message_id is None:
                assert entry.ref is not None
                if await self.outbox.send_queued(entry.ref):
                    continue  # its message is not posted yet
                where = await self._where(entry.ref)
                if entry.kind == "pin" and "message_id" not in where:
                    await self.outbox.failed(entry, f"nothing to pin: {where}")
                    moved = True
                    continue
            pace = self.outbox.pace
            if chat < 0 and not await pace.take(chat, pace.limit(entry.priority)):
                return moved  # the group's window is full for this priority and those after
            self._epochs[entry.key] = self.liveness.epoch
            try:
                claimed = await self.outbox.claim(entry, self.owner)
                if claimed is None:
                    return True  # changed since the scan: look again
                moved = True
                if not await self._deliver(claimed, where):
                    return moved  # to be retried: what follows waits behind it
            finally:
                self._epochs.pop(entry.key, None)
        return moved

    async def _where(self, ref: int) -> JSONDoc:
        state = await self.outbox.ref_state(ref)
        if state is not None:
            return state
        if ref < TELEGRAM_ID_LIMIT:
            return {"message_id": ref}
        return {"lost": "unknown message"}

    async def _deliver(self, entry: Entry, where: JSONDoc | None) -> bool:
        """One Bot API call; False when the entry is to be retried."""
        outcome = await self._attempt(entry, where)
        if self.metrics is not None:
            self.metrics.outbox_calls_total.labels(outcome=outcome).inc()
        return outcome in ("delivered", "dropped")

    async def _attempt(self, entry: Entry, where: JSONDoc | None) -> str:
        try:
            message_id = await self._call(entry, where)
        except Fenced:  # not called: given back (unless another replica recovered it)
            log.warning("outbox: %s in chat %s not sent: this replica's liveness lapsed",
                        entry.kind, entry.chat)  # fmt: skip
            await self.outbox.unclaim(entry)
            return "fenced"
        except RetryAfter as exc:
            seconds = _seconds(exc)
            await self.outbox.pace.pause(entry.chat, seconds)
            await self.outbox.retry(entry, seconds, str(exc))
            return "rate_limited"
        except BadRequest as exc:
            if "not modified" in str(exc).lower():
                await self.outbox.delivered(entry, None)
                return "delivered"
            await self.outbox.failed(entry, str(exc))
            return "dropped"
        except NetworkError as exc:  # 5xx, connection errors and timeouts
            await self.outbox.retry(entry, None, str(exc) or type(exc).__name__)
            return "retried"
        except TelegramError as exc:  # Forbidden and the like: retrying will not help
            if entry.kind == "pin":
                log.warning("could not pin a message in %s: %s", entry.chat, exc)
            await self.outbox.failed(entry, str(exc))
            return "dropped"
        except LookupError as exc:  # its document expired from the store
            await self.outbox.failed(entry, str(exc))
            return "dropped"
        except Exception as exc:
            log.exception("outbox: delivering %s in chat %s", entry.kind, entry.chat)
            await self.outbox.retry(entry, None, repr(exc))
            return "retried"
        await self.outbox.delivered(entry, message_id)
        if entry.kind == "send" and entry.reply is not None and entry.reply.prompt is not None:
            await self._prompt_shown(entry, message_id)
        return "delivered"

    async def _prompt_shown(self, entry: Entry, message_id: int | None) -> None:
        """A prompt went out: note its message, so that replies to it find what they answer
        (after delivery, so a failure here must never have it sent again)."""
        if entry.ref is None or message_id is None:
            return
        try:
            await prompts.shown(self.outbox.store, entry.ref, entry.chat, message_id)
        except Exception:
            log.exception("outbox: noting the prompt %s in chat %s", entry.ref, entry.chat)

    async def _call(self, entry: Entry, where: JSONDoc | None) -> int | None:
        chat = entry.chat
        reply = await self.outbox.reply_of(entry) if entry.kind != "pin" else None
        # The last look before the Bot API: a zombie stops here, even once its heartbeat is
        # back (a new epoch), since its claim may have been taken over meanwhile.
        if not self.liveness.holds(self._epochs.get(entry.key, -1)):
            raise Fenced(self.owner)
        if entry.kind == "pin":
            assert where is not None
            if entry.doc.get("unpin"):
                await self.bot.unpin_chat_message(chat, where["message_id"])
                return None
            await self.bot.pin_chat_message(chat, where["message_id"], disable_notification=True)
            return None
        assert reply is not None
        if entry.kind == "send":
            answers = entry.doc.get("reply_to")
            thread = entry.thread
            sent = await send_reply(self.bot, chat, reply, thread_id=thread, reply_to=answers)
            return sent.message_id
        message_id = entry.message_id
        if message_id is None:
            assert where is not None
            if "message_id" not in where:  # its message was lost: post the newest text anew
                sent = await send_reply(self.bot, chat, reply, thread_id=where.get("thread"))
                return sent.message_id
            message_id = int(where["message_id"])
        if reply.document is not None and reply.document.photo:  # a refreshed chart
            await edit_photo(self.bot, chat, message_id, reply)
            return message_id
        await edit_text(self.bot, chat, message_id, reply)
        return message_id


def _ahead(entry: Entry, scan: dict[str, Versioned], now: float) -> bool:
    """Whether the chat holds another entry that goes out before ``entry`` or is in flight
    (claimed by a live worker: a chat has one call at a time)."""
    for key, stored in scan.items():
        d = stored.value
        if key == entry.key or d["chat"] != entry.chat or d["state"] == "done":
            continue
        if (d["priority"], d["seq"]) < (entry.priority, entry.seq):
            return True
        if d["state"] == "claimed" and d.get("lease_until", 0) > now:
            return True
    return False


def _seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB deprecates reading it as an int
        warnings.simplefilter("ignore")
        retry_after = exc.retry_after
    if isinstance(retry_after, timedelta):
        return retry_after.total_seconds()
    return float(retry_after)
