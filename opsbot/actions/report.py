"""A request's result as the chat sees it: the final card, its files, the incident copy."""

from __future__ import annotations

import time

from opsbot.actions.action import Outcome
from opsbot.actions.approvals import Request
from opsbot.actions.cards import card, next_steps, took
from opsbot.actions.declared import ACTIONS
from opsbot.notify import Notifier
from opsbot.render import Button, Document, Reply
from opsbot.services import Services
from opsbot.state.outbox_notifier import edit_at
from opsbot.state.pace import Priority


def offered(services: Services, done: Request) -> tuple[Button, ...]:
    """The next-step buttons a failed card offers (none on any other card)."""
    action = ACTIONS.get(done.action)
    return next_steps(
        services.settings, done, incidents=services.incidents is not None,
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
