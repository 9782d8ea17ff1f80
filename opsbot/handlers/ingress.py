"""The first handler every update meets (group -2): each update_id is handled once.

Telegram redelivers an update it is not sure was received (a webhook answered late, a poller
killed before confirming its offset), and behind a load balancer one update can reach two
replicas. A claim in the shared store, made before any handler runs, lets exactly one of them
through. The claim is a lease (in Redis a plain key with an expiry, no index to grow) that
outlives Telegram's own 24 h retention of undelivered updates.

A read-only command (``Verb.reads_only``: /help, /audit, /backups) does not wait for its
claim: the claim is made while it runs, and its reply waits for it instead (it shows no
progress), so the store's round trip overlaps the command's own work. A copy that loses
the claim answers nothing and leaves no audit entry.

The trade-off, stated: an update whose replica dies after the claim and before its handler
finished is not handled again (at most once). Approvals have their own durable state; a lost
command is typed again. When the store cannot be reached at all, the update goes through
unchecked (one warning, no traceback): a command that may in rare cases run twice beats one
silently dropped, and approvals keep their own compare-and-set.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from opsbot.services import Services
from opsbot.state.store import STORE_DOWN
from opsbot.verbs.registry import VERBS, command_verb

log = logging.getLogger(__name__)

CLAIM_TTL = 26 * 3600.0  # Telegram keeps undelivered updates for 24 h
FORGET_AFTER = 60.0  # a read-only command's claim is kept this long for its handler to ask


class UpdateDedup:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._early: dict[int, asyncio.Task[bool]] = {}  # read-only commands' claims

    async def __call__(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if _reads_only(update):
            loop = asyncio.get_running_loop()
            update_id = update.update_id
            task = loop.create_task(self._claim(update_id))
            self._early[update_id] = task
            # Forgotten even when no handler asks (the gate refused the update).
            task.add_done_callback(
                lambda _: loop.call_later(FORGET_AFTER, self._early.pop, update_id, None)
            )
            return
        if not await self._claim(update.update_id):
            raise ApplicationHandlerStop

    def claim_of(self, update: Update) -> asyncio.Task[bool] | None:
        """A read-only command's claim, still being made: True when this copy holds it (None:
        the update was claimed before any handler ran)."""
        return self._early.pop(update.update_id, None)

    async def _claim(self, update_id: int) -> bool:
        """Whether this replica is the first to handle ``update_id``."""
        # A fresh owner per claim: nobody "renews" a claim, a second one always fails.
        owner = secrets.token_hex(8)
        try:
            holder = await self.services.store.acquire(f"update:{update_id}", owner, CLAIM_TTL)
        except STORE_DOWN as exc:
            log.warning(
                "update %d: the store is unreachable (%s): handled without the duplicate check",
                update_id,
                type(exc).__name__,
            )
            return True
        if holder is not None:
            log.info("update %d already handled: dropped", update_id)
            self.services.metrics.updates_duplicate_total.inc()
            return False
        return True


def _reads_only(update: Update) -> bool:
    """A new message whose command is a read-only verb (as ``on_command`` reads it)."""
    message = update.message
    text = message.text if message is not None else None
    if not text or not text.startswith("/"):
        return False
    spec = VERBS.get(command_verb(text))
    return spec is not None and spec.reads_only
