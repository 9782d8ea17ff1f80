"""Scheduled backups and RPOs: real sqlite3 and PostgreSQL over the lab sshd, state in SQLite.

The schedule tests drive ``BackupScheduler.tick`` with an injectable clock (a day of cron slots
takes a second); the chat tests run the whole bot, whose own job ticks with the real clock
(an RPO of seconds) and whose alerts reach the fake Bot API.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from opsbot.actions.backups import schedule as backup_schedule
from opsbot.actions.backups.methods import run_backup
from opsbot.actions.backups.records import list_backups
from opsbot.actions.backups.schedule import BackupScheduler
from opsbot.alerting.engine import AlertEngine
from opsbot.alerting.event import AlertEvent
from opsbot.services import Services
from tests.actions.test_backups import chown_to_lab_user
from tests.factories import (
    INCIDENTS,
    OPSBOT_TOKEN,
    OSCAR,
    VIC,
    ChatSession,
    Clock,
    base_config,
    fake_fixture,
    replies_say,
    running_opsbot,
    ssh_endpoint,
    viewer_refused,
    write_config,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.postgres import PostgresServer, postgres_bin_dir
from tests.lab.redis import RedisServer
from tests.lab.sshd import SSHServer

DAY = 86400


def make_sqlite(directory: Path, rows: int = 3) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    chown_to_lab_user(directory)
    path = directory / "faceswap.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO users (name) VALUES (?)", [(f"u{i}",) for i in range(rows)])
        db.commit()
    chown_to_lab_user(path)
    return path


fake = fake_fixture(scope="module", group_per_minute=None)


# --------------------------------------------------------------------------- the schedule


@pytest_asyncio.fixture
async def scheduled(
    fake: FakeBotAPI, tmp_path: Path, sshd_server: SSHServer, postgres_server: PostgresServer
) -> AsyncIterator[Services]:
    """db: a sqlite backup and a postgres backup (of a database that is not there), both
    daily at midnight UTC, RPO 6 h; the database name is the bot token, to prove redaction."""
    work = sshd_server.workdir / f"sched-{tmp_path.name[-12:]}"
    db = make_sqlite(work)
    bindir = postgres_bin_dir()
    config = base_config(fake, tmp_path / "data")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "db": {
            "kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["true"]},
            "rpo": "6h",
            "backups": [
                {"type": "sqlite", "path": str(db), "remote_dir": str(work / "bk"),
                 "schedule": "0 0 * * *"},
                {"type": "postgres", "database": OPSBOT_TOKEN, "host": "127.0.0.1",
                 "port": postgres_server.port, "user": postgres_server.user,
                 "pg_dump": [str(bindir / "pg_dump")], "pg_restore": [str(bindir / "pg_restore")],
                 "remote_dir": str(work / "bk"), "schedule": "0 0 * * *"},
            ],
        },
    }  # fmt: skip
    services = Services.build(write_config(tmp_path / "opsbot.yaml", config))
    yield services
    await services.close()


def by_check(events: list[AlertEvent]) -> dict[tuple[str, str], AlertEvent]:
    """(labels.check, status) → event."""
    return {(e.labels["check"], e.status): e for e in events}


async def test_scheduled_backups_run_once_per_slot_and_rpo_alerts_fire_and_recover(
    scheduled: Services, sshd_server: SSHServer
) -> None:
    clock = Clock()
    midnight = (time.time() // DAY + 1) * DAY
    clock.offset = midnight - 60 - time.time()
    ingested: list[AlertEvent] = []
    # The alerts are recorded, as in the bot: what is firing is read back from the records.
    engine = AlertEngine(scheduled.store, scheduled.settings, scheduled.notifier(), clock=clock)

    async def ingest(events: list[AlertEvent]) -> None:
        ingested.extend(events)
        await engine.record(events)

    replica_a = BackupScheduler(scheduled, ingest, now=clock)
    assert replica_a.active

    # 23:59, day one: nothing is due, and neither backup exists; no RPO is judged before one
    # schedule interval (a day) has passed since the backups were first seen.
    assert await replica_a.tick() == []
    assert await list_backups("db", scheduled.store) == []
    first_seen = (await scheduled.store.scan(backup_schedule.FIRST_SEEN)).values()
    assert len(first_seen) == 2 and all(abs(d.value["at"] - clock()) < 5 for d in first_seen)

    # 00:00:01 on two replicas at once: the slot is claimed once, the sqlite backup runs once.
    clock.advance(61)
    ingested.clear()
    replica_b = BackupScheduler(scheduled, _discard, now=clock)
    await replica_a.tick()
    await replica_b.tick()
    kept = await list_backups("db", scheduled.store)
    assert [r.kind for r in kept] == ["sqlite"]
    record = kept[0]
    assert abs(record.created - clock()) < 30 and Path(record.remote_path).exists()
    events = by_check(ingested)
    assert set(events) == {("postgres backup", "firing")}  # still no RPO judged
    failed = events[("postgres backup", "firing")]
    assert failed.severity.value == "critical" and failed.target == "db"
    assert "scheduled postgres backup" in failed.summary and "failed" in failed.summary
    assert "does not exist" in failed.summary  # pg_dump's own words
    assert OPSBOT_TOKEN not in failed.summary and "[REDACTED]" in failed.summary

    # The same slot again: nothing runs, nothing changes.
    ingested.clear()
    assert await replica_a.tick() == []
    assert len(await list_backups("db", scheduled.store)) == 1

    # 06:02: the sqlite backup is over its RPO.
    clock.advance(6 * 3600 + 60)
    stale = by_check(await replica_a.tick())
    assert "over the RPO of 6h" in stale[("rpo", "firing")].summary
    assert " is 6h1m old, " in stale[("rpo", "firing")].summary

    # A backup by hand (as /backup does) lands: the RPO recovers at the next tick.
    clock.advance(60)
    target = scheduled.settings.targets["db"]
    executor = scheduled.executor("lab-ssh")
    await run_backup("db", target.backups[0], executor, scheduled.store, scheduled.backups_dir,
                     now=clock)  # fmt: skip
    recovered = by_check(await replica_a.tick())
    assert set(recovered) == {("rpo", "resolved")}
    assert "landed" in recovered[("rpo", "resolved")].summary

    # The next midnight: the sqlite backup runs again (its RPO holds); the postgres one fails
    # again: a repeat of the same alert (same fingerprint), which the engine counts. A day has
    # passed since it was first seen: that it has no verified backup yet is now an alert.
    clock.offset = midnight + DAY + 1 - time.time()
    again = await replica_a.tick()
    assert [r.kind for r in await list_backups("db", scheduled.store)] == ["sqlite"] * 3
    assert [(e.labels["check"], e.status) for e in again] == [
        ("postgres backup", "firing"), ("rpo", "firing")
    ]
    missing = again[1].summary
    assert missing.startswith("db: no verified postgres backup of database [REDACTED]@")
    assert missing.endswith(" yet (RPO 6h)") and OPSBOT_TOKEN not in missing

    trail = await scheduled.audit.entries("db", 20)
    scheduled_runs = [e for e in trail if e.get("who") == "schedule"]
    assert len(scheduled_runs) == 4  # sqlite and postgres, twice
    assert {e["ok"] for e in scheduled_runs} == {True, False}


async def _discard(events: list[AlertEvent]) -> None:
    del events


def test_an_rpo_is_first_judged_one_schedule_interval_after_the_backup_is_first_seen() -> None:
    from opsbot.config import FilesBackup as Backup

    hourly = Backup.model_validate({"type": "files", "paths": ["/x"], "schedule": "0 * * * *"})
    since = 1_800_000_000.0 + 600  # 10 minutes past an hour
    assert backup_schedule.first_judged(hourly, 6 * 3600, since) == since + 3600
    weekdays = Backup.model_validate(
        {"type": "files", "paths": ["/x"], "schedule": "0 3 * * mon-fri"}
    )
    saturday = 1_800_057_600.0  # 2027-01-16, a Saturday: the first slot is Monday 03:00
    monday = backup_schedule.next_slot(weekdays, saturday)
    assert monday is not None and backup_schedule.first_judged(weekdays, 3600, saturday) == monday
    unscheduled = Backup.model_validate({"type": "files", "paths": ["/x"]})
    assert backup_schedule.first_judged(unscheduled, 3 * 3600, since) == since + 3 * 3600


async def test_three_replicas_sharing_redis_run_each_slot_once(
    fake: FakeBotAPI, tmp_path: Path, sshd_server: SSHServer, redis_server: RedisServer
) -> None:
    work = sshd_server.workdir / f"replicas-{tmp_path.name[-12:]}"
    db = make_sqlite(work)
    config = base_config(fake, tmp_path / "data")
    config["store"] = {"backend": "redis", "redis_url": redis_server.url,
                       "prefix": f"sched-{tmp_path.name[-12:]}"}  # fmt: skip
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "db": {
            "kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["true"]},
            "backups": [{"type": "sqlite", "path": str(db), "remote_dir": str(work / "bk"),
                         "schedule": "*/15 * * * *"}],
        },
    }  # fmt: skip
    settings = write_config(tmp_path / "opsbot.yaml", config)
    replicas = [Services.build(settings) for _ in range(3)]
    try:
        clock = Clock()
        quarter = (time.time() // 900 + 1) * 900
        for slot in (quarter, quarter + 900):
            clock.offset = slot + 1 - time.time()
            schedulers = [BackupScheduler(s, _discard, now=clock) for s in replicas]
            await asyncio.gather(*(s.tick() for s in schedulers))
        kept = await list_backups("db", replicas[0].store)
        assert len(kept) == 2  # two slots, one backup each, whichever replica ran it
        # in time order (sorting "2345" and "0000" as text failed around midnight)
        stamps = [time.strftime("%H%M", time.gmtime(r.created))
                  for r in sorted(kept, key=lambda r: r.created)]  # fmt: skip
        assert stamps == [time.strftime("%H%M", time.gmtime(t)) for t in (quarter, quarter + 900)]
    finally:
        for services in replicas:
            await services.close()


def test_a_bad_schedule_or_rpo_is_a_config_error(fake: FakeBotAPI, tmp_path: Path) -> None:
    from opsbot.errors import ConfigError

    for backup, rpo, expected in [
        ({"schedule": "61 * * * *"}, "6h", "not a cron expression"),
        ({"schedule": "every day"}, "6h", "not a cron expression"),
        ({}, "six hours", "a duration looks like"),
    ]:
        config = base_config(fake, tmp_path / "data")
        config["targets"] = {
            "db": {
                "kind": "command", "actions": {"status": ["true"]}, "rpo": rpo,
                "backups": [{"type": "files", "paths": ["/etc/hostname"], **backup}],
            }
        }  # fmt: skip
        with pytest.raises(ConfigError, match=expected):
            write_config(tmp_path / "opsbot.yaml", config)


# --------------------------------------------------------------------------- in the chat


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, sshd_server: SSHServer
) -> AsyncIterator[ChatSession]:
    tmp = tmp_path_factory.mktemp("rpo")
    work = sshd_server.workdir / "rpo-chat"
    db = make_sqlite(work, rows=5)
    config = base_config(fake, tmp / "data")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "faceswap": {  # logs and a restart too, which an RPO alert must not offer
            "kind": "command", "endpoint": "lab-ssh", "log_file": str(work / "app.log"),
            "actions": {"status": ["true"], "restart": ["true"]}, "rpo": 3,
            "backups": [{"type": "sqlite", "path": str(db), "remote_dir": str(work / "bk")}],
        },
        "web": {"kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["true"]}},
    }  # fmt: skip
    settings = write_config(tmp / "opsbot.yaml", config)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backup_schedule, "TICK_SECONDS", 0.3)  # the job's interval, for the test
        async with running_opsbot(fake, settings) as session:
            yield session


def _alert(text: str) -> Any:
    return lambda m: text in (m.text or "")


async def test_rpo_alerts_reach_the_chat_and_recover_when_a_backup_lands(
    chat: ChatSession,
) -> None:
    assert chat.app.job_queue is not None and chat.app.job_queue.get_jobs_by_name("backups")
    fired = await chat.fake.wait_for_message(
        INCIDENTS.id, _alert("faceswap: no verified sqlite backup"), timeout=15
    )
    assert fired.text is not None and "(RPO 3s)" in fired.text
    keyboard = (fired.reply_markup or {})["inline_keyboard"]
    labels = [[b["text"] for b in row] for row in keyboard]
    assert labels == [["💾 Back up now", "🔕 Silence 1h", "👀 Ack"], ["🚨 Declare incident"]]
    back_up = keyboard[0][0]["callback_data"]

    # "Back up now" files the same request as /backup faceswap, with the tapper's role: a
    # viewer's tap runs nothing, an operator's runs the backup and answers under the card
    chat.tap(fired, back_up, user=VIC, chat=INCIDENTS)
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: "operator" in str(c.params.get("text"))
    )
    chat.tap(fired, back_up, user=OSCAR, chat=INCIDENTS)
    done = await chat.fake.wait_for_message(
        INCIDENTS.id, _alert("backup faceswap — done"), timeout=60
    )
    assert done.text is not None and done.reply_to_message_id == fired.message_id
    assert len(await list_backups("faceswap", chat.services.store)) == 1
    landed = await chat.fake.wait_for_message(
        INCIDENTS.id, _alert("a verified sqlite backup"), timeout=15
    )
    assert landed.text is not None and "landed: faceswap-sqlite-" in landed.text
    stale = await chat.fake.wait_for_message(
        INCIDENTS.id, _alert("over the RPO of 3s"), timeout=20
    )
    assert stale.text is not None and "faceswap" in stale.text


async def test_backups_overview_and_test_restore_in_the_chat(chat: ChatSession) -> None:
    for _ in range(2):  # two sizes make a trend
        done = await chat.ask("/backup faceswap", user=OSCAR, timeout=60)
        assert done.text is not None and "— done" in done.text, done.text

    overview = await chat.ask("/backups", user=VIC)
    text = overview.text or ""
    assert "faceswap sqlite " in text and "RPO 3s" in text and "not scheduled" in text, text
    assert "faceswap-sqlite-" in text and "size 8.0 KiB → 8.0 KiB" in text and "(±0%)" in text
    assert "web" not in text  # no backups configured there

    verified = await chat.ask("/backup faceswap verify", user=OSCAR, timeout=60)
    text = verified.text or ""
    assert text.startswith("✅ test restore of faceswap"), text
    assert "integrity_check ok: 1 table, 5 rows" in text and "users" in text

    await replies_say(chat, [
        ("/backup faceswap verify nosuch.sqlite3", "no backup named"),
        ("/backup web verify", "has no backups configured"),
        ("/backups now", "usage: /backups"),
    ])  # fmt: skip
    await viewer_refused(chat, "/backup faceswap verify")
