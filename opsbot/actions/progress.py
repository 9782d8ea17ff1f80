"""A request's card while it runs: its state queued as an edit, its progress paced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opsbot.actions.approvals import Request
from opsbot.actions.cards import card, elapsed
from opsbot.notify import Notifier, ProgressSink
from opsbot.render import Button
from opsbot.state.outbox_notifier import edit_at
from opsbot.state.pace import Priority

log = logging.getLogger(__name__)

#: A run's progress shows from this many seconds on (then every 2 s, or 3 s in a group).
PROGRESS_AFTER = 1.0


async def show(
    notifier: Notifier | None,
    filed: Request,
    progress: str = "",
    next_steps: tuple[Button, ...] = (),
    priority: Priority = Priority.reply,
) -> None:
    """Queue the card's new state; a failure to queue it never stops the action."""
    if notifier is not None and filed.chat_id is not None and filed.message_id is not None:
        try:
            shown = card(filed, progress, next_steps)
            await edit_at(notifier, filed.chat_id, filed.message_id, shown, priority)
        except Exception:
            log.exception("could not update the card of request %s", filed.id)


def pace_of(filed: Request) -> float:
    """Seconds between progress edits: 2 in a private chat, 3 in a group."""
    return 2.0 if (filed.chat_id or 0) > 0 else 3.0


class CardProgress:
    """Shows the latest progress line on the card with the time the run has taken.

    Edits go out at most every ``interval`` seconds; a ticker shows a line that arrived
    in between once the interval is over (so the card always ends on the latest state) and
    keeps the elapsed time moving through a long step. The outbox keeps only the newest
    queued text of a card, so a slow chat never sees stale states either.
    """

    def __init__(
        self,
        notifier: Notifier | None,
        filed: Request,
        interval: float = 2.0,
        sink: ProgressSink | None = None,
    ) -> None:
        self.notifier, self.filed, self.interval, self.sink = notifier, filed, interval, sink
        self.started = time.monotonic()
        self._text = ""
        self._shown = ""
        # Nothing is shown in the first second: a quick run goes straight to its result.
        self._last_at = self.started - interval + PROGRESS_AFTER
        self._lock = asyncio.Lock()  # edits are queued in order: the newest is queued last
        self._ticker: asyncio.Task[None] | None = None

    async def __call__(self, text: str) -> None:
        self._text = text
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="opsbot-card-progress")
        if time.monotonic() - self._last_at >= self.interval:
            await self._flush()

    async def close(self) -> None:
        """Stop the ticker (before the final card is shown)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _flush(self) -> None:
        async with self._lock:
            now = time.monotonic()
            line = f"{self._text} · {elapsed(now - self.started)}"
            if line == self._shown:
                return
            self._shown, self._last_at = line, now
            if self.sink is not None:  # the card is not posted yet: the caller's message
                self.sink(card(self.filed, line))
            else:
                # a progress line gives way to everything else in the chat's window
                await show(self.notifier, self.filed, line, priority=Priority.progress)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(max(self._last_at + self.interval - time.monotonic(), 0.05))
            if time.monotonic() - self._last_at >= self.interval:
                await self._flush()
