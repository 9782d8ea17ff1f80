"""The composition root: builds the services and the python-telegram-bot Application.

Nothing connects at import time. Pools open lazily once the application runs and close in
``post_shutdown``; bot commands are published per role in ``post_init``. With the redis store,
the replicas share a leader lease (``leader_lease``): background work (alert ticks, incident
ticks) runs on its holder only, and in polling mode only the holder polls
(:mod:`opsbot.runner`); the monitor's targets are shared by the live replicas instead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from telegram import (
    BotCommand,
    BotCommandScope,
    BotCommandScopeChat,
    BotCommandScopeChatMember,
    BotCommandScopeDefault,
    MenuButtonWebApp,
    Update,
    WebAppInfo,
)
from telegram.error import TelegramError
from telegram.ext import AIORateLimiter, Application, ApplicationBuilder

from opsbot import handlers
from opsbot.actions import reaper
from opsbot.actions.approvals import APPROVALS, Approvals
from opsbot.actions.backups import schedule as backup_schedule
from opsbot.actions.stepup import TargetRules
from opsbot.alerting import monitor
from opsbot.alerting.engine import ALERT_ENGINE, AlertEngine
from opsbot.alerting.intake import Intake
from opsbot.alerting.scheduler import MonitorScheduler
from opsbot.alerting.status_history import recording_ingest
from opsbot.catalog import VERBS
from opsbot.config import Role, Settings
from opsbot.errors import ConfigError
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.handlers.outbox_worker import OutboxWorker
from opsbot.incidents import timeline
from opsbot.incidents.escalation import Escalator
from opsbot.incidents.state import INCIDENTS, Incidents
from opsbot.miniapp.latency import LatencyRecorder
from opsbot.miniapp.menu import RETRY as MENU_RETRY
from opsbot.miniapp.menu import MenuButtons
from opsbot.objectives import alerts as burn_alerts
from opsbot.objectives import schedule as report_schedule
from opsbot.objectives.recording import FLUSH_SECONDS, Recorder
from opsbot.reach.checks import check_all
from opsbot.services import Services
from opsbot.state.leases import Lease, only_when_leading, replica_id
from opsbot.state.members import Members
from opsbot.state.outbox import Priority
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.updates.notices import TICK_SECONDS as UPDATES_TICK
from opsbot.updates.notices import UpdateChecker
from opsbot.verbs import manual

if TYPE_CHECKING:  # aiohttp loads only when the web server is enabled
    from opsbot.web.server import WebServer

log = logging.getLogger(__name__)

AnyApplication = Application[Any, Any, Any, Any, Any, Any]
TICK_SECONDS = 3.0  # how often the alert engine flushes edits, digests, reminders
_SERVICES, _LEASE = "opsbot.services", "opsbot.leader"  # keys in application.bot_data
REAP_SECONDS = 2.0  # how often expired and stranded approval requests are settled


def bind_approvals(services: Services) -> None:
    """The actions wing's approvals, bound before any command can file a request."""
    settings = services.settings
    services.bind(APPROVALS, Approvals(services.store, settings.approvals, TargetRules(settings)))


