"""A group's pace: the Bot API calls opsbot made there in the last window, for every replica.

Telegram allows about 20 messages a minute in a group and answers 429 beyond that; edits
count too. The outbox worker takes a slot here *before* each call in a group: the times of
the window's calls are one document per chat (``outbox-pace/{chat}``), updated by
compare-and-set, so replicas share one count. A call is made only while fewer than its
priority's limit were made in the window (``ChatPace.limit``): each class stops earlier than
the one above it, so the window always keeps room for what matters more (a new critical
alert, then a command's reply); a 429 that still happens (another bot on the token) pauses
the chat for its ``retry_after``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from enum import IntEnum

from opsbot.state.store import JSONDoc, Store

NAMESPACE = "outbox-pace"
WINDOW = 60.0  # Telegram's window, seconds
SLACK = 0.5  # a slot is taken a moment before Telegram counts the call: keep jitter apart
MAX_SWAPS = 1000  # compare-and-set retries before giving up


class Priority(IntEnum):
    """The outbox's classes, most urgent first (edits share the window with sends)."""

    critical = 0  # a new critical alert's first message
    reply = 1  # command replies, approval cards, what a person's tap or command changed
    final = 2  # a card's final state (an action's result): owed, but it may wait a little
    alert = 3  # warnings, digests, incident cards and reminders, status edits of alerts
    update = 4  # edits of alert messages that only change a counter
    progress = 5  # progress edits: the first to give way, superseded by the message's next


#: The share of the window each class may fill (a call waits while the window holds as many):
#: a critical alert may use it all, a reply all but the critical alert's last slot, and each
#: class below stops earlier, so that a reply typed after a busy minute finds room at once.
SHARE = {
    Priority.critical: 1.0,
    Priority.reply: 0.95,
    Priority.final: 0.8,
    Priority.alert: 0.75,
    Priority.update: 0.4,
    Priority.progress: 0.3,
}


@dataclass(eq=False)
class ChatPace:
    store: Store
    per_minute: int
    clock: Callable[[], float] = time.time
    _: KW_ONLY
    window: float = WINDOW
    namespace: str = NAMESPACE

    def limit(self, priority: int) -> int:
        """Calls the window may already hold for a call of ``priority`` to be made (20 a
        minute: critical 20, reply 19, final 16, alert 15, update 8, progress 6)."""
        cls = Priority(min(max(priority, Priority.critical), Priority.progress))
        if cls == Priority.critical:
            return self.per_minute
        if cls == Priority.reply:  # the last slot is a critical alert's
            return max(1, self.per_minute - 1)
        return max(1, int(self.per_minute * SHARE[cls]))

    async def wait(self, chat: int, priority: int) -> bool:
        """Wait (up to a window) for a slot, for a call made outside the outbox; False when
        none came (the call is made anyway: PTB's rate limiter retries a 429)."""
        deadline = self.clock() + self.window
        while chat < 0 and not await self.take(chat, self.limit(priority)):
            if self.clock() >= deadline:
                return False
            await asyncio.sleep(0.25)
        return True

    async def used(self, chat: int) -> int:
        """Calls made in the chat within the window (a peek; a pause counts as all used)."""
        now = self.clock()
        stored = await self.store.get(self.namespace, str(chat))
        if stored is None:
            return 0
        if now < float(stored.value.get("paused_until", 0)):
            return 1_000_000
        return sum(1 for t in stored.value["sends"] if t > now - self.window - SLACK)

    async def take(self, chat: int, limit: int) -> bool:
        """Take a slot if fewer than ``limit`` calls were made in the window."""

        def take(stored: JSONDoc | None) -> JSONDoc | None:
            now = self.clock()
            doc: JSONDoc = stored if stored is not None else {"sends": [], "paused_until": 0.0}
            if now < float(doc.get("paused_until", 0)):
                return None
            recent = [t for t in doc["sends"] if t > now - self.window - SLACK]
            if len(recent) >= limit:
                return None
            return {**doc, "sends": [*recent, now]}

        done = await self.store.update(
            self.namespace, str(chat), take, ttl=2 * self.window, attempts=MAX_SWAPS
        )
        return done is not None and done.after is not None

    async def pause(self, chat: int, seconds: float) -> None:
        """Telegram said 429: no calls in this chat for ``seconds``."""

        def pause(stored: JSONDoc | None) -> JSONDoc:
            until = self.clock() + seconds
            doc: JSONDoc = stored if stored is not None else {"sends": []}
            return {**doc, "paused_until": max(until, float(doc.get("paused_until", 0)))}

        await self.store.update(
            self.namespace, str(chat), pause, ttl=2 * self.window + seconds, attempts=MAX_SWAPS
        )
