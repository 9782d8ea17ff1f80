"""A leader handover leaves the scheduled backups no loose ends: two replicas (two ``Services``)
on the lab's real Redis, each with its alert engine and its leader lease; the lease moves as
it does when the holder stops (SIGTERM: ``Lease.stop`` gives it back). Backups are real
sqlite3 ``.backup`` runs over the lab sshd; the clock is injected to walk through slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opsbot.actions.backups import schedule as backup_schedule
from opsbot.actions.backups.records import list_backups
from opsbot.actions.backups.schedule import BackupScheduler
from opsbot.alerting.engine import AlertEngine
from opsbot.config import Settings
from opsbot.services import Services
from opsbot.state.leases import Lease, only_when_leading
from opsbot.state.outbox import Priority
from tests.actions.test_backup_schedule import make_sqlite
from tests.factories import Clock, base_config, fake_fixture, ssh_endpoint, write_config
from tests.fakebotapi import FakeBotAPI
from tests.lab.redis import RedisServer
from tests.lab.sshd import SSHServer

HOUR = 3600


fake = fake_fixture(scope="module", group_per_minute=None)


@dataclass
class Replica:
    services: Services
    engine: AlertEngine
    lease: Lease
    scheduler: BackupScheduler

    async def tick(self) -> None:
        """The application's backups job: it runs on the lease holder only."""
        await only_when_leading(self.lease, lambda _: self.scheduler.tick())(None)


async def held(lease: Lease) -> None:
    """Until ``lease`` is held (woken by its change events)."""
    async with asyncio.timeout(10):
        while True:
            changed = lease.watch()
            if lease.held:
                return
            await changed.wait()


@contextlib.asynccontextmanager
async def two_replicas(settings: Settings, clock: Clock) -> AsyncIterator[list[Replica]]:
    """Two replicas started side by side (their schedulers made at start-up, as the
    application makes them); the first holds the leader lease."""
    replicas = []
    for n in range(2):
        services = Services.build(settings)
        engine = AlertEngine(services.store, settings, services.notifier(Priority.alert),
                             clock=clock)  # fmt: skip
        lease = Lease(services.store, "leader", f"replica-{n}", ttl=4.0)
        scheduler = BackupScheduler(services, engine.ingest, now=clock)
        replicas.append(Replica(services, engine, lease, scheduler))
    try:
        replicas[0].lease.start()
        await held(replicas[0].lease)
        replicas[1].lease.start()
        yield replicas
    finally:
        for replica in replicas:
            await replica.lease.stop()
            await replica.services.close()


async def hand_over(old: Replica, new: Replica) -> None:
    """The holder stops (as on SIGTERM) and gives the lease back; the standby takes it."""
    await old.lease.stop()
    await held(new.lease)
    assert not old.lease.held


def redis_config(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer, sshd_server: SSHServer,
    backup: dict[str, Any], **target: Any,
) -> Settings:  # fmt: skip
    config = base_config(fake, tmp_path / "data")
    config["store"] = {"backend": "redis", "redis_url": redis_server.url,
                       "prefix": f"handover-{tmp_path.name[-12:]}"}  # fmt: skip
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "db": {"kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["true"]},
               "backups": [backup], **target},
    }  # fmt: skip
    return write_config(tmp_path / "opsbot.yaml", config)


async def test_the_new_lease_holder_resolves_the_backup_alerts_the_old_one_raised(
    fake: FakeBotAPI, tmp_path: Path, sshd_server: SSHServer, redis_server: RedisServer
) -> None:
    work = sshd_server.workdir / f"handover-{tmp_path.name[-12:]}"
    db = make_sqlite(work)
    backup = {"type": "sqlite", "path": str(db), "remote_dir": str(work / "bk"),
              "schedule": "0 * * * *"}  # fmt: skip
    settings = redis_config(fake, tmp_path, redis_server, sshd_server, backup, rpo="90m")
    clock = Clock()
    hour = (time.time() // HOUR + 1) * HOUR
    clock.offset = hour - 60 - time.time()
    async with two_replicas(settings, clock) as (old, new):
        await old.tick()  # first seen; nothing is judged yet

        # The database is gone: the hourly backup fails, twice; by then there has been no
        # verified backup for one schedule interval, so the RPO alert fires as well.
        away = db.rename(db.with_suffix(".away"))
        for slot in (hour, hour + HOUR):
            clock.offset = slot + 1 - time.time()
            await old.tick()
            await new.tick()  # standing by: runs nothing
        firing = await new.engine.list(firing_only=True)  # what /alerts shows, on either
        raised = {a.labels["check"]: a for a in firing if a.source == backup_schedule.SOURCE}
        assert set(raised) == {"sqlite backup", "rpo"}
        assert "scheduled sqlite backup" in raised["sqlite backup"].summary
        assert "no verified sqlite backup" in raised["rpo"].summary

        # The source recovers, and the holder is stopped right after: the standby leads.
        away.rename(db)
        await hand_over(old, new)
        clock.offset = hour + 2 * HOUR + 1 - time.time()
        await old.tick()
        await new.tick()
        assert [r.kind for r in await list_backups("db", new.services.store)] == ["sqlite"]
        assert [a.identity for a in await new.engine.list(firing_only=True)] == []
        after = {a.labels["check"]: a for a in await old.engine.list(firing_only=False)}
        for check in ("sqlite backup", "rpo"):
            assert after[check].id == raised[check].id and after[check].status == "resolved"
        assert "works again" in after["sqlite backup"].summary
        assert "landed" in after["rpo"].summary


async def test_a_handover_runs_each_slot_once_and_no_slot_the_old_holder_passed_over(
    fake: FakeBotAPI, tmp_path: Path, sshd_server: SSHServer, redis_server: RedisServer
) -> None:
    """How two backups came to run in one minute: the scheduler's first look ran the oldest
    slot of its catch-up window and jumped to the present, leaving the slots in between
    unclaimed; a replica that took the lease over a minute later started its own window there
    and ran one of them, beside the regular one. Now the newest slot runs and the ones passed
    over are claimed as skipped."""
    work = sshd_server.workdir / f"slots-{tmp_path.name[-12:]}"
    db = make_sqlite(work)
    backup = {"type": "sqlite", "path": str(db), "remote_dir": str(work / "bk"),
              "schedule": "* * * * *"}  # fmt: skip
    settings = redis_config(fake, tmp_path, redis_server, sshd_server, backup)
    clock = Clock()
    minute = (time.time() // 60 + 1) * 60
    async with two_replicas(settings, clock) as (old, new):
        # Started 10 s past a minute, the holder runs that minute's backup; then the next.
        for at in (minute + 10, minute + 61):
            clock.offset = at - time.time()
            await old.tick()
            await new.tick()
        await hand_over(old, new)
        # The new holder's first look, a few seconds later, and its next minute.
        for at in (minute + 64, minute + 121):
            clock.offset = at - time.time()
            await old.tick()
            await new.tick()

        store = new.services.store
        kept = sorted(await list_backups("db", store), key=lambda r: r.created)
        assert [int(r.created // 60) for r in kept] == [int(minute // 60) + n for n in range(3)]
        trail = await new.services.audit.entries("db", 20)
        assert len([e for e in trail if e.get("who") == "schedule"]) == 3
        claims = (await store.scan(backup_schedule.CLAIMS)).values()
        ran = sorted(c.value["slot"] for c in claims if not c.value["skipped"])
        skipped = sorted(c.value["slot"] for c in claims if c.value["skipped"])
        assert ran == [minute, minute + 60, minute + 120]
        assert skipped == [minute - 240, minute - 180, minute - 120, minute - 60]