def build_application(settings: Settings, services: Services | None = None) -> AnyApplication:
    """An Application wired to opsbot's handlers, ready for ``run_polling`` or manual start."""
    telegram = settings.telegram
    if telegram.token is None:
        raise ConfigError(
            "telegram.token is not set (use OPSBOT_TELEGRAM__TOKEN or telegram.token_file); "
            "without one, try `opsbot console`"
        )
    services = services or Services.build(settings)
    bind_approvals(services)

    async def heartbeat(context: object = None) -> None:
        """Proof of a live event loop, for the container's HEALTHCHECK."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        (settings.data_dir / "heartbeat").touch()

    web: list[WebServer] = []
    workers: list[OutboxWorker] = []

    async def post_init(application: AnyApplication) -> None:
        workers.append(start_outbox(application, services))
        start_reaper(application, services)
        await publish_commands(application, settings)
        start_board_menu(application, settings)
        assert application.job_queue is not None  # the job-queue extra is a dependency
        await heartbeat()
        application.job_queue.run_repeating(heartbeat, interval=30, first=30)
        lease = leader_lease(application)
        if lease is not None:
            lease.start()
        server = await start_alerting(application, services)
        if server is not None:
            web.append(server)
        log.info("opsbot is up as @%s", application.bot.username)

    async def post_stop(application: AnyApplication) -> None:
        """The outbox worker finishes its pass while the bot can still call Telegram."""
        for worker in workers:
            await worker.stop()

    async def post_shutdown(application: AnyApplication) -> None:
        lease = leader_lease(application)
        if lease is not None:
            await lease.stop()
        for server in web:
            await server.stop()
        for worker in workers:
            await worker.stop()
        await services.close()

    application = (
        ApplicationBuilder()
        .token(telegram.token.get_secret_value())
        .base_url(f"{telegram.api_url}/bot")
        .base_file_url(f"{telegram.api_url}/file/bot")
        # Groups are paced by the outbox, shared by every replica; this keeps the bot-wide
        # 30/s, and retries a 429 twice for the calls that do not go through the outbox
        # (button toasts); the outbox handles a 429 that outlasts that itself.
        .rate_limiter(AIORateLimiter(group_max_rate=0, max_retries=2))
        .concurrent_updates(8)
        .get_updates_read_timeout(telegram.poll_timeout + 10)
        .read_timeout(telegram.request_timeout)
        .post_init(post_init)
        .post_stop(post_stop)
        .post_shutdown(post_shutdown)
        .build()
    )
    handlers.register(application, services)
    application.bot_data[_SERVICES] = services
    application.bot_data[_LEASE] = make_lease(services)
    return application


def make_lease(services: Services) -> Lease | None:
    """The leader lease shared by the replicas of one Redis; None for SQLite (one replica)."""
    store = services.settings.store
    if store.backend != "redis":
        return None
    return Lease(
        services.store, "leader", replica_id(), store.leader_lease, metrics=services.metrics
    )


def leader_lease(application: AnyApplication) -> Lease | None:
    lease = application.bot_data.get(_LEASE)
    return lease if isinstance(lease, Lease) else None


def services_of(application: AnyApplication) -> Services:
    services = application.bot_data[_SERVICES]
    assert isinstance(services, Services)
    return services


def start_outbox(application: AnyApplication, services: Services) -> OutboxWorker:
    """The worker that delivers the outbox (every replica runs one; they share the work)."""
    worker = OutboxWorker(services.outbox, application.bot, metrics=services.metrics)
    worker.start()
    return worker


def start_reaper(application: AnyApplication, services: Services) -> None:
    """Expire requests at their expiry; run or fail approved requests a crash left behind."""
    jobs = application.job_queue
    assert jobs is not None

    async def reap(context: object) -> None:
        await reaper.reap(services, services.notifier(), application.create_task)

    # Every replica may reap (each request is claimed before it is touched); a store outage
    # is logged once, not as a traceback every round.
    job = only_when_leading(None, reap, "requests reaper")
    jobs.run_repeating(job, interval=REAP_SECONDS, first=1.0, name="requests-reaper")


async def start_alerting(application: AnyApplication, services: Services) -> WebServer | None:
    """Alert engine, incidents, their periodic tick, the monitor's rounds, the web server."""
    settings = services.settings
    jobs = application.job_queue
    assert jobs is not None
    # Alerts and incident cards leave through the outbox, behind command replies; topics are
    # made directly (their thread id is needed at once), within the group's pace.
    topics = TelegramNotifier(application.bot, services.redactor).create_topic
    notifier = OutboxNotifier(services.outbox, services.redactor, Priority.alert, topics=topics)
    engine = AlertEngine(services.store, settings, notifier, metrics=services.metrics)
    services.bind(ALERT_ENGINE, engine)

    async def health(names: Sequence[str]) -> str:
        known = {n: settings.targets[n] for n in names if n in settings.targets}
        results = await check_all(known, services)
        return " · ".join(f"{r.state.icon} {r.target}" for r in results)

    incidents = Incidents(services.store, settings, notifier, health=health)
    services.bind(INCIDENTS, incidents)
    services.audit.listeners.append(timeline.audit_listener(incidents))
    ingest = recording_ingest(services.store, timeline.noting_ingest(incidents, engine.ingest))
    escalator = Escalator(services.store, settings, notifier, incidents, engine)

    async def tick(context: object) -> None:
        await engine.tick()
        await incidents.tick()
        await escalator.tick()

    lease = leader_lease(application)
    jobs.run_repeating(
        only_when_leading(lease, tick, "alerts tick"), interval=TICK_SECONDS, first=TICK_SECONDS,
        name="alerts-tick",
    )  # fmt: skip
    members = monitor_members(services, lease)
    recorder = start_objectives(jobs, services, ingest, engine, lease, members)
    await schedule_monitor(services, engine, ingest, lease, members, recorder)
    await _schedule_backups(jobs, services, ingest, lease)
    schedule_update_notices(jobs, services)
    if not settings.web.enabled:
        return None
    from opsbot.web.server import WebServer
    from opsbot.web.statuspage import StatusPage

    page = StatusPage(settings, services.store) if settings.status_page.enabled else None
    boards = []
    if settings.miniapp.enabled:
        from opsbot.miniapp.routes import Board

        boards.append(Board(services))
        services.on_close.append(boards[0].acting.close)
    # A webhook is answered once its alerts are stored; delivery and incident notes follow.
    # (The status history records only the monitor's events, which never come this way.)
    intake = Intake(engine, then=partial(timeline.note_alerts, incidents))
    services.on_close.append(intake.close)
    server = WebServer(settings, intake, services.metrics, status_page=page, routes=boards)
    if settings.telegram.mode == "webhook":
        serve_telegram_webhook(application, server, settings)
    port = await server.start()
    log.info("alert webhooks, /healthz and /metrics on %s:%d", settings.web.host, port)
    return server


