"""``opsbot run``: start-up, the way updates come in (polling or webhook), and shutdown.

Start-up never ends in a traceback: a rejected token or a bad setting is one line naming the
fix (:class:`ConfigError`); an unreachable Bot API is retried with backoff, logged once when
it goes away and once when it answers again.

Updates come in one of two ways:

* ``telegram.mode: polling`` (default). With the SQLite store (one replica) opsbot polls. With
  the redis store every replica competes for the leader lease (:mod:`opsbot.state.leases`); only
  the holder polls, the others stand by warm (services built, web server up) and take over when it
  expires. The holder stops polling before its lease can expire, so no two replicas poll at
  once and Telegram never answers 409 Conflict.
* ``telegram.mode: webhook``: Telegram POSTs every update to ``telegram.webhook.url``; each
  replica serves that path on its own web server (:mod:`opsbot.web.server`), a load balancer
  spreads the requests, and the update_id claim (:mod:`opsbot.handlers.ingress`) runs each once.
  ``setWebhook`` is called only when Telegram's ``getWebhookInfo`` or the secret differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import logging
import os
import signal
import time
from collections.abc import Awaitable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from telegram import Update
from telegram.error import BadRequest, InvalidToken, NetworkError, RetryAfter, TelegramError

from opsbot.app import AnyApplication, build_application, leader_lease, services_of
from opsbot.config import Settings
from opsbot.errors import ConfigError
from opsbot.state.store import Store

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
TOKEN_REJECTED = (
    "the Bot API rejected the token: check OPSBOT_TELEGRAM__TOKEN / telegram.token_file"  # noqa: S105
)
ALLOWED_UPDATES = list(Update.ALL_TYPES)
#: Seconds between a batch of updates and the next long poll. The handlers just started (a
#: dedup claim, a store write, a subprocess) otherwise wait behind the poll's own ~1 ms of work
#: on the event loop: an idle command's reply would pay for it. Many updates still come in one
#: batch, so a burst loses almost nothing.
POLL_PAUSE = 0.01


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then stop taking updates, finish, and close every pool."""
    application = build_application(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        if not await connect(application, settings, stop):
            return
        await start_services(application, settings)
        # What start-up made (modules, settings, handlers) lives as long as the process: out
        # of the collector's sight, the many collections a /health fan-out triggers stay short.
        gc.freeze()
        await application.start()
        try:
            if settings.telegram.mode == "webhook":
                if await set_webhook(application, settings, stop):
                    await stop.wait()
            else:
                await poll(application, settings, stop)
        finally:
            assert application.updater is not None
            if application.updater.running:
                await application.updater.stop()
            await application.stop()
    finally:
        await application.shutdown()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def connect(application: AnyApplication, settings: Settings, stop: asyncio.Event) -> bool:
    """getMe until it answers (False if told to stop first); a rejected token is fatal."""
    delay, down_since = 1.0, 0.0
    while True:
        try:
            await application.initialize()
        except InvalidToken:
            raise ConfigError(TOKEN_REJECTED) from None
        except (NetworkError, RetryAfter) as exc:  # TimedOut, 5xx, connection refused...
            if not down_since:
                down_since = time.monotonic()
                log.warning(
                    "the Bot API at %s is unreachable (%s): retrying with backoff until it "
                    "answers", settings.telegram.api_url, _reason(exc),
                )  # fmt: skip
            pause, delay = delay, min(delay * 2, MAX_BACKOFF)
            if await _stopped(stop, pause):
                return False
            continue
        if down_since:
            log.info("the Bot API answers again after %.0f s", time.monotonic() - down_since)
        return True


async def start_services(application: AnyApplication, settings: Settings) -> None:
    """post_init (commands menu, alerting, web server); what fails is one line with the fix."""
    assert application.post_init is not None
    try:
        await application.post_init(application)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise ConfigError(
            f"cannot reach Redis ({_reason(exc)}): check store.redis_url / store.sentinels "
            "and that Redis is running"
        ) from None
    except OSError as exc:
        web = settings.web
        raise ConfigError(
            f"cannot listen on {web.host}:{web.port} ({_os_error(exc)}): check web.host / web.port"
        ) from None


async def poll(application: AnyApplication, settings: Settings, stop: asyncio.Event) -> None:
    """Poll while this replica leads (always, without a lease); follow the lease's changes."""
    updater = application.updater
    assert updater is not None
    lease = leader_lease(application)
    errors = _PollErrors(application)
    while not stop.is_set():
        changed = lease.watch() if lease is not None else asyncio.Event()
        lead = lease is None or lease.held
        if lead and not updater.running:
            try:
                await updater.start_polling(
                    allowed_updates=ALLOWED_UPDATES,
                    timeout=settings.telegram.poll_timeout,
                    poll_interval=POLL_PAUSE,
                    error_callback=errors,
                )
                log.info("polling the Bot API for updates")
            except TelegramError as exc:
                log.warning("could not start polling (%s); retrying", _reason(exc))
                await _stopped(stop, 2.0)
                continue
        elif not lead and updater.running:
            await updater.stop()
            log.info("stopped polling: another replica leads")
        await _first(stop.wait(), changed.wait())


class _PollErrors:
    """Polling errors: a network outage is logged once per change; the rest are reported."""

    def __init__(self, application: AnyApplication) -> None:
        self.application = application
        self.last: str | None = None

    def __call__(self, exc: TelegramError) -> None:
        if isinstance(exc, NetworkError) and not isinstance(exc, BadRequest):
            reason = _reason(exc)
            if reason != self.last:
                log.warning("polling: the Bot API is unreachable (%s); retrying", reason)
            self.last = reason
            return
        self.last = None
        self.application.create_task(self.application.process_error(error=exc, update=None))


async def set_webhook(
    application: AnyApplication, settings: Settings, stop: asyncio.Event
) -> bool:
    """ensure_webhook until Telegram answers (False if told to stop first)."""
    delay, failing = 1.0, False
    url = settings.telegram.webhook.url
    while True:
        try:
            await ensure_webhook(application, settings, services_of(application).store)
            return True
        except BadRequest as exc:  # e.g. "bad webhook: Failed to resolve host"
            raise ConfigError(
                f"Telegram refused the webhook {url} ({exc.message}): check telegram.webhook.url"
            ) from None
        except (NetworkError, RetryAfter) as exc:
            if not failing:
                log.warning("setWebhook failed (%s): retrying with backoff", _reason(exc))
            failing = True
            pause, delay = delay, min(delay * 2, MAX_BACKOFF)
            if await _stopped(stop, pause):
                return False


async def ensure_webhook(application: AnyApplication, settings: Settings, store: Store) -> None:
    """setWebhook only if Telegram's URL/allowed updates or the secret we set differ."""
    webhook = settings.telegram.webhook
    assert webhook.url is not None and webhook.secret_token is not None
    secret = webhook.secret_token.get_secret_value()
    fingerprint = hashlib.sha256(f"{webhook.url}\n{secret}".encode()).hexdigest()
    info = await application.bot.get_webhook_info()
    recorded = await store.get("telegram", "webhook")
    same = (
        info.url == webhook.url
        and set(info.allowed_updates or ()) == set(ALLOWED_UPDATES)
        and recorded is not None
        and recorded.value.get("fingerprint") == fingerprint
    )
    if same:
        log.info("webhook already set to %s", webhook.url)
        return
    await application.bot.set_webhook(
        webhook.url,
        secret_token=secret,
        allowed_updates=ALLOWED_UPDATES,
        max_connections=webhook.max_connections,
    )
    await store.put("telegram", "webhook", {"fingerprint": fingerprint, "url": webhook.url})
    log.info("webhook set to %s", webhook.url)


def _os_error(exc: OSError) -> str:
    """``address already in use``: the OS's words without asyncio's preamble."""
    return os.strerror(exc.errno).lower() if exc.errno else str(exc)


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0][:160] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _stopped(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep, waking early on stop; True if stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    return stop.is_set()


async def _first(*waits: Awaitable[object]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def run(settings: Settings) -> None:
    fewer_malloc_arenas()
    asyncio.run(serve(settings))


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def fewer_malloc_arenas(arenas: int = 2) -> None:
    """Two malloc arenas, as ``MALLOC_ARENA_MAX=2`` would set, unless the environment says.

    glibc gives threads that allocate arenas of their own (up to eight per core); the SQLite
    thread, /metrics rendering and the Docker SDK's calls each kept one, and the memory freed
    there stayed apart: ~20 MB of RSS at 10,000 monitored targets. Elsewhere than glibc this
    does nothing."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_ARENA_MAX, arenas)
    except (OSError, AttributeError):
        return
