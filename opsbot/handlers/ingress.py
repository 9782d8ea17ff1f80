"""The first handler every update meets (group -2): each update_id is handled once.

Telegram redelivers an update it is not sure was received (a webhook answered late, a poller
killed before confirming its offset), and behind a load balancer one update can reach two
replicas. A claim in the shared store, made before any handler runs, lets exactly one of them
through. The claim is a lease (in Redis a plain key with an expiry, no index to grow) that
outlives Telegram's own 24 h retention of undelivered updates.

The trade-off, stated: an update whose replica dies after the claim and before its handler
finished is not handled again (at most once). Approvals have their own durable state; a lost
command is typed again. When the store cannot be reached at all, the update goes through
unchecked (one warning, no traceback): a command that may in rare cases run twice beats one
silently dropped, and approvals keep their own compare-and-set.
"""

from __future__ import annotations

import logging
import secrets

from telegram import Update
from telegram.ext import ApplicationHandlerStop, ContextTypes

from opsbot.services import Services
from opsbot.state.store import STORE_DOWN

log = logging.getLogger(__name__)

CLAIM_TTL = 26 * 3600.0  # Telegram keeps undelivered updates for 24 h


class UpdateDedup:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        # A fresh owner per claim: nobody "renews" a claim, a second one always fails.
        owner = secrets.token_hex(8)
        try:
            holder = await self.services.store.acquire(
                f"update:{update.update_id}", owner, CLAIM_TTL
            )
        except STORE_DOWN as exc:
            log.warning(
                "update %d: the store is unreachable (%s): handled without the duplicate check",
                update.update_id,
                type(exc).__name__,
            )
            return
        if holder is not None:
            log.info("update %d already handled: dropped", update.update_id)
            self.services.metrics.updates_duplicate_total.inc()
            raise ApplicationHandlerStop
