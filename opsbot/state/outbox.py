"""The outbox: every message opsbot sends, edits or pins is a row in the store first.

Callers never wait on Telegram: ``send`` stores an entry and returns an opaque *message ref*
(an int) at once; ``edit`` and ``pin`` take that ref. A worker on any replica
(``handlers/outbox_worker.py``) delivers the entries and records, per ref, the Telegram
message id it produced, so an edit queued before its message is posted waits for it.

Rules the worker keeps (all state is in the store, shared by replicas):

* **Order.** Per chat, entries go out by (priority, enqueue time): a new critical alert,
  then replies and approval cards, cards' final states, alerts and incident cards, alert
  counter edits, and last progress edits (see ``Priority``); within a priority, in the order
  they were queued. One worker holds a chat at a time (a store lease), and an entry that
  waits for a retry holds back those behind.
* **At most once.** An entry is claimed by compare-and-set (with a lease) before the Bot API
  is called. A send whose claimer died before recording its message id is never sent again:
  its ref is marked lost, and the next edit of that ref is posted as a new message, so the
  final state of a card still arrives.
* **Coalescing.** There is one edit entry per message: a newer text replaces a queued one
  (an edit already in flight is followed by the newest text only) and keeps the more urgent
  of the two priorities. An edit may carry a ``stamp`` (its source document's version): a
  text older than the one queued or shown is dropped, so replicas racing cannot go back.
  An edit of a message whose send is still queued becomes that send's text (one call, and
  the message is posted with its current text rather than its first).
* **Retries.** 5xx, network errors and timeouts back off exponentially (capped at
  ``MAX_BACKOFF``); a 429 pauses the chat for its ``retry_after``; other errors (400, 403)
  drop the entry. Entries older than ``MAX_AGE`` are dropped.
* **Pacing (the one rule).** Every call in a group (send, edit, pin) takes a slot of the
  group's window first (``pace.ChatPace``, shared by every replica), and each priority stops
  earlier than the one above it (``ChatPace.limit``): a critical alert may use the whole
  window, replies all but its last slot, final card states, alerts, counter edits and
  progress edits less and less, so a new critical alert and a command typed after a busy
  minute find room at once. The alert engine asks ``room`` before it gives a new alert a
  message of its own: when the chat is full, it digests instead.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from opsbot.render import Button, Document, Reply
from opsbot.state.pace import WINDOW, ChatPace
from opsbot.state.pace import Priority as Priority  # where callers import it from
from opsbot.state.store import JSONDoc, Store, Versioned

log = logging.getLogger(__name__)

NAMESPACE = "outbox"  # entries waiting or in flight (a small namespace: scanned)
REFS = "outbox-refs"  # ref -> the Telegram message it became
PACE = "outbox-pace"
FILES = "outbox-files"  # a document's bytes, apart from its entry (entries are scanned)
REF_TTL = 30 * 86400.0
MAX_AGE = 6 * 3600.0  # an entry not delivered by then is dropped
MAX_BACKOFF = 5.0
DONE_TTL = 5.0  # a delivered entry lingers this long (so a late claimer sees it is done)
Express = Callable[[str, JSONDoc, Awaitable[bool] | None], Awaitable[bool]]  # OutboxWorker.express


def reply_to_doc(reply: Reply) -> JSONDoc:
    doc: JSONDoc = {"text": reply.text, "block": reply.block, "prompt": reply.prompt}
    if reply.buttons:
        doc["buttons"] = [[b.label, b.data] for b in reply.buttons]
    if reply.document is not None:
        d = reply.document
        doc["document"] = {"filename": d.filename, "content": base64.b64encode(d.content).decode(),
                           "raw": d.raw, "photo": d.photo}  # fmt: skip
    return doc


def reply_from_doc(doc: JSONDoc) -> Reply:
    document = None
    if (d := doc.get("document")) is not None:  # the bytes may be apart, under d["file"]
        document = Document(d["filename"], base64.b64decode(d.get("content", "")), d["raw"],
                            d.get("photo", False))  # fmt: skip
    buttons = tuple(Button(label, data) for label, data in doc.get("buttons", []))
    return Reply(doc["text"], doc["block"], document, buttons, prompt=doc.get("prompt"))


@dataclass(frozen=True, slots=True)
class Entry:
    """One piece of work for the worker, as stored (``version`` for compare-and-set)."""

    key: str
    version: int
    kind: str  # send | edit | pin
    chat: int
    priority: int
    seq: int
    ref: int | None  # send: the ref it creates; edit/pin: the ref it acts on
    message_id: int | None  # edit of a message known by its Telegram id
    thread: int | None
    reply: Reply | None
    state: str  # pending | claimed | done
    owner: str
    lease_until: float
    not_before: float
    attempts: int
    created: float
    doc: JSONDoc

    @classmethod
    def from_stored(cls, key: str, stored: Versioned) -> Entry:
        d = stored.value
        reply = reply_from_doc(d["reply"]) if d.get("reply") else None
        return cls(
            key=key,
            version=stored.version,
            kind=d["kind"],
            chat=int(d["chat"]),
            priority=int(d["priority"]),
            seq=int(d["seq"]),
            ref=d.get("ref"),
            message_id=d.get("message_id"),
            thread=d.get("thread"),
            reply=reply,
            state=d["state"],
            owner=d.get("owner", ""),
            lease_until=float(d.get("lease_until", 0)),
            not_before=float(d.get("not_before", 0)),
            attempts=int(d.get("attempts", 0)),
            created=float(d["created"]),
            doc=d,
        )


_seq_last = 0


def _next_seq() -> int:
    """Enqueue order: wall-clock nanoseconds, strictly growing within this process."""
    global _seq_last
    _seq_last = max(time.time_ns(), _seq_last + 1)
    return _seq_last


class Outbox:
    """The store side of the outbox: enqueue (callers) and claim/settle (the worker)."""

    def __init__(
        self,
        store: Store,
        *,
        group_per_minute: int = 20,
        window: float = WINDOW,
        lease: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.lease = lease
        self.clock = clock
        self.pace = ChatPace(store, group_per_minute, clock, window=window, namespace=PACE)
        self.wakeup = asyncio.Event()  # set on every enqueue: a local worker starts at once
        self.express: Express | None = None  # the local worker's fast path, while it runs
        # The outbox as this replica's last scan found it (an idle worker rescans it every
        # pass): an express reply is written on condition that it is still so.
        self.seen: dict[str, Versioned] | None = None
        self.landing: dict[int, asyncio.Event] = {}  # set once delivered (notifier.landed)

    async def room(
        self, chat: int, cap: int | None = None, priority: Priority = Priority.alert
    ) -> int:
        """How many more messages of ``priority`` the chat takes now: its limit (or ``cap``)
        less the calls of the window and the entries queued to go before or with them."""
        limit = self.pace.limit(priority)
        if cap is not None:
            limit = min(limit, cap)
        used = await self.pace.used(chat) if chat < 0 else 0
        queued = [e for e in await self.pending() if e.chat == chat]
        return max(0, limit - used - sum(1 for e in queued if e.priority <= priority))

    # ------------------------------------------------------------------ enqueueing

    @staticmethod
    def new_ref() -> int:
        """A message ref: random, above any Telegram message id (those stay below 2**31)."""
        return 2**32 + secrets.randbelow(2**52)

    def _doc(self, kind: str, chat: int, priority: Priority, **fields: Any) -> JSONDoc:
        now = self.clock()
        return {
            "kind": kind, "chat": chat, "priority": int(priority), "seq": _next_seq(),
            "state": "pending", "created": now, "attempts": 0, "not_before": 0.0, **fields,
        }  # fmt: skip

    async def send(
        self,
        chat: int,
        reply: Reply,
        *,
        thread_id: int | None = None,
        priority: Priority = Priority.reply,
        ref: int | None = None,
        reply_to: int | None = None,
        once: bool = False,
        claim: Awaitable[bool] | None = None,
    ) -> int:
        """Queue a new message; returns its ref (valid for ``edit``/``pin`` at once).

        ``reply_to`` threads it to the Telegram message it answers (sent anyway if that one
        is gone). ``once`` (with a ``ref`` derived from what it announces): nothing is queued
        when that ref is queued or was sent already, so replicas may both try. ``claim``:
        the answered update's claim, still being made: nothing is sent unless it holds (an
        express reply is written meanwhile and withdrawn if it does not)."""
        ref = ref or self.new_ref()
        if once and await self.store.get(REFS, str(ref)) is not None:
            return ref
        body = reply_to_doc(reply)
        if "document" in body:  # large: stored once, read only when it is sent
            content = body["document"].pop("content")
            await self.store.put(FILES, str(ref), {"content": content}, ttl=MAX_AGE)
            body["document"]["file"] = str(ref)
        doc = self._doc("send", chat, priority, ref=ref, thread=thread_id, reply=body)
        if reply_to is not None:
            doc["reply_to"] = reply_to
        express = self.express  # a reply, sent by this replica's worker right away
        plain = priority == Priority.reply and not once and "document" not in body
        if express is not None and plain and await express(f"s{ref}", doc, claim):
            return ref
        if claim is not None and not await claim:
            return ref  # a copy of the update answered elsewhere: nothing to send
        # Woken twice: now, so that a local worker's scan queues right behind this write (the
        # embedded store runs them in order; its answer comes once the write is committed),
        # and once it is stored, in case that scan did not see it (Redis: another connection).
        self.wakeup.set()
        if once:
            await self.store.create(NAMESPACE, f"s{ref}", doc, ttl=MAX_AGE)
        else:
            await self.store.put(NAMESPACE, f"s{ref}", doc, ttl=MAX_AGE)
        self.wakeup.set()
        return ref

    async def edit(
        self,
        chat: int,
        ref: int,
        reply: Reply,
        *,
        priority: Priority = Priority.reply,
        stamp: int | None = None,
    ) -> None:
        """Queue the newest text of the message ``ref``; older queued texts are replaced.

        ``stamp``: how new the text is (its document's version); an older one is ignored."""
        doc = self._doc("edit", chat, priority, ref=ref, reply=reply_to_doc(reply))
        if stamp is not None:
            doc["stamp"] = stamp
        if not await self._into_send(ref, doc):
            await self._edit(f"e{ref}", doc)

    async def _into_send(self, ref: int, doc: JSONDoc) -> bool:
        """Make the edit the text of its message's send, while that is still queued (and no
        edit of it is): True when done, or when the send holds a newer stamp already."""
        edit = await self.store.get(NAMESPACE, f"e{ref}")
        if edit is not None and edit.value["state"] != "done":
            return False  # an edit is queued or in flight: it keeps the order of texts
        stamp = doc.get("stamp")
        held = False  # the send holds this text, or a newer one, already

        def into(current: JSONDoc | None) -> JSONDoc | None:
            nonlocal held
            if current is None or current["state"] != "pending" or "document" in current["reply"]:
                return None  # sent, in flight, never queued here, or a file: edit the message
            held = stamp is not None and int(current.get("stamp", -1)) >= stamp
            if held:
                return None
            new = {**current, "reply": doc["reply"],
                   "priority": min(current["priority"], doc["priority"])}  # fmt: skip
            return new if stamp is None else {**new, "stamp": stamp}

        done = await self.store.update(NAMESPACE, f"s{ref}", into, ttl=MAX_AGE)
        return held or (done is not None and done.after is not None)

    async def edit_message(
        self, chat: int, message_id: int, reply: Reply, *, priority: Priority = Priority.reply
    ) -> None:
        """Like ``edit``, for a message known by its Telegram id (a tapped message)."""
        doc = self._doc("edit", chat, priority, message_id=message_id, reply=reply_to_doc(reply))
        await self._edit(f"m{chat}_{message_id}", doc)

    async def _edit(self, key: str, doc: JSONDoc) -> None:
        stamp = doc.get("stamp")
        while True:
            stored = await self.store.get(NAMESPACE, key)
            if stored is None:
                if stamp is not None and await self._shown_stamp(doc.get("ref")) >= stamp:
                    return  # the message shows this text, or a newer one, already
                if await self.store.create(NAMESPACE, key, doc, ttl=MAX_AGE):
                    break
                continue
            current = stored.value
            if stamp is not None and _newest_stamp(current) >= stamp:
                return  # this text, or a newer one, is queued or shown already
            if current["state"] == "pending":  # replace the queued text, keep its place
                priority = min(current["priority"], doc["priority"])
                new = {**current, "reply": doc["reply"], "priority": priority}
                new.pop("stamp", None)
            elif current["state"] == "claimed":  # in flight: send the newest text after it
                new = {**current, "next": doc["reply"], "next_priority": doc["priority"]}
                new.pop("next_stamp", None)
            else:  # done
                new = doc
            if stamp is not None:
                new["next_stamp" if current["state"] == "claimed" else "stamp"] = stamp
            if await self.store.swap(NAMESPACE, key, stored.version, new, ttl=MAX_AGE):
                break
        self.wakeup.set()

    async def _shown_stamp(self, ref: int | None) -> int:
        """The stamp of the text the message ``ref`` was last delivered with (-1: none)."""
        stored = await self.store.get(REFS, str(ref)) if ref is not None else None
        return int(stored.value.get("stamp", -1)) if stored is not None else -1

    async def pin(
        self, chat: int, ref: int, *, priority: Priority = Priority.reply, pinned: bool = True
    ) -> None:
        """Queue a pin (or, ``pinned=False``, an unpin, which replaces a queued pin)."""
        doc = self._doc("pin", chat, priority, ref=ref)
        if not pinned:
            doc["unpin"] = True
        await self.store.put(NAMESPACE, f"p{ref}", doc, ttl=MAX_AGE)
        self.wakeup.set()

    async def message_id(self, ref: int) -> int | None:
        """The Telegram message id a ref became, once delivered."""
        stored = await self.store.get(REFS, str(ref))
        if stored is None:
            return None
        mid = stored.value.get("message_id")
        return int(mid) if mid is not None else None

    async def pending(self) -> list[Entry]:
        """Every entry waiting or in flight, in delivery order per chat."""
        self.seen = scan = await self.store.scan(NAMESPACE)
        entries = [Entry.from_stored(k, v) for k, v in scan.items()]
        live = [e for e in entries if e.state != "done"]
        return sorted(live, key=lambda e: (e.chat, e.priority, e.seq))

    # ------------------------------------------------------------------ the worker's side

    async def due(self) -> dict[int, list[Entry]]:
        """Entries per chat, in delivery order."""
        by_chat: dict[int, list[Entry]] = {}
        for entry in await self.pending():
            by_chat.setdefault(entry.chat, []).append(entry)
        return by_chat

    async def ref_state(self, ref: int) -> JSONDoc | None:
        """What became of a ref: ``{"message_id": ...}``, ``{"lost": ...}`` or None (queued)."""
        stored = await self.store.get(REFS, str(ref))
        return stored.value if stored else None

    async def send_queued(self, ref: int) -> bool:
        stored = await self.store.get(NAMESPACE, f"s{ref}")
        return stored is not None and stored.value["state"] != "done"

    async def reply_of(self, entry: Entry) -> Reply | None:
        """The entry's reply with its document's bytes, read for delivery."""
        reply, body = entry.reply, entry.doc.get("reply") or {}
        file = (body.get("document") or {}).get("file")
        if reply is None or reply.document is None or file is None:
            return reply
        stored = await self.store.get(FILES, file)
        if stored is None:
            raise LookupError(f"the document of {entry.key} is gone")
        content = base64.b64decode(stored.value["content"])
        return replace(reply, document=replace(reply.document, content=content))

    async def _forget_file(self, entry: Entry) -> None:
        if entry.kind == "send" and entry.ref is not None:
            body = entry.doc.get("reply") or {}
            if (body.get("document") or {}).get("file"):
                await self.store.delete(FILES, str(entry.ref))

    async def claim(self, entry: Entry, owner: str) -> Entry | None:
        """Take the entry for delivery; None when another worker got it first."""
        now = self.clock()
        doc = {**entry.doc, "state": "claimed", "owner": owner, "lease_until": now + self.lease}
        for field in _FOLLOW:
            doc.pop(field, None)
        version = await self.store.swap(NAMESPACE, entry.key, entry.version, doc)
        if version is None:
            return None
        return Entry.from_stored(entry.key, Versioned(doc, version))

    async def delivered(self, entry: Entry, message_id: int | None) -> None:
        """The Bot API answered: record the message (sends) and retire the entry."""
        if entry.ref is not None and message_id is not None and entry.kind in ("send", "edit"):
            shown: JSONDoc = {"message_id": message_id}
            if "stamp" in entry.doc:  # how new the text it shows is: an older one is ignored
                shown["stamp"] = entry.doc["stamp"]
            await self.store.put(REFS, str(entry.ref), shown, ttl=REF_TTL)
            self.landing.get(entry.ref, asyncio.Event()).set()
        await self._settle(entry, None)
        await self._forget_file(entry)

    async def failed(self, entry: Entry, reason: str) -> None:
        """The Bot API refused it for good (400, 403): drop it."""
        log.warning("outbox: dropped %s in chat %s: %s", entry.kind, entry.chat, reason)
        if entry.kind == "send" and entry.ref is not None:
            lost = {"lost": reason, "thread": entry.thread}
            await self.store.put(REFS, str(entry.ref), lost, ttl=REF_TTL)
        await self._settle(entry, None)
        await self._forget_file(entry)

    async def retry(self, entry: Entry, delay: float | None, reason: str) -> None:
        """Try again later: after ``delay`` (a 429's retry_after) or an exponential backoff."""
        attempts = entry.attempts + (0 if delay is not None else 1)
        if delay is None:
            delay = min(MAX_BACKOFF, 0.5 * 2 ** (attempts - 1))
        if self.clock() - entry.created > MAX_AGE:
            await self.failed(entry, f"undelivered for {MAX_AGE:.0f} s: {reason}")
            return
        log.info("outbox: %s in chat %s retried in %.1f s: %s", entry.kind, entry.chat,
                 delay, reason)  # fmt: skip
        await self._settle(entry, {"attempts": attempts, "not_before": self.clock() + delay})

    async def withdraw(self, entry: Entry) -> None:
        """Remove a claimed send unsent (the command it answers was answered elsewhere)."""
        await self.store.delete(NAMESPACE, entry.key)

    async def unclaim(self, entry: Entry) -> None:
        """Give a claim back untouched: the entry is pending again, for the next pass."""
        await self._settle(entry, {})

    async def recover(self, entry: Entry) -> None:
        """A claim whose lease ran out (its replica died): redo it, unless it was a send."""
        if entry.kind == "send" and entry.ref is not None:
            if await self.ref_state(entry.ref) is None:  # outcome unknown: never send twice
                log.warning("outbox: send in chat %s abandoned mid-call; not sent again",
                            entry.chat)  # fmt: skip
                lost = {"lost": "abandoned mid-call", "thread": entry.thread}
                await self.store.put(REFS, str(entry.ref), lost, ttl=REF_TTL)
            await self._settle(entry, None)
            await self._forget_file(entry)
            return
        await self._settle(entry, {})

    async def _settle(self, entry: Entry, again: JSONDoc | None) -> None:
        """Leave the claim: back to pending with ``again``'s fields, or done (None). An edit
        that got a newer text while in flight is queued again with that text."""
        key = entry.key
        while True:
            stored = await self.store.get(NAMESPACE, key)
            if stored is None:
                return
            current = stored.value
            if current.get("state") != "claimed" or current.get("owner") != entry.owner:
                return  # someone else settled it (a recovery) or holds it now
            follow = _follow(current)
            if again is not None:
                new = {**current, **again, "state": "pending", "owner": "", "lease_until": 0,
                       **follow}  # fmt: skip
                ttl: float = MAX_AGE
            elif follow:
                new = {
                    **current, **follow, "state": "pending", "owner": "",
                    "lease_until": 0, "attempts": 0, "not_before": 0.0, "seq": _next_seq(),
                }  # fmt: skip
                ttl = MAX_AGE
            elif entry.kind == "send":  # nothing else writes a send's key: no need to linger
                await self.store.delete(NAMESPACE, key)
                return
            else:
                new, ttl = {**current, "state": "done"}, DONE_TTL
            for field in _FOLLOW:
                new.pop(field, None)
            if await self.store.swap(NAMESPACE, key, stored.version, new, ttl=ttl):
                if new["state"] == "pending":
                    self.wakeup.set()
                return


_FOLLOW = ("next", "next_priority", "next_stamp")


def _newest_stamp(doc: JSONDoc) -> int:
    """The stamp of the newest text an edit entry holds (-1: none)."""
    if "next" in doc:
        return int(doc.get("next_stamp", -1))
    return int(doc.get("stamp", -1))


def _follow(doc: JSONDoc) -> JSONDoc:
    """The fields an in-flight edit's newer text takes over once it is settled."""
    if "next" not in doc:
        return {}
    follow: JSONDoc = {"reply": doc["next"], "priority": doc.get("next_priority", doc["priority"])}
    if "next_stamp" in doc:
        follow["stamp"] = doc["next_stamp"]
    else:
        follow["stamp"] = -1
    return follow
