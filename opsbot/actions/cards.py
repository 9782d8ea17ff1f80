"""The approval card, as a person would write it, and its life in the chat after it is filed.

What it says: what will run (once), who asked, where it stands, and, when it failed, the next
steps as buttons. A card is rendered from the request alone (any replica, any time); the
next-step buttons of a failed card are worked out by ``next_steps`` from the configuration,
since only it knows whether the target has logs to read or a rollback to fall back on.

How it changes: each new state queued as an edit, progress paced while it runs, the final
state with its files, the incident copy. The lifecycle calls these; everything here is
Telegram-free (``Notifier``: the outbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from opsbot.actions.action import Outcome
from opsbot.actions.approvals import Request, Status
from opsbot.actions.declared import ACTIONS
from opsbot.config import ContainerTarget, K8sTarget, Settings, Target
from opsbot.incidents.state import INCIDENTS
from opsbot.notify import Notifier, ProgressSink
from opsbot.reach.targets import logs_argv
from opsbot.render import Button, Document, Reply, elapsed, moment, short_duration
from opsbot.services import Services
from opsbot.state.outbox_notifier import edit_at
from opsbot.state.pace import Priority

log = logging.getLogger(__name__)

#: A run's progress shows from this many seconds on (then every 2 s, or 3 s in a group).
PROGRESS_AFTER = 1.0



HEADS = {
    Status.pending: "⚠️",
    Status.approved: "🔄",
    Status.denied: "🚫",
    Status.expired: "⌛",
    Status.done: "✅",
    Status.failed: "❌",
}

#: Button keys of a failed card's next steps (registered in actions/verbs.py).
RETRY, ROLLBACK, DECLARE = "rt", "rb", "ri"


def card(
    request: Request,
    progress: str = "",
    next_steps: tuple[Button, ...] = (),
    now: float | None = None,
) -> Reply:
    """The approval card: what will run, who asked, and where it stands.

    The steps (argv or API call) are shown once: in the note when it already names them
    ("restart quizbot on vps-1: pm2 restart quizbot"), else as the block below.
    """
    title = f"{HEADS[request.status]} {request.action} {request.target}"
    if request.status is Status.pending:
        title += " — approval needed"
    elif request.status is Status.approved:
        title += " — running"
    else:
        title += f" — {request.status.value}"
    lines = [title, f"requested by {request.requester.name} · id {request.id}"]
    if request.note:
        lines.append(request.note)
    if request.status is Status.pending:
        lines.append(f"expires {moment(request.expires, now)}")
    if request.approvals:
        lines.append("approved by " + ", ".join(a.name for a in request.approvals))
    if request.denied_by is not None:
        lines.append(f"{request.status.value} by {request.denied_by.name}")
    if progress:
        lines.append(progress)
    if request.result:
        lines.append(request.result)
    buttons: tuple[Button, ...] = ()
    if request.status is Status.pending:
        buttons = (Button("✅ Approve", f"a:{request.id}"), Button("✖️ Deny", f"d:{request.id}"))
    elif request.status is Status.failed:
        buttons = next_steps
    shown = all(step in request.note for step in request.steps)
    return Reply(
        text="\n".join(lines),
        block="" if shown else "\n".join(request.steps),
        buttons=buttons,
        request_id=request.id if request.status is Status.pending else None,
    )


def took(request: Request, seconds: float | None) -> str:
    """The final card's "took 12 s", unless its result already says how long it took."""
    if seconds is None:
        return ""
    result = request.result or ""
    if result.startswith(("healthy after", "still failing after")):
        return ""
    return f"took {short_duration(seconds) if seconds < 60 else elapsed(seconds)}"  # 40 ms


def next_steps(
    settings: Settings, request: Request, incidents: bool, falls_back: bool = False
) -> tuple[Button, ...]:
    """What a failed card offers, only what exists for its target: Logs, Retry (the same
    request filed again, through the same approval policy), Rollback (after an action that
    ``falls_back``, a restart, where the target has one) and Declare incident (where
    incidents are on)."""
    target = settings.targets.get(request.target)
    if target is None:  # gone from the configuration: nothing here can act on it
        return ()
    buttons = []
    if has_logs(target):
        buttons.append(Button("📜 Logs", f"l:{request.target}"))
    buttons.append(Button("🔁 Retry", f"{RETRY}:{request.id}"))
    if falls_back and has_rollback(target):
        buttons.append(Button("⏪ Rollback", f"{ROLLBACK}:{request.target}"))
    if incidents:
        buttons.append(Button("🚨 Declare incident", f"{DECLARE}:{request.id}"))
    return tuple(buttons)


def has_logs(target: Target) -> bool:
    return isinstance(target, ContainerTarget) or logs_argv(target, 1) is not None


def has_rollback(target: Target) -> bool:
    """A rollback can be planned at all (a container's still needs a known-good version)."""
    return target.actions.rollback is not None or isinstance(target, ContainerTarget | K8sTarget)


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
