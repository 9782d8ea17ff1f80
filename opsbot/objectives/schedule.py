"""The report on a schedule (``objectives.report``): daily or weekly, once across replicas.

Every replica ticks; the slot (the latest scheduled moment, in the configured timezone) is
claimed in the store first (``store.create`` of ``slo-report-runs/<slot>``), as scheduled
backups claim theirs, so one replica sends it, once. A slot missed by at most ``CATCH_UP``
(opsbot was restarting) is still sent; an older one is not.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from opsbot.config import ReportSchedule
from opsbot.config.objectives import WEEKDAYS
from opsbot.notify import Notifier
from opsbot.objectives import clock, report

if TYPE_CHECKING:
    from opsbot.services import Services

log = logging.getLogger(__name__)

CLAIMS = "slo-report-runs"
TICK_SECONDS = 60.0
CATCH_UP = 3600.0
CLAIM_TTL = 8 * 86400.0


def last_slot(spec: ReportSchedule, now: float) -> float | None:
    """The latest scheduled moment at or before ``now`` (None: the schedule is off)."""
    if spec.every == "off":
        return None
    zone = ZoneInfo(spec.timezone)
    local = datetime.fromtimestamp(now, zone)
    hour, minute = (int(part) for part in spec.at.split(":"))
    day = local.date()
    for _ in range(8):
        moment = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
        weekday_fits = spec.every == "daily" or WEEKDAYS[day.weekday()] == spec.day
        if weekday_fits and moment.timestamp() <= now:
            return moment.timestamp()
        day -= timedelta(days=1)
    return None


class ReportScheduler:
    """``tick()``: send the report if its slot has come and no replica has claimed it."""

    def __init__(self, services: Services, notifier: Notifier) -> None:
        self.services = services
        self.notifier = notifier
        settings = services.settings
        self.spec = settings.objectives.report
        self.chat_id = self.spec.chat_id or settings.telegram.ops_chat_id

    @property
    def active(self) -> bool:
        return (
            self.services.settings.objectives.enabled
            and self.spec.every != "off"
            and self.chat_id is not None
        )

    async def tick(self) -> bool:
        """True when this replica sent the report now."""
        now = clock.now()
        slot = last_slot(self.spec, now)
        if slot is None or now - slot > CATCH_UP or self.chat_id is None:
            return False
        stamp = datetime.fromtimestamp(slot, ZoneInfo("UTC")).strftime("%Y%m%dT%H%MZ")
        claim = {"slot": slot, "claimed_at": now}
        if not await self.services.store.create(CLAIMS, stamp, claim, ttl=CLAIM_TTL):
            return False  # another replica has it
        reply = await report.build(self.services, "7d")
        await self.notifier.send(self.chat_id, reply)
        log.info("objectives report for %s sent to %d", stamp, self.chat_id)
        return True