async def _schedule_backups(
    jobs: Any, services: Services, ingest: backup_schedule.Ingest, lease: Lease | None
) -> None:
    """Scheduled backups and RPO checks, every TICK_SECONDS (if any are configured)."""
    scheduler = backup_schedule.BackupScheduler(services, ingest)
    if not scheduler.active:
        return

    async def tick(context: object) -> None:
        await scheduler.tick()

    # A tick waits for the backups it starts (up to their timeout); a few may overlap so that
    # RPOs are still watched meanwhile (slots are claimed, so none runs twice).
    interval = backup_schedule.TICK_SECONDS
    jobs.run_repeating(
        only_when_leading(lease, tick, "scheduled backups"),
        interval=interval,
        first=1.0,
        name="backups",
        job_kwargs={"max_instances": 3},
    )


def schedule_update_notices(jobs: Any, services: Services) -> None:
    """Update notices (when a target has ``updates:``): every replica ticks; each target's
    check slot is claimed in the store, so one replica asks the registry, once."""
    checker = UpdateChecker(services, services.notifier(Priority.alert))
    if not checker.active:
        return

    async def tick(context: object) -> None:
        await checker.tick()

    jobs.run_repeating(only_when_leading(None, tick, "update notices"), interval=UPDATES_TICK,
                       first=5.0, name="update-notices")  # fmt: skip


def monitor_members(services: Services, lease: Lease | None) -> Members | None:
    """The replicas sharing the monitor's targets (None: a lone replica runs them all)."""
    if lease is None:
        return None
    members = Members(services.store, "monitor", lease.owner, lease.ttl)
    members.start()
    services.on_close.append(members.stop)
    return members


def start_objectives(
    jobs: Any, services: Services, ingest: burn_alerts.Ingest, engine: AlertEngine,
    lease: Lease | None, members: Members | None = None,
) -> Recorder | None:
    """The objectives' recorder (None: objectives off), flushed every 5 minutes and at shutdown
    on every replica (each counts the rounds it runs); the burn-rate alerts' tick on every
    replica for its share of the targets (``members``), whose rounds feed its windows; the
    scheduled report's tick on every replica (each slot claimed once)."""
    if not services.settings.objectives.enabled:
        return None
    recorder = Recorder(services.store, services.settings, metrics=services.metrics)

    async def flush(context: object) -> None:
        await recorder.flush()

    jobs.run_repeating(
        only_when_leading(None, flush, "objectives"), interval=FLUSH_SECONDS,
        first=FLUSH_SECONDS, name="objectives-flush",
    )  # fmt: skip
    services.on_close.append(partial(recorder.flush, final=True))

    async def still_firing() -> set[str]:
        listed = await engine.firing_where(source=burn_alerts.SOURCE)
        return {a.fingerprint for a in listed}

    owns = members.owns if members is not None else None
    alerts = burn_alerts.BurnAlerts(services.store, services.settings, ingest, still_firing,
                                    recorder, owns)  # fmt: skip
    if alerts.active:

        async def tick(context: object) -> None:
            await alerts.tick()

        every = burn_alerts.TICK_SECONDS
        # with members every replica ticks for its share; a lone one with or without a lease
        alone = lease if members is None else None
        jobs.run_repeating(only_when_leading(alone, tick, "burn-rate alerts"), interval=every,
                           first=every, name="burn-rate-alerts")  # fmt: skip
    reports = report_schedule.ReportScheduler(services, services.notifier(Priority.alert))
    if reports.active:

        async def send(context: object) -> None:
            await reports.tick()

        # every replica ticks: the slot is claimed in the store, so one sends it, once
        every = report_schedule.TICK_SECONDS
        jobs.run_repeating(only_when_leading(None, send, "objectives report"), interval=every,
                           first=1.0, name="objectives-report")  # fmt: skip
    return recorder


