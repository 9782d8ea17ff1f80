"""A chat's message budget, shared by every replica through the store.

Telegram allows about 20 messages a minute in a group and answers 429 beyond that. The alert
engine takes a slot *before* each send or edit: at most ``per_minute`` slots in any rolling
60 s per chat, recorded as the timestamps of the last minute's calls in one document per chat
(``alert-budget/{chat}``) updated by compare-and-set. Slots come in three kinds:

* ``priority`` (storm digests, silence-end notices) may use the whole budget;
* ``alert`` (posts, status edits, reminders) leaves the last ``reserve`` slots to them;
* ``counter`` (``×37`` edits) only while at least half the budget is free.

A 429 from Telegram pauses the chat's budget for its ``retry_after``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opsbot.state.store import Store

NAMESPACE = "alert-budget"
WINDOW = 60.0  # the rolling window, seconds
MAX_SWAPS = 1000  # compare-and-set retries before giving up


class ChatBudget:
    def __init__(
        self,
        store: Store,
        per_minute: int,
        clock: Callable[[], float] = time.time,
        namespace: str = NAMESPACE,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.per_minute = per_minute
        self.reserve = min(2, per_minute - 1)
        self.clock = clock

    @property
    def alert_slots(self) -> int:
        """Slots a minute left for alerts once the priority reserve is kept."""
        return self.per_minute - self.reserve

    def limit(self, kind: str) -> int:
        if kind == "priority":
            return self.per_minute
        if kind == "counter":
            return max(1, self.per_minute // 2)
        return self.alert_slots

    async def free(self, chat: int, kind: str) -> bool:
        """Whether a slot of ``kind`` is free now (a peek: ``take`` decides)."""
        now = self.clock()
        stored = await self.store.get(self.namespace, str(chat))
        if stored is None:
            return True
        if now < float(stored.value.get("paused_until", 0)):
            return False
        recent = [t for t in stored.value["sends"] if t > now - WINDOW]
        return len(recent) < self.limit(kind)

    async def take(self, chat: int, kind: str) -> bool:
        """Take one slot of the chat's budget, shared by every replica."""
        key = str(chat)
        for _ in range(MAX_SWAPS):
            now = self.clock()
            stored = await self.store.get(self.namespace, key)
            doc: dict[str, Any] = stored.value if stored else {"sends": [], "paused_until": 0.0}
            if now < float(doc.get("paused_until", 0)):
                return False
            recent = [t for t in doc["sends"] if t > now - WINDOW]
            if len(recent) >= self.limit(kind):
                return False
            new = {**doc, "sends": [*recent, now]}
            if stored is None:
                if await self.store.create(self.namespace, key, new, ttl=2 * WINDOW):
                    return True
            elif await self.store.swap(self.namespace, key, stored.version, new, ttl=2 * WINDOW):
                return True
        return False

    async def pause(self, chat: int, seconds: float) -> None:
        """Telegram said 429: no slots in this chat for ``seconds``."""
        key = str(chat)
        for _ in range(MAX_SWAPS):
            until = self.clock() + seconds
            stored = await self.store.get(self.namespace, key)
            doc: dict[str, Any] = stored.value if stored else {"sends": []}
            new = {**doc, "paused_until": max(until, float(doc.get("paused_until", 0)))}
            ttl = 2 * WINDOW + seconds
            if stored is None:
                if await self.store.create(self.namespace, key, new, ttl=ttl):
                    return
            elif await self.store.swap(self.namespace, key, stored.version, new, ttl=ttl):
                return
