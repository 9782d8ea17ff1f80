"""A request's card after it is filed, as the chat sees it: each new state queued as an
edit, progress paced while it runs, the final state with its files, the incident copy.

The lifecycle calls these; everything here is Telegram-free (``Notifier``: the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opsbot.actions.action import Outcome
from opsbot.actions.approvals import Request
from opsbot.actions.cards import card, next_steps, took
from opsbot.actions.declared import ACTIONS
from opsbot.incidents.state import INCIDENTS
from opsbot.notify import Notifier, ProgressSink
from opsbot.render import Button, Document, Reply, elapsed
from opsbot.services import Services
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



def offered(services: Services, done: Request) -> tuple[Button, ...]:
    """The next-step buttons a failed card offers (none on any other card)."""
    action = ACTIONS.get(done.action)
    return next_steps(
        services.settings, done, incidents=INCIDENTS.bound(services) is not None,
        falls_back=action is not None and action.falls_back,
    )  # fmt: skip


def files_of(outcome: Outcome) -> list[Document]:
    return [Document(f.name, f.read_bytes(), raw=True) for f in outcome.files if f.exists()]


def with_output(reply: Reply, name: str, outcome: Outcome) -> Reply:
    """The card with what the run printed: as its block, or as a document when long."""
    if len(outcome.output) > 3000:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return Reply(
            text=reply.text,
            block=reply.block,
            buttons=reply.buttons,
            document=Document(f"{name}-{stamp}.log", outcome.output.encode()),
        )
    block = outcome.output.strip() or reply.block  # what ran is in the note or the output
    files = files_of(outcome)
    return Reply(
        text=reply.text, block=block, buttons=reply.buttons,
        document=files[0] if files else None,
    )  # fmt: skip


def final_card(
    services: Services, done: Request, outcome: Outcome, duration: float | None
) -> Reply:
    """The card of a finished request, with its output and next steps."""
    shown = card(done, took(done, duration), offered(services, done))
    return with_output(shown, done.target, outcome)


async def report(
    services: Services,
    notifier: Notifier,
    done: Request,
    outcome: Outcome,
    duration: float | None = None,
) -> None:
    """Edit the card into its final state, send its files, copy the result to the incident
    chat."""
    reply = final_card(services, done, outcome, duration)
    if done.chat_id is not None and done.message_id is not None:
        # owed: ahead of progress, behind replies
        shown = Reply(reply.text, reply.block, buttons=reply.buttons)
        await edit_at(notifier, done.chat_id, done.message_id, shown, Priority.final)
        documents = [reply.document] if reply.document else []
        documents += files_of(outcome)
        for document in documents:
            caption = f"{done.action} {done.target}: {document.filename}"
            await notifier.send(done.chat_id, Reply(caption, document=document),
                                thread_id=done.thread_id)  # fmt: skip
    telegram = services.settings.telegram
    incident_chat = telegram.incident_chat_id or telegram.ops_chat_id
    if incident_chat is not None and incident_chat != done.chat_id:
        icon = "✅" if outcome.ok else "❌"
        text = f"{icon} {done.action} {done.target}: {outcome.summary}"
        text += f"\nrequested by {done.requester.name}"
        if done.approvals:
            text += ", approved by " + ", ".join(a.name for a in done.approvals)
        await notifier.send(incident_chat, Reply(text), thread_id=telegram.incident_thread_id)