async def schedule_monitor(
    services: Services,
    engine: AlertEngine,
    ingest: monitor.Ingest,
    lease: Lease | None,
    members: Members | None = None,
    recorder: Recorder | None = None,
) -> None:
    """The monitor's rounds (one scheduler, spread over each interval), shared by the replicas.

    With the redis store the live replicas split the targets (``state.members``: rendezvous
    hashing over their liveness documents), so each round runs once and a replica's death
    hands its share over within the lease's ttl (a target's burn-rate windows are kept by the
    replica whose rounds feed them, ``start_objectives``). Whenever this
    replica's set of live peers changes it starts a fresh ``Monitor`` seeded with what the
    engine still holds firing, so it resolves what the previous owner of a target raised.
    """
    settings = services.settings
    # The board's sparklines: each round's latency (only when the board is enabled).
    observe = LatencyRecorder(services.store).observe if settings.miniapp.enabled else None

    async def fresh() -> monitor.Monitor:
        still_firing = {
            a.fingerprint: a.severity
            for a in await engine.firing_where(source=monitor.SOURCE)
        }
        hook = recorder.round_done if recorder is not None else None
        return monitor.Monitor(
            settings, services, ingest, firing=still_firing, observe=observe, on_round=hook
        )

    watcher = await fresh()
    seen: list[tuple[tuple[str, ...], int]] = [((), 0)]  # live peers, lease term

    async def current() -> monitor.Monitor | None:
        nonlocal watcher
        if members is None:
            return watcher
        now = (members.active(), lease.term if lease is not None else 0)
        if now != seen[0]:
            watcher = await fresh()  # the store may be down: then the next round asks again
            seen[0] = now
        return watcher

    rounds = MonitorScheduler(watcher, settings, services.metrics, current=current,
                              owns=None if members is None else members.owns)  # fmt: skip
    rounds.start()
    services.on_close.append(rounds.stop)


def serve_telegram_webhook(
    application: AnyApplication, server: WebServer, settings: Settings
) -> None:
    """Webhook mode: the URL's path on opsbot's web server feeds the application's queue."""
    webhook = settings.telegram.webhook
    assert webhook.url is not None and webhook.secret_token is not None

    async def accept(data: dict[str, Any]) -> bool:
        update = Update.de_json(data, application.bot)
        if not application.running:
            return False
        # No await between the check and the put: stop() processes what was queued before it.
        application.update_queue.put_nowait(update)
        return True

    server.serve_telegram(webhook.path, webhook.secret_token.get_secret_value(), accept)


def start_board_menu(application: AnyApplication, settings: Settings) -> None:
    """The Board as each person's private-chat menu button, retried until they opened one."""
    if not settings.miniapp.enabled or settings.miniapp.url is None:
        return

    async def set_menu(chat_id: int, label: str, url: str) -> object:
        button = MenuButtonWebApp(label, WebAppInfo(url))
        return await application.bot.set_chat_menu_button(chat_id=chat_id, menu_button=button)

    menus = MenuButtons(settings, set_menu)

    async def round_(context: object) -> None:
        await menus.round()

    jobs = application.job_queue
    assert jobs is not None
    jobs.run_repeating(round_, interval=MENU_RETRY, first=0.5, name="board-menu")


def commands_for(settings: Settings, role: Role) -> list[BotCommand]:
    """The menu /help lists for the role, each described by what it does."""
    return [BotCommand(name, text) for name, text in manual.menu(settings, role, VERBS)]


async def publish_commands(application: AnyApplication, settings: Settings) -> None:
    """setMyCommands per role: each person sees only what they may use, where they may."""
    bot = application.bot
    try:
        await bot.delete_my_commands(scope=BotCommandScopeDefault())
    except TelegramError as exc:
        log.warning("deleteMyCommands failed (%s); continuing", exc)
    for person in settings.people:
        commands = commands_for(settings, person.role)
        scopes: list[tuple[str, BotCommandScope]] = [
            (f"in chat {chat_id}", BotCommandScopeChatMember(chat_id=chat_id, user_id=person.id))
            for chat_id in sorted(settings.telegram.chat_ids)
        ]
        if settings.telegram.allow_private_chats:
            scopes.append(("in their private chat", BotCommandScopeChat(chat_id=person.id)))
        for where, scope in scopes:
            try:
                await bot.set_my_commands(commands, scope=scope)
            except TelegramError as exc:
                # Typically "chat not found": they never opened a chat with the bot, or it is
                # not in that group yet. Their menu stays generic; opsbot runs on.
                log.warning(
                    "setMyCommands for %s (%d) %s failed: %s; continuing",
                    person.name, person.id, where, exc,
                )  # fmt: skip
