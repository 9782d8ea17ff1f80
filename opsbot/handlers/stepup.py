"""Step-up in the chat: hold a won approval until the approver's TOTP code arrives in private.

The approval tap goes through ``lifecycle.decide`` as usual; when the request's target or
action needs step-up, the winning tap does not run the action but ``hold``s it: the card says
whose code it waits for, a job gives up after ``approvals.step_up_timeout``, and ``on_code``
(a six-digit message in the approver's private chat) runs it once the code checks out.
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ContextTypes

from opsbot.actions import lifecycle
from opsbot.actions.approvals import APPROVALS
from opsbot.actions.cards import card, offered
from opsbot.actions.stepup import StepUp, enrolled
from opsbot.config import Person
from opsbot.handlers.gate import Gate
from opsbot.render import Reply
from opsbot.services import Services

log = logging.getLogger(__name__)


class StepUpHandlers:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.services: Services = gate.services
        self.stepup = StepUp(self.services.settings, self.services.store, self.services.audit)

    async def _needed(self, request_id: str) -> bool:
        request = await APPROVALS.of(self.services).get(request_id)
        return request is not None and lifecycle.needs_step_up(self.services, request)

    async def refusal(self, person: Person, request_id: str) -> str | None:
        """Before an approval is recorded: why this approver cannot complete it, if so."""
        if not await self._needed(request_id):
            return None
        if not self.services.settings.telegram.allow_private_chats:
            return "Step-up needs telegram.allow_private_chats: true."
        if not await enrolled(self.services.store, person):
            return f"This needs your TOTP code: enroll first (opsbot totp enroll {person.name})."
        if await self.stepup.locked(person):
            return "🔒 Step-up is locked for you after three wrong codes; try later."
        return None

    async def hold(
        self, context: ContextTypes.DEFAULT_TYPE, person: Person, request_id: str
    ) -> bool:
        """After a winning approval: True when the action must wait for a code."""
        if not await self._needed(request_id):
            return False
        await self.stepup.challenge(person, request_id)
        timeout = self.services.settings.approvals.step_up_timeout
        assert context.job_queue is not None  # the job-queue extra is a dependency
        context.job_queue.run_once(
            self._expire, timeout, data=(person, request_id), name=f"step-up-{request_id}"
        )
        request = await APPROVALS.of(self.services).get(request_id)
        notifier = self.services.notifier()
        if request is not None and request.chat_id is not None and request.message_id:
            waiting = f"🔐 waiting for {person.name}'s TOTP code ({timeout:.0f} s, in private)"
            await notifier.edit(
                request.chat_id, request.message_id, card(request, waiting)
            )
        await notifier.send(
            person.id, Reply(text=f"🔐 Send me your TOTP code within {timeout:.0f} s to run it.")
        )
        return True

    async def on_code(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A six-digit message in a private chat: the answer to a step-up challenge."""
        message = update.message
        person = self.gate.admitted(update)
        if message is None or message.text is None or person is None:
            return
        answer = await self.stepup.answer(person, message.text.strip())
        await self.services.notifier().send(message.chat_id, Reply(text=answer.message))
        if answer.run is not None:
            request = await APPROVALS.of(self.services).get(answer.run)
            if request is not None:
                await lifecycle.perform(self.services, request, self.services.notifier())
        elif answer.failed is not None:
            await self._fail(context, answer.failed, "step-up refused: too many wrong codes")

    async def _expire(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        job = context.job
        assert job is not None
        person: Person
        request_id: str
        person, request_id = job.data  # type: ignore[misc]
        if await self.stepup.expire(person, request_id):
            await self._fail(context, request_id, "no step-up code in time: not run")

    async def _fail(self, context: ContextTypes.DEFAULT_TYPE, request_id: str, why: str) -> None:
        done = await APPROVALS.of(self.services).finish(request_id, False, why)
        if done is not None and done.chat_id is not None and done.message_id:
            shown = card(done, next_steps=offered(self.services, done))
            await self.services.notifier().edit(done.chat_id, done.message_id, shown)
