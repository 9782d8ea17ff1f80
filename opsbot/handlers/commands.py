"""Chat commands, button taps and replies to our prompts, all handed to the Telegram-free verbs
(opsbot.verbs)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace

from telegram import Bot, CallbackQuery, Message, Update
from telegram.constants import ChatAction
from telegram.error import TelegramError
from telegram.ext import ContextTypes

from opsbot.actions import lifecycle
from opsbot.actions.approvals import APPROVALS
from opsbot.actions.cards import DECLARE
from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.alerting.records import Alert
from opsbot.alerting.verbs import ALERT_TAPS, alert_tap
from opsbot.errors import UsageError
from opsbot.handlers.gate import Gate
from opsbot.handlers.ingress import UpdateDedup
from opsbot.handlers.reply import fits_caption
from opsbot.handlers.stepup import StepUpHandlers
from opsbot.incidents.card import UPDATE_PROMPT, update_prompt
from opsbot.incidents.from_alert import brief_title, severity_prompt
from opsbot.incidents.records import Incident
from opsbot.incidents.state import INCIDENTS
from opsbot.render import Reply
from opsbot.state import prompts
from opsbot.state.outbox import Outbox
from opsbot.state.prompts import Prompt
from opsbot.updates import buttons as update_buttons
from opsbot.verbs.progress import ProgressMessage
from opsbot.verbs.registry import BUTTONS, Caller, command_verb, dispatch, refusal

log = logging.getLogger(__name__)

# Button data is "key" or "key:ARG"; the keys, their roles and verbs are registry.BUTTONS.

#: "typing…" is shown once a command has run this long, and renewed this often (Telegram
#: shows it for ~5 s or until the bot's next message).
TYPING_AFTER = 1.0
TYPING_EVERY = 4.0


#: Lines of a target's log shown by an alert's Logs button (the incident chat is busy).
ALERT_LOG_LINES = 20


class CommandHandlers:
    def __init__(
        self,
        gate: Gate,
        stepup: StepUpHandlers | None = None,
        dedup: UpdateDedup | None = None,
    ) -> None:
        self.gate = gate
        self.services = gate.services
        self.stepup = stepup
        self.dedup = dedup

    def _caller(self, update: Update) -> Caller:
        person = self.gate.admitted(update)
        assert person is not None  # the gate ran first
        chat = update.effective_chat
        message = update.effective_message
        thread = message.message_thread_id if message and message.is_topic_message else None
        return Caller(person.name, person.role, person.id, chat.id if chat else None, thread)

    async def on_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Any /command addressed to us: run the verb and answer in the same chat/topic."""
        message = update.message
        if message is None or not message.text:
            return
        verb, args = command_verb(message.text), message.text.split()[1:]
        await self._run(update, context, message, verb, args)

    async def on_reply(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A reply to one of our prompts: run the command it completes, as if typed."""
        message = update.message
        answered = message.reply_to_message if message is not None else None
        if message is None or answered is None:
            return
        prompt = await prompts.answering(
            self.services.store, message.chat_id, answered.message_id
        )
        if prompt is None:
            return  # a reply to anything else is chatter
        words = (message.text or "").split()
        if not words:
            command = " ".join((prompt.verb, *prompt.args))
            text = f"Nothing changed: reply with text (or type /{command} TEXT)."
            thread = message.message_thread_id if message.is_topic_message else None
            await self._reply(message.chat_id, Reply(text), thread, reply_to=message.message_id)
            return
        await self._run(update, context, message, prompt.verb, [*prompt.args, *words])

    async def _run(
        self,
        update: Update,
        context: ContextTypes.DEFAULT_TYPE,
        message: Message,
        verb: str,
        args: list[str],
    ) -> None:
        """Run one command for a message; the answer is threaded to it."""
        thread = message.message_thread_id if message.is_topic_message else None
        # A read-only command runs while its update is being claimed: it shows no progress,
        # and its reply is sent only if the claim holds.
        claim = self.dedup.claim_of(update) if self.dedup is not None else None
        notifier = self.services.notifier()
        progress = ProgressMessage(
            notifier, message.chat_id, thread_id=thread, reply_to=message.message_id
        )
        sink = progress.update if claim is None else None
        shown = progress.shown if claim is None else None
        caller = replace(self._caller(update), progress=sink, progress_shown=shown)
        # The trail is written once the reply is queued.
        with self.services.audit.after_reply() as trail:
            async with typing(context.bot, message.chat_id, thread):
                try:
                    reply = await dispatch(self.services, caller, verb, args)
                except BaseException:
                    progress.cancel()
                    raise
                if reply.empty:  # said already: the verb sent its answer, a card shows the rest
                    progress.cancel()
                elif (ref := await progress.finish(reply)) is None:
                    await self._reply(
                        message.chat_id, reply, thread, reply_to=message.message_id, claim=claim
                    )
                elif reply.request_id is not None:
                    await APPROVALS.of(self.services).attach_message(reply.request_id, ref)
            if claim is not None and not await claim:  # a copy answered elsewhere: no trail
                trail.clear()

    async def _reply(
        self,
        chat_id: int,
        reply: Reply,
        thread: int | None,
        *,
        reply_to: int | None = None,
        claim: Awaitable[bool] | None = None,
        ref: int | None = None,
    ) -> None:
        """Answer through the outbox; an approval card's ref is recorded before it is queued.
        ``claim``: the update's claim, still being made (the reply is sent only if it holds);
        ``ref``: the message's, when something was filed under it first."""
        ref = ref or Outbox.new_ref()
        if reply.request_id is not None:
            await APPROVALS.of(self.services).attach_message(reply.request_id, ref)
        notifier = self.services.notifier()
        await notifier.send(
            chat_id, reply, thread_id=thread, ref=ref, reply_to=reply_to, claim=claim
        )

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A tap on one of our buttons: refresh in place (health) or post logs."""
        query = update.callback_query
        if query is None or query.data is None:
            return
        key, _, arg = query.data.partition(":")
        spec = BUTTONS.get(key)
        if spec is None:
            await query.answer("This button is no longer valid.")
            return
        caller = self._caller(update)
        if not caller.role.allows(spec.role):
            await self.services.audit.record(
                "refused", who=caller.name, user=caller.user_id, chat=caller.chat_id, button=key
            )
            await query.answer(refusal(self.services.settings, "That", spec.role)[:200])
            return
        # a tap that changes state by itself: one entry, with its id (ButtonSpec.audits_itself)
        if spec.verb is None and not spec.audits_itself:
            what = spec.summary.split(" (")[0]
            await self.services.audit.tap(what, caller.name, user=caller.user_id,
                                          chat=caller.chat_id, args={"id": arg})  # fmt: skip
        if key in ("a", "d"):
            await self._decide(update, context, arg, approve=key == "a")
            return
        if key == DECLARE:  # Declare incident, on a failed action's card
            toast = await lifecycle.declare_from(self.services, caller.person, arg)
            await _answer(query, toast[:200])
            return
        if key == UPDATE_PROMPT:  # an incident card's Update: asks for the text as a reply
            await self._ask_update(query, caller, arg)
            return
        if key == "is":  # the severity asked by Declare incident
            alert_id, _, severity = arg.partition(":")
            await self._alert_button(update, context, key, alert_id, severity)
            return
        if key.startswith("a"):  # al, ar, ab, as, au, ak, ai: the buttons on an alert
            await self._alert_button(update, context, key, arg)
            return
        if key in update_buttons.TAPS:  # an update notice's Deploy / Ignore
            await self._update_button(query, caller, key, arg)
            return
        verb = spec.verb
        assert verb is not None  # every other button runs a verb
        await _answer(query)
        reply = await dispatch(self.services, caller, verb, arg.split())  # "ack INC-7"
        message = query.message
        if message is None or not hasattr(message, "edit_text"):
            return
        if verb == "health" and _refreshes_in_place(message, reply):
            await self.services.notifier().edit_message(message.chat.id, message.message_id, reply)
        else:
            thread = getattr(message, "message_thread_id", None)
            await self._reply(message.chat.id, reply, thread, reply_to=message.message_id)

    async def _update_button(
        self, query: CallbackQuery, caller: Caller, key: str, notice_id: str
    ) -> None:
        """Deploy runs the deploy verb (its answer, an approval card, threaded to the notice);
        Ignore edits the notice into "ignored by X"."""
        done = await update_buttons.tap(self.services, caller, key, notice_id)
        await _answer(query, done.toast[:200] if done.toast else None)
        message = query.message
        if message is None:
            return
        if done.card is not None:
            await self.services.notifier().edit_message(message.chat.id, message.message_id,
                                                        done.card)  # fmt: skip
        if done.verb is not None:
            reply = await dispatch(self.services, caller, done.verb, list(done.args))
            thread = getattr(message, "message_thread_id", None)
            await self._reply(message.chat.id, reply, thread, reply_to=message.message_id)

    async def _ask_update(self, query: CallbackQuery, caller: Caller, incident_id: str) -> None:
        """Post the prompt in reply to the card, filed first so its reply finds the incident."""
        incidents, message = INCIDENTS.bound(self.services), query.message
        incident = await incidents.get(incident_id) if incidents is not None else None
        if incident is None or message is None:
            await _answer(query, f"No incident {incident_id[:20]} is known.")
            return
        if incident.resolved:
            await _answer(query, f"{incident.id} is resolved: /incident reopen {incident.id}")
            return
        await _answer(query)
        ref = Outbox.new_ref()
        await prompts.expect(self.services.store, ref, Prompt("incident", ("update", incident.id)))
        thread = getattr(message, "message_thread_id", None)
        prompt = update_prompt(incident.id, query.from_user.username)
        await self._reply(message.chat.id, prompt, thread, reply_to=message.message_id, ref=ref)

    async def _decide(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, request_id: str, approve: bool
    ) -> None:
        """Approve/Deny: a toast for the tapper; the one winning approval runs the action."""
        query = update.callback_query
        assert query is not None
        person = self.gate.admitted(update)
        assert person is not None  # the gate ran first
        if approve and self.stepup is not None:
            refusal = await self.stepup.refusal(person, request_id)
            if refusal is not None:
                await query.answer(refusal[:200])
                return
        notifier = self.services.notifier()
        toast, won = await lifecycle.decide(self.services, person, request_id, approve, notifier)
        held = won is not None and self.stepup is not None
        if held and await self.stepup.hold(context, person, request_id):  # type: ignore[union-attr]
            await _answer(query, "Approved: now send me your TOTP code in private.")
            return
        # The toast goes out beside the action, which never waits on it (a hung call would
        # hold the action for PTB's whole timeout).
        toasting = asyncio.create_task(_answer(query, toast[:200]))
        try:
            if won is not None:
                await lifecycle.perform(self.services, won, notifier)
        finally:
            await toasting

    async def _alert_button(
        self,
        update: Update,
        context: ContextTypes.DEFAULT_TYPE,
        key: str,
        alert_id: str,
        severity: str = "",
    ) -> None:
        """Alert buttons: Logs and Restart go through the verbs (Restart files a request)."""
        query = update.callback_query
        engine = ALERT_ENGINE.bound(self.services)
        assert query is not None
        caller = self._caller(update)
        alert = await engine.get(alert_id) if engine is not None else None
        if engine is None or alert is None:
            await _answer(query, "This alert is no longer known.")
            return
        if key in ALERT_TAPS:  # ak, as, au: done and audited by the alert wing, a toast
            await _answer(query, (await alert_tap(self.services, caller, key, alert_id))[:200])
            return
        tapped = query.message.message_id if query.message is not None else None
        if key in ("ai", "is") and (already := await self._declared_for(alert)) is not None:
            await _answer(query, f"Already declared: {already.id} ({already.severity}).")
            return  # one open incident per failure, however often Declare is tapped
        if key == "ai" and caller.chat_id is not None:  # asks the severity first
            await _answer(query)
            title = brief_title(alert.target, alert.summary, alert.source)
            prompt = severity_prompt(alert.id, title)
            await self._reply(caller.chat_id, prompt, caller.thread_id, reply_to=tapped)
            return
        if key == "is":
            toast, declared = await self._declare_from(alert, caller, severity)
            await _answer(query, toast)
            if declared is not None and query.message is not None and tapped is not None:
                # the question is answered: no P0-P3 left to tap a second time
                title = brief_title(alert.target, alert.summary, alert.source)
                said = Reply(f"🚨 {declared} declared ({severity}) by {caller.name}: {title}")
                await self.services.notifier().edit_message(query.message.chat.id, tapped, said)
            return
        await _answer(query)
        verb = BUTTONS[key].verb or "logs"
        args = [alert.target or "?"]
        if verb == "logs":  # a glance beside the alert, on a phone: /logs T N says more
            args.append(str(ALERT_LOG_LINES))
        reply = await dispatch(self.services, caller, verb, args)
        chat_id = caller.chat_id
        if chat_id is None:
            return
        await self._reply(chat_id, reply, caller.thread_id, reply_to=tapped)

    async def _declared_for(self, alert: Alert) -> Incident | None:
        """The open incident already declared on this failure (the same brief title)."""
        incidents = INCIDENTS.bound(self.services)
        if incidents is None:
            return None
        title = brief_title(alert.target, alert.summary, alert.source)
        open_ = [i for i in await incidents.all() if not i.resolved and i.title == title]
        return open_[0] if open_ else None

    async def _declare_from(
        self, alert: Alert, caller: Caller, severity: str
    ) -> tuple[str, str | None]:
        """Declare incident on an alert at the chosen severity, its target involved: the
        toast, and the incident's id when one was declared."""
        incidents = INCIDENTS.bound(self.services)
        if incidents is None:
            return "Incidents are not available.", None
        targets = [alert.target] if alert.target in self.services.settings.targets else []
        title = brief_title(alert.target, alert.summary, alert.source)
        try:
            declared = await incidents.declare(severity, title, targets, caller.person)
        except UsageError as exc:
            return str(exc)[:200], None
        return f"{declared.id} declared ({severity}).", declared.id


@contextlib.asynccontextmanager
async def typing(bot: Bot, chat_id: int, thread: int | None) -> AsyncIterator[None]:
    """Show "typing…" in the chat (and topic) while the body runs longer than TYPING_AFTER."""
    task = asyncio.create_task(_keep_typing(bot, chat_id, thread), name="opsbot-typing")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _keep_typing(bot: Bot, chat_id: int, thread: int | None) -> None:
    """A direct, ephemeral Bot API call (not the outbox): a failure is only logged."""
    await asyncio.sleep(TYPING_AFTER)
    while True:
        try:
            await bot.send_chat_action(chat_id, ChatAction.TYPING, message_thread_id=thread)
        except Exception as exc:  # a courtesy: never affects the command
            log.debug("no typing indicator in %s: %s", chat_id, exc)
        await asyncio.sleep(TYPING_EVERY)


async def _answer(query: CallbackQuery, text: str | None = None) -> None:
    """The tap's toast, sent directly: it is only a courtesy, so its failure (a late tap's
    400 "query is too old", an outage) is logged and never stops what the tap does."""
    try:
        await query.answer(text)
    except TelegramError as exc:
        log.info("could not answer a button tap: %s", exc)


def _refreshes_in_place(message: object, reply: Reply) -> bool:
    """A Refresh edits the tapped message when the new answer has its shape: text for a
    text, a photo with its caption for a photo (/health TARGET's latency chart)."""
    photo = reply.document is not None and reply.document.photo and fits_caption(reply)
    if getattr(message, "photo", None):
        return photo
    return reply.document is None
