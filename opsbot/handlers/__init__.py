"""The Telegram layer: the only code that imports python-telegram-bot's handlers.

Registration order matters: the dedup claim runs first (group -2, each update_id once across
replicas), the gate in group -1 for every update and stops anything it does not admit;
commands and buttons run in group 0 only for what it let through.

May import the verb registry, the wings, state and the ground; nothing imports this package
but the entry layer (``opsbot.app``).
"""

from __future__ import annotations

from telegram import Update
from telegram.ext import (
    Application,
    CallbackQueryHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from opsbot.handlers.commands import CommandHandlers
from opsbot.handlers.errors import ErrorReporter
from opsbot.handlers.gate import Gate
from opsbot.handlers.ingress import UpdateDedup
from opsbot.handlers.stepup import StepUpHandlers
from opsbot.services import Services


def register(application: Application, services: Services) -> Gate:  # type: ignore[type-arg]
    gate = Gate(services)
    stepup = StepUpHandlers(gate)
    dedup = UpdateDedup(services)
    handlers = CommandHandlers(gate, stepup, dedup)
    application.add_handler(TypeHandler(Update, dedup), group=-2)
    application.add_handler(TypeHandler(Update, gate), group=-1)
    application.add_handler(
        MessageHandler(filters.COMMAND & filters.UpdateType.MESSAGE, handlers.on_command)
    )
    code = filters.ChatType.PRIVATE & filters.UpdateType.MESSAGE & filters.Regex(r"^\s*\d{6}\s*$")
    application.add_handler(MessageHandler(code, stepup.on_code))
    application.add_handler(CallbackQueryHandler(handlers.on_button))
    # a reply to one of our prompts (after the step-up code: a 6-digit reply in private is one)
    replies = filters.REPLY & filters.UpdateType.MESSAGE & ~filters.COMMAND
    application.add_handler(MessageHandler(replies, handlers.on_reply))
    application.add_error_handler(ErrorReporter(services))
    return gate
