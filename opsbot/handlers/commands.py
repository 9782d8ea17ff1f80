"""Chat commands and button taps, both handed to the Telegram-free verbs in opsbot.commands."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.ext import ContextTypes

from opsbot import operations
from opsbot.alert_event import Severity
from opsbot.alerts import Alert
from opsbot.commands import Caller, dispatch
from opsbot.config import Role
from opsbot.handlers.gate import Gate
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.handlers.reply import edit_reply, send_reply

log = logging.getLogger(__name__)

# Button data: "h" (health overview), "h:TARGET" (one target), "l:TARGET" (its logs),
# "a:ID" / "d:ID" (approve / deny the request with that opaque id),
# "al:ID" / "ar:ID" / "as:ID" / "ak:ID" / "ai:ID" (an alert's Logs, Restart, Silence 1h,
# Ack, Declare incident).
_BUTTON_VERBS = {"h": "health", "l": "logs"}


class CommandHandlers:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.services = gate.services

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
        first, *args = message.text.split()
        verb = first[1:].split("@", 1)[0].lower()
        if verb == "start":
            verb = "help"
        with self.services.audit.after_reply():  # the trail is written once the reply is out
            reply = await dispatch(self.services, self._caller(update), verb, args)
            thread = message.message_thread_id if message.is_topic_message else None
            sent = await send_reply(context.bot, message.chat_id, reply, thread_id=thread)
        if reply.request_id is not None:
            await self.services.approvals.attach_message(reply.request_id, sent.message_id)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A tap on one of our buttons: refresh in place (health) or post logs."""
        query = update.callback_query
        if query is None or query.data is None:
            return
        key, _, arg = query.data.partition(":")
        if key in ("a", "d"):
            await self._decide(update, context, arg, approve=key == "a")
            return
        if key in ("al", "ar", "as", "ak", "ai"):
            await self._alert_button(update, context, key, arg)
            return
        verb = _BUTTON_VERBS.get(key)
        if verb is None:
            await query.answer("This button is no longer valid.")
            return
        await query.answer()
        reply = await dispatch(self.services, self._caller(update), verb, [arg] if arg else [])
        message = query.message
        if message is None or not hasattr(message, "edit_text"):
            return
        if verb == "health":
            await edit_reply(message, reply)  # type: ignore[arg-type]
        else:
            thread = getattr(message, "message_thread_id", None)
            await send_reply(context.bot, message.chat.id, reply, thread_id=thread)

    async def _decide(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, request_id: str, approve: bool
    ) -> None:
        """Approve/Deny: a toast for the tapper; the one winning approval runs the action."""
        query = update.callback_query
        assert query is not None
        person = self.gate.admitted(update)
        assert person is not None  # the gate ran first
        toast, runner = await operations.decide(
            self.services,
            person,
            request_id,
            approve,
            TelegramNotifier(context.bot, self.services.redactor),
        )
        await query.answer(toast[:200])
        if runner is not None:
            await runner()

    async def _alert_button(
        self, update: Update, context: ContextTypes.DEFAULT_TYPE, key: str, alert_id: str
    ) -> None:
        """Alert buttons: Logs and Restart go through the verbs (Restart files a request)."""
        query = update.callback_query
        engine = self.services.alerts
        assert query is not None
        caller = self._caller(update)
        alert = await engine.get(alert_id) if engine is not None else None
        if engine is None or alert is None:
            await query.answer("This alert is no longer known.")
            return
        if key != "al" and not caller.role.allows(Role.operator):
            await query.answer("That needs the operator role.")
            return
        if key == "ak":
            await query.answer((await engine.ack(alert_id, caller.person))[:200])
            return
        if key == "as":
            await query.answer((await engine.silence_alert(alert_id, caller.person))[:200])
            return
        if key == "ai":
            await query.answer(await self._declare_from(alert, caller))
            return
        await query.answer()
        verb = "logs" if key == "al" else "restart"
        reply = await dispatch(self.services, caller, verb, [alert.target or "?"])
        chat_id = caller.chat_id
        if chat_id is None:
            return
        sent = await send_reply(context.bot, chat_id, reply, thread_id=caller.thread_id)
        if reply.request_id is not None:
            await self.services.approvals.attach_message(reply.request_id, sent.message_id)

    async def _declare_from(self, alert: Alert, caller: Caller) -> str:
        """Declare incident on an alert: P1 for critical, P2 otherwise, its target involved."""
        incidents = self.services.incidents
        if incidents is None:
            return "Incidents are not available."
        severity = "P1" if alert.severity is Severity.critical else "P2"
        targets = [alert.target] if alert.target in self.services.settings.targets else []
        title = alert.summary.splitlines()[0][:100] if alert.summary else alert.source
        declared = await incidents.declare(severity, title, targets, caller.person)
        await self.services.audit.record(
            "incident", who=caller.name, user=caller.user_id, incident=declared.id,
            alert=alert.id, target=alert.target,
        )  # fmt: skip
        return f"{declared.id} declared ({severity})."
