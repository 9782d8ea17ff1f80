"""Scheduled backups and recovery-point objectives, reported as alerts.

A backup with ``schedule:`` (five-field cron, UTC, parsed by APScheduler's ``CronTrigger``)
runs the same verified backup as ``/backup``
(:func:`opsbot.actions.backups.methods.run_backup`) at each slot.
The leader lease's holder ticks; each slot is claimed in the store first (``store.create`` of
``backup-runs/<target>/<n>/<slot>``), so one replica runs it, once, whichever holds the lease
when it comes. At each look a scheduler takes the slots come since its last look, and none
older than ``CATCH_UP`` (so a restart, or a lease taken over, at the wrong moment still runs
the slot it missed): the newest runs, and the older ones it passes over are claimed first as
skipped, so a replica that takes over later never runs one of them beside it (that was two
backups in one minute). Slots older than ``CATCH_UP`` are skipped: the RPO alert says what
that costs.

A failed scheduled backup is a critical alert carrying the tool's error (redacted), resolved
by the next scheduled backup of the same thing that succeeds. A target's ``rpo:`` applies to
each of its backups: when the newest verified backup of one (scheduled or by hand) is older
than the RPO, or there is none, an alert fires; it resolves when a new one lands. "None yet" is
first said one schedule interval after the backup was first seen (``backup-first-seen``, shared
by replicas and kept across restarts), and never before its first slot; one RPO after, for a
backup with no schedule: a fresh install does not page before its first backup could run.

Alerts go through the alert engine's ``ingest`` (source ``backup``), like the monitor's. What
is firing is read from the alert records at every look, not remembered: a replica that takes
the lease over resolves what the previous holder raised. The clock is injectable (``now``) so
tests can move through schedules and RPOs.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from opsbot.actions.backups import methods as backup_methods
from opsbot.actions.backups import records as backups
from opsbot.actions.backups.action import backup_executor
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.records import ALERTS, Alert
from opsbot.alerting.silences import describe as describe_duration
from opsbot.config import Backup, Target, cron_trigger
from opsbot.services import Services

log = logging.getLogger(__name__)

SOURCE = "backup"
CLAIMS = "backup-runs"
#: How long a slot's claim is kept (long after any replica could still be looking at it).
CLAIM_TTL = 7 * 86400.0
#: Seconds between two looks at the schedules and RPOs (the application's job interval).
TICK_SECONDS = 30.0
#: A slot this recent, when a scheduler first looks, still runs (it was missed by a restart).
CATCH_UP = 300.0
#: When each configured backup was first seen, by the fingerprint of its RPO alert.
FIRST_SEEN = "backup-first-seen"

Ingest = Callable[[list[AlertEvent]], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Job:
    """One configured backup of one target; ``index`` is its place in ``backups:``."""

    target: str
    index: int
    spec: Backup

    @property
    def key(self) -> str:
        return f"{self.target}/{self.index}"

    @property
    def what(self) -> str:
        return f"{self.spec.type} backup of {backups.source_of(self.spec)}"


def jobs(targets: dict[str, Target]) -> list[Job]:
    """Every configured backup, scheduled or not."""
    return [
        Job(name, index, spec)
        for name, target in targets.items()
        for index, spec in enumerate(target.backups)
    ]


def next_slot(spec: Backup, after: float) -> float | None:
    """The first scheduled time at or after ``after`` (epoch seconds), None if unscheduled."""
    if spec.schedule is None:
        return None
    fire = cron_trigger(spec.schedule).get_next_fire_time(None, _utc(after))
    return fire.timestamp() if fire is not None else None


def slots_between(spec: Backup, earliest: float, latest: float) -> list[float]:
    """The scheduled times from ``earliest`` to ``latest`` (both included), oldest first."""
    found: list[float] = []
    slot = next_slot(spec, earliest)
    while slot is not None and slot <= latest:
        found.append(slot)
        slot = next_slot(spec, slot + 1)
    return found


def failed_fingerprint(job: Job) -> str:
    return AlertEvent.make_fingerprint(SOURCE, job.target, "failed", job.what)


def rpo_fingerprint(job: Job) -> str:
    return AlertEvent.make_fingerprint(SOURCE, job.target, "rpo", job.what)


def first_judged(spec: Backup, rpo: float, since: float) -> float:
    """When a backup first seen at ``since`` may be called missing: one schedule interval
    later (never before its first slot), or one RPO later when it is not scheduled."""
    first = next_slot(spec, since)
    if first is None:
        return since + rpo
    second = next_slot(spec, first + 1)
    interval = second - first if second is not None else rpo
    return max(since + interval, first)


def newest(records: Iterable[backups.BackupRecord], spec: Backup) -> backups.BackupRecord | None:
    """The newest kept backup of what ``spec`` dumps (records come newest first)."""
    source = backups.source_of(spec)
    return next((r for r in records if r.kind == spec.type and r.source == source), None)


class BackupScheduler:
    """Runs due scheduled backups (claimed once across replicas) and watches RPOs."""

    def __init__(
        self,
        services: Services,
        ingest: Ingest,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._services = services
        self._ingest = ingest
        self._now = now
        self._looked: dict[str, float] = {}  # job key → when this replica last took its slots
        self._since: dict[str, float] = {}  # RPO fingerprint → when first seen

    @property
    def active(self) -> bool:
        """Whether any backup is scheduled or any target with backups has an RPO."""
        targets = self._services.settings.targets
        return any(
            job.spec.schedule is not None or targets[job.target].rpo is not None
            for job in jobs(targets)
        )

    async def tick(self) -> list[AlertEvent]:
        """Run what is due, then check every RPO; ingest (and return) the alert events."""
        events: list[AlertEvent] = []
        configured = jobs(self._services.settings.targets)
        firing = await self._firing_now(configured)  # first: a store down takes no slot
        due = [(job, *self._due(job)) for job in configured]
        for job, slot, passed in due:
            if slot is not None:
                events += await self._run(job, slot, passed, firing)
        events += await self._check_rpos(firing)
        redact = self._services.redactor.redact
        events = [dataclasses.replace(e, summary=redact(e.summary)) for e in events]
        if events:
            await self._ingest(events)
        return events

    async def _firing_now(self, configured: list[Job]) -> set[str]:
        """This source's alerts firing now, as the alert records hold them (whoever raised
        them: the previous lease holder's are this one's to resolve)."""
        fingerprints = [
            fingerprint(job) for job in configured
            for fingerprint in (failed_fingerprint, rpo_fingerprint)
        ]  # fmt: skip
        stored = await self._services.store.get_many(ALERTS, fingerprints)
        return {fp for fp, doc in stored.items() if Alert.from_doc(doc.value).firing}

    # -- schedules ---------------------------------------------------------------------------

    def _due(self, job: Job) -> tuple[float | None, list[float]]:
        """The newest slot come since this replica's last look (at most ``CATCH_UP`` ago),
        to run, and the older ones it passes over."""
        if job.spec.schedule is None:
            return None, []
        now = self._now()
        earliest = now - CATCH_UP
        looked = self._looked.get(job.key)
        if looked is not None and looked >= earliest:
            earliest = math.floor(looked) + 1  # slots are whole seconds: those after it
        self._looked[job.key] = now
        come = slots_between(job.spec, earliest, now)
        return (come[-1], come[:-1]) if come else (None, [])

    async def _claim(self, job: Job, slot: float, *, skipped: bool = False) -> bool:
        """Whether this replica is the one that took ``slot`` (to run it, or to skip it)."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(slot))
        claim: dict[str, Any] = {"slot": slot, "claimed_at": self._now(), "skipped": skipped}
        return await self._services.store.create(
            CLAIMS, f"{job.key}/{stamp}", claim, ttl=CLAIM_TTL
        )

    async def _run(
        self, job: Job, slot: float, passed: list[float], firing: set[str]
    ) -> list[AlertEvent]:
        # The slots passed over are claimed before the one that runs, so that whoever looks
        # next (this replica or the next lease holder) finds every one of them taken.
        for older in passed:
            if await self._claim(job, older, skipped=True):
                what = self._services.redactor.redact(job.what)
                log.info("%s: scheduled %s of %s skipped: a newer slot is due", job.target,
                         what, time.strftime("%H:%M", time.gmtime(older)))  # fmt: skip
        if not await self._claim(job, slot):
            return []  # another replica (or the previous lease holder) has this slot
        store = self._services.store
        services = self._services
        target = services.settings.targets[job.target]
        started = time.monotonic()
        try:
            executor = backup_executor(services, job.target, target)
            record = await backup_methods.run_backup(
                job.target, job.spec, executor, store, services.backups_dir, now=self._now
            )
        except backups.BackupBusy as exc:
            log.info("%s: scheduled backup skipped: %s", job.target, exc)
            return []
        except Exception as exc:  # any failure of an unattended backup must reach a person
            error = services.redactor.redact(str(exc) or type(exc).__name__)
            what = services.redactor.redact(job.what)
            log.warning("%s: scheduled %s failed: %s", job.target, what, error)
            await self._audit(job, ok=False, summary=error, started=started)
            schedule = str(job.spec.schedule)
            return [
                AlertEvent(
                    source=SOURCE,
                    fingerprint=failed_fingerprint(job),
                    status="firing",
                    severity=Severity.critical,
                    summary=f"{job.target}: scheduled {job.what} failed: {error}",
                    target=job.target,
                    starts_at=slot,
                    labels={"check": f"{job.spec.type} backup", "schedule": schedule},
                )
            ]
        summary = services.redactor.redact(backups.describe(record))
        await self._audit(job, ok=True, summary=summary, started=started)
        fingerprint = failed_fingerprint(job)
        if fingerprint not in firing:
            return []
        return [
            AlertEvent(
                source=SOURCE,
                fingerprint=fingerprint,
                status="resolved",
                severity=Severity.critical,
                summary=f"{job.target}: scheduled {job.what} works again: {summary}",
                target=job.target,
                labels={"check": f"{job.spec.type} backup"},
            )
        ]

    async def _audit(self, job: Job, *, ok: bool, summary: str, started: float) -> None:
        await self._services.audit.record(
            "executed", target=job.target, action="backup", who="schedule",
            steps=[f"{job.spec.type}: {backups.source_of(job.spec)}"], ok=ok, summary=summary,
            duration=round(time.monotonic() - started, 3),
        )  # fmt: skip

    # -- RPOs --------------------------------------------------------------------------------

    async def _check_rpos(self, firing: set[str]) -> list[AlertEvent]:
        events = []
        targets = self._services.settings.targets
        kept: dict[str, list[backups.BackupRecord]] = {}
        for job in jobs(targets):
            rpo = targets[job.target].rpo
            if rpo is None:
                continue
            if job.target not in kept:
                kept[job.target] = await backups.list_backups(job.target, self._services.store)
            since = await self._first_seen(job)
            record = newest(kept[job.target], job.spec)
            event = self._rpo_event(job, rpo, record, since, rpo_fingerprint(job) in firing)
            if event is not None:
                events.append(event)
        return events

    async def _first_seen(self, job: Job) -> float:
        """When this backup was first seen by any replica (the first to look writes it)."""
        key = rpo_fingerprint(job)
        if key in self._since:
            return self._since[key]
        store = self._services.store
        stored = await store.get(FIRST_SEEN, key)
        if stored is None:
            now = self._now()
            if await store.create(FIRST_SEEN, key, {"at": now, "target": job.target}):
                self._since[key] = now
                return now
            stored = await store.get(FIRST_SEEN, key)
        since = float(stored.value["at"]) if stored is not None else self._now()
        self._since[key] = since
        return since

    def _rpo_event(
        self,
        job: Job,
        rpo: float,
        record: backups.BackupRecord | None,
        since: float,
        firing: bool,
    ) -> AlertEvent | None:
        now = self._now()
        fingerprint = rpo_fingerprint(job)
        limit = describe_duration(rpo)
        breached = record is None or now - record.created > rpo
        if record is None and not firing and now < first_judged(job.spec, rpo, since):
            return None  # day one: its first backup has not had its chance yet
        if breached == firing:
            return None  # no change
        if record is None:
            summary = f"{job.target}: no verified {job.what} yet (RPO {limit})"
        elif breached:
            summary = (
                f"{job.target}: the newest verified {job.what} is "
                f"{describe_duration(now - record.created)} old, over the RPO of {limit} "
                f"({record.name})"
            )
        else:
            summary = (
                f"{job.target}: a verified {job.what} landed: {record.name}, "
                f"{describe_duration(now - record.created)} old (RPO {limit})"
            )
        return AlertEvent(
            source=SOURCE,
            fingerprint=fingerprint,
            status="firing" if breached else "resolved",
            severity=Severity.critical,
            summary=summary,
            target=job.target,
            starts_at=(record.created + rpo) if record is not None else now,
            labels={"check": "rpo", "rpo": limit},
        )


def _utc(epoch: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC)
