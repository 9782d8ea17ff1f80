"""The composition root: builds the services and the python-telegram-bot Application.

Nothing connects at import time. Pools open lazily once the application runs and close in
``post_shutdown``; bot commands are published per role in ``post_init``.
"""

from __future__ import annotations

import logging
from typing import Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeChatMember,
    BotCommandScopeDefault,
    Update,
)
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from opsbot import handlers
from opsbot.commands import VERBS
from opsbot.config import Role, Settings
from opsbot.errors import ConfigError
from opsbot.services import Services

log = logging.getLogger(__name__)

AnyApplication = Application[Any, Any, Any, Any, Any, Any]


def build_application(settings: Settings, services: Services | None = None) -> AnyApplication:
    """An Application wired to opsbot's handlers, ready for ``run_polling`` or manual start."""
    telegram = settings.telegram
    if telegram.token is None:
        raise ConfigError(
            "telegram.token is not set (use OPSBOT_TELEGRAM__TOKEN or telegram.token_file); "
            "without one, try `opsbot console`"
        )
    services = services or Services.build(settings)

    async def heartbeat(context: object = None) -> None:
        """Proof of a live event loop, for the container's HEALTHCHECK."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "heartbeat").touch()

    async def post_init(application: AnyApplication) -> None:
        await publish_commands(application, settings)
        assert application.job_queue is not None  # the job-queue extra is a dependency
        await heartbeat()
        application.job_queue.run_repeating(heartbeat, interval=30, first=30)
        log.info("opsbot is up as @%s", application.bot.username)

    async def post_shutdown(application: AnyApplication) -> None:
        await services.close()

    application = (
        ApplicationBuilder()
        .token(telegram.token.get_secret_value())
        .base_url(f"{telegram.api_url}/bot")
        .base_file_url(f"{telegram.api_url}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=2))
        .concurrent_updates(8)
        .get_updates_read_timeout(telegram.poll_timeout + 10)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    handlers.register(application, services)
    return application


def commands_for(role: Role) -> list[BotCommand]:
    return [BotCommand(v.name, v.usage) for v in VERBS.values() if role.allows(v.role)]


async def publish_commands(application: AnyApplication, settings: Settings) -> None:
    """setMyCommands per role: each person sees only what they may use, where they may."""
    bot = application.bot
    await bot.delete_my_commands(scope=BotCommandScopeDefault())
    for person in settings.people:
        commands = commands_for(person.role)
        for chat_id in sorted(settings.telegram.chat_ids):
            scope = BotCommandScopeChatMember(chat_id=chat_id, user_id=person.id)
            await bot.set_my_commands(commands, scope=scope)
        if settings.telegram.allow_private_chats:
            await bot.set_my_commands(commands, scope=BotCommandScopeChat(chat_id=person.id))


def run(settings: Settings) -> None:
    """Long polling until interrupted; graceful shutdown closes every pool."""
    application = build_application(settings)
    application.run_polling(
        allowed_updates=Update.ALL_TYPES, timeout=settings.telegram.poll_timeout
    )
