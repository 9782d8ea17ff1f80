"""The error handler: log the failure with an id, tell the admins the id, never a traceback."""

from __future__ import annotations

import logging
import secrets
import time

from telegram.error import Conflict
from telegram.ext import ContextTypes

from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.alerting.monitor import on_conflict
from opsbot.config import Role
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.state.store import STORE_UNREACHABLE

log = logging.getLogger(__name__)


class ErrorReporter:
    def __init__(self, services: Services, min_interval: float = 10.0) -> None:
        self.services = services
        self.min_interval = min_interval
        self._last_notice = -1e9

    async def __call__(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        if isinstance(context.error, Conflict):
            # Another process polls with opsbot's own token: an alert, not a crash report.
            log.warning("409 Conflict: another poller is using this bot's token")
            engine = ALERT_ENGINE.bound(self.services)
            if engine is not None:
                await engine.ingest([on_conflict(context.bot.username)])
            return
        error_id = secrets.token_hex(4)
        if isinstance(context.error, STORE_UNREACHABLE):  # not OSError: bugs raise it too
            # An outage, not a bug: one line; the store's own watchers log when it is back.
            log.error(
                "error %s while handling an update: the store is unreachable (%s: %s)",
                error_id,
                type(context.error).__name__,
                context.error,
            )
        else:
            log.error("error %s while handling an update", error_id, exc_info=context.error)
        try:  # the error handler must never raise (the store may be what failed)
            await self.services.audit.record(
                "error", error_id=error_id, error=type(context.error).__name__
            )
        except Exception as exc:
            log.warning("error %s not audited: %s", error_id, exc)
        chat = self.services.settings.telegram.ops_chat_id
        admins = [p for p in self.services.settings.people if p.role is Role.admin]
        now = time.monotonic()
        if chat is None or not admins or now - self._last_notice < self.min_interval:
            return
        self._last_notice = now
        text = f"⚠️ Something failed (error id {error_id}). Details are in opsbot's log."
        try:
            await self.services.notifier().send(chat, Reply(text))
        except Exception as exc:  # the error handler must never raise
            log.warning("could not report error %s to the ops chat: %s", error_id, exc)
