"""The composition root: builds the services and the python-telegram-bot Application.

Nothing connects at import time. Pools open lazily once the application runs and close in
``post_shutdown``; bot commands are published per role in ``post_init``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from telegram import (
    BotCommand,
    BotCommandScopeChat,
    BotCommandScopeChatMember,
    BotCommandScopeDefault,
    Update,
)
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from opsbot import handlers, monitor, timeline
from opsbot.alerts import AlertEngine
from opsbot.checks import check_all
from opsbot.commands import VERBS
from opsbot.config import Role, Settings
from opsbot.errors import ConfigError
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.incidents import Incidents
from opsbot.scheduler import MonitorScheduler
from opsbot.services import Services

if TYPE_CHECKING:  # aiohttp loads only when the web server is enabled
    from opsbot.web import WebServer

log = logging.getLogger(__name__)

AnyApplication = Application[Any, Any, Any, Any, Any, Any]
TICK_SECONDS = 3.0  # how often the alert engine flushes edits, digests, reminders


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

    web: list[WebServer] = []

    async def post_init(application: AnyApplication) -> None:
        await publish_commands(application, settings)
        assert application.job_queue is not None  # the job-queue extra is a dependency
        await heartbeat()
        application.job_queue.run_repeating(heartbeat, interval=30, first=30)
        server = await start_alerting(application, services)
        if server is not None:
            web.append(server)
        log.info("opsbot is up as @%s", application.bot.username)

    async def post_shutdown(application: AnyApplication) -> None:
        for server in web:
            await server.stop()
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


async def start_alerting(application: AnyApplication, services: Services) -> WebServer | None:
    """Alert engine, incidents, their periodic tick, the monitor's rounds, the web server."""
    settings = services.settings
    jobs = application.job_queue
    assert jobs is not None
    notifier = TelegramNotifier(application.bot, services.redactor)
    engine = AlertEngine(services.store, settings, notifier, metrics=services.metrics)
    services.alerts = engine

    async def health(names: Sequence[str]) -> str:
        known = {n: settings.targets[n] for n in names if n in settings.targets}
        results = await check_all(known, services)
        return " · ".join(f"{r.state.icon} {r.target}" for r in results)

    incidents = Incidents(services.store, settings, notifier, health=health)
    services.incidents = incidents
    services.audit.listeners.append(timeline.audit_listener(incidents))
    ingest = timeline.noting_ingest(incidents, engine.ingest)

    async def tick(context: object) -> None:
        await engine.tick()
        await incidents.tick()

    jobs.run_repeating(tick, interval=TICK_SECONDS, first=TICK_SECONDS, name="alerts-tick")
    still_firing = {
        a.fingerprint: a.severity
        for a in await engine.list(firing_only=True, limit=10_000)
        if a.source == monitor.SOURCE
    }
    watcher = monitor.Monitor(settings, services, ingest, firing=still_firing)
    rounds = MonitorScheduler(watcher, settings, services.metrics)
    rounds.start()
    services.on_close.append(rounds.stop)
    if not settings.web.enabled:
        return None
    from opsbot.web import WebServer

    server = WebServer(settings, ingest, services.metrics)
    port = await server.start()
    log.info("alert webhooks, /healthz and /metrics on %s:%d", settings.web.host, port)
    return server


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
