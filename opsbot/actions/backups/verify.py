"""The test restore (:func:`verify_restore`): a kept backup restored into a scratch database
or directory, reported (tables and row counts, keys, files), then thrown away.
"""

from __future__ import annotations

import asyncio
import json
import logging
import posixpath
import re
import uuid
from collections.abc import Sequence

from opsbot.actions.backups.methods import _ensure_remote_copy
from opsbot.actions.backups.records import (
    BackupError,
    BackupRecord,
    _count,
    human_size,
)
from opsbot.actions.backups.session import (
    CLEANUP_TIMEOUT,
    REDIS_POLL_INTERVAL,
    Progress,
    _check_remote_path,
    _check_target,
    _holding_lock,
    _output_tail,
    _pg_connection,
    _Session,
)
from opsbot.config import (
    Backup,
    PostgresBackup,
    RedisBackup,
    SQLiteBackup,
)
from opsbot.reach.executors import Executor
from opsbot.state.store import Store

log = logging.getLogger(__name__)

async def verify_restore(
    target_name: str,
    spec: Backup,
    record: BackupRecord,
    executor: Executor,
    *,
    store: Store | None = None,
    progress: Progress | None = None,
) -> str:
    """The runbooks' "test restore": restore ``record`` somewhere scratch and say what is in it.

    * postgres: ``CREATE DATABASE opsbot_verify_…`` (psql), ``pg_restore`` into it, exact row
      counts per table, then ``DROP DATABASE``: the target's database is never touched;
    * sqlite: ``.restore`` into a scratch file, ``integrity_check``, row counts per table;
    * redis: the RDB loaded by a scratch ``redis-server`` on a unix socket in a scratch
      directory (no TCP port), its keyspace and a few key names, then ``SHUTDOWN NOSAVE``;
    * files: ``tar -xzf`` into a scratch directory, files and bytes counted.

    Scratch directories are made with ``mktemp -d`` under ``remote_dir`` and removed after.
    Returns a few lines for the chat; raises BackupError if the restore fails.
    """
    _check_target(target_name)
    if record.target != target_name or record.kind != spec.type:
        raise BackupError(f"{record.name} is not a {spec.type} backup of {target_name}")
    what = f"test restore of {record.name}"
    async with _holding_lock(store, target_name, what, spec.timeout):
        session = _Session(target_name, executor, spec.timeout, progress)
        await _ensure_remote_copy(session, record)
        if isinstance(spec, PostgresBackup):
            found = await _verify_postgres(session, spec, record)
        else:
            found = await _in_scratch_dir(session, spec, record)
        return f"test restore of {record.name} ({human_size(record.size)}): ok\n{found}"


#: Exact row counts of every user table, in one statement (names quoted by format's %I).
_PG_COUNTS = (
    "SELECT format('%I.%I', table_schema, table_name) || '|' || (xpath('/row/c/text()', "
    "query_to_xml(format('SELECT count(*) AS c FROM %I.%I', table_schema, table_name), "
    "false, true, '')))[1]::text FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
    "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
)


#: Lines of tables (or files, keys) shown; the rest are counted.
_SHOWN = 20


async def _verify_postgres(session: _Session, spec: PostgresBackup, record: BackupRecord) -> str:
    scratch = f"opsbot_verify_{uuid.uuid4().hex[:12]}"
    psql = [*spec.psql, "-X", "-At", "-v", "ON_ERROR_STOP=1", *_pg_connection(spec)]
    await session.say(f"creating scratch database {scratch}…")
    await session.check(
        [*psql, f"--dbname={spec.database}", "-c", f'CREATE DATABASE "{scratch}"'],
        "creating a scratch database (the role needs CREATEDB)",
    )
    try:
        await session.say(f"pg_restore of {record.name} into {scratch}…")
        await session.check(
            [*spec.pg_restore, "--no-owner", "--no-acl", *_pg_connection(spec),
             f"--dbname={scratch}", record.remote_path],
            f"pg_restore into {scratch}",
        )  # fmt: skip
        counted = await session.check([*psql, f"--dbname={scratch}", "-c", _PG_COUNTS], "counts")
    finally:
        await asyncio.shield(_drop_scratch_database(session, psql, spec.database, scratch))
    rows = [line.rpartition("|") for line in counted.stdout.splitlines() if "|" in line]
    tables = [(name, int(n) if n.isdigit() else 0) for name, _, n in rows]
    return _tables_report(f"restored into scratch database {scratch} (dropped after)", tables)


async def _drop_scratch_database(
    session: _Session, psql: list[str], maintenance: str, scratch: str
) -> None:
    argv = [*psql, f"--dbname={maintenance}", "-c", f'DROP DATABASE IF EXISTS "{scratch}"']
    try:
        result = await session.executor.run(argv, timeout=CLEANUP_TIMEOUT)
        if not result.ok:
            log.warning("%s: could not drop %s:%s", session.target, scratch, _output_tail(result))
    except Exception as exc:
        log.warning("%s: could not drop %s: %s", session.target, scratch, exc)


def _tables_report(head: str, tables: list[tuple[str, int]]) -> str:
    total = sum(n for _, n in tables)
    lines = [f"{head}: {_count(len(tables), 'table')}, {_count(total, 'row')}"]
    width = max((len(name) for name, _ in tables[:_SHOWN]), default=0)
    lines += [f"  {name:<{width}}  {n:>10}" for name, n in tables[:_SHOWN]]
    if len(tables) > _SHOWN:
        lines.append(f"  … and {len(tables) - _SHOWN} more tables")
    return "\n".join(lines)


async def _in_scratch_dir(session: _Session, spec: Backup, record: BackupRecord) -> str:
    """Make a scratch directory under remote_dir, restore there, always remove it."""
    made = await session.check(
        ["mktemp", "-d", posixpath.join(spec.remote_dir, "opsbot-verify-XXXXXXXX")],
        "creating a scratch directory",
    )
    scratch = made.stdout.strip()
    prefix = posixpath.join(spec.remote_dir, "opsbot-verify-")
    if not scratch.startswith(prefix) or "/" in scratch[len(prefix) :] or "\n" in scratch:
        raise BackupError(f"{session.target}: mktemp said {made.stdout[:100]!r}")
    try:
        if isinstance(spec, SQLiteBackup):
            return await _verify_sqlite(session, spec, record, scratch)
        if isinstance(spec, RedisBackup):
            return await _verify_redis(session, spec, record, scratch)
        return await _verify_files(session, record, scratch)
    finally:
        await asyncio.shield(_remove_scratch(session, scratch))


async def _remove_scratch(session: _Session, scratch: str) -> None:
    try:
        result = await session.executor.run(["rm", "-rf", "--", scratch], timeout=CLEANUP_TIMEOUT)
        if not result.ok:
            log.warning(
                "%s: could not remove %s:%s", session.target, scratch, _output_tail(result)
            )
    except Exception as exc:
        log.warning("%s: could not remove %s: %s", session.target, scratch, exc)


async def _verify_sqlite(
    session: _Session, spec: SQLiteBackup, record: BackupRecord, scratch: str
) -> str:
    _check_remote_path(record.remote_path, spec)
    restored = posixpath.join(scratch, "restored.sqlite3")
    await session.say(f"restoring {record.name} into {restored}…")
    result = await session.check(
        [*spec.sqlite3, restored, f".restore '{record.remote_path}'"], "sqlite3 .restore"
    )
    if result.stderr.strip():
        raise BackupError(f"{session.target}: sqlite3 .restore failed{_output_tail(result)}")
    sqlite3 = [*spec.sqlite3, "-readonly", restored]
    check = await session.run([*sqlite3, "PRAGMA integrity_check"], "integrity_check")
    if check.stdout.strip() != "ok":
        raise BackupError(
            f"{session.target}: the restored copy fails PRAGMA integrity_check"
            f"{_output_tail(check)}"
        )
    listed = await session.check(
        [*sqlite3, "-json", "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT "
         "LIKE 'sqlite_%' ORDER BY name"],
        "listing tables",
    )  # fmt: skip
    names = [str(row["name"]) for row in _json_rows(listed.stdout)]
    tables: list[tuple[str, int]] = []
    if names:
        union = " UNION ALL ".join(
            f"SELECT {_sql_string(n)} AS name, count(*) AS n FROM {_sql_name(n)}"  # noqa: S608
            for n in names  # the dump's own table names, quoted; on a read-only scratch copy
        )
        counted = await session.check([*sqlite3, "-json", union], "counting rows")
        tables = [(str(r["name"]), int(str(r["n"]))) for r in _json_rows(counted.stdout)]
    return _tables_report("restored into a scratch file, integrity_check ok", tables)


def _json_rows(text: str) -> list[dict[str, object]]:
    """sqlite3 -json output (nothing at all for no rows)."""
    if not text.strip():
        return []
    rows = json.loads(text)
    return [r for r in rows if isinstance(r, dict)] if isinstance(rows, list) else []


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_name(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


async def _verify_redis(
    session: _Session, spec: RedisBackup, record: BackupRecord, scratch: str
) -> str:
    sock, pidfile = posixpath.join(scratch, "redis.sock"), posixpath.join(scratch, "redis.pid")
    await session.check(
        ["cp", record.remote_path, posixpath.join(scratch, "dump.rdb")], "copying the RDB"
    )
    await session.say(f"loading {record.name} in a scratch redis-server…")
    await session.check(
        [*spec.redis_server, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700",
         "--dir", scratch, "--dbfilename", "dump.rdb", "--save", "", "--appendonly", "no",
         "--daemonize", "yes", "--pidfile", pidfile,
         "--logfile", posixpath.join(scratch, "redis.log")],
        "starting a scratch redis-server",
    )  # fmt: skip
    cli = [*_redis_cli_program(spec.redis_cli), "-s", sock]  # at the scratch server
    try:
        while True:  # LOADING until the whole RDB is read
            pong = await session.run([*cli, "PING"], "redis PING")
            if pong.stdout.strip() == "PONG":
                break
            session.left("the scratch redis-server loaded the dump")
            await asyncio.sleep(REDIS_POLL_INTERVAL)
        info = await session.check([*cli, "INFO", "keyspace"], "redis INFO keyspace")
        sample = await session.check([*cli, "SCAN", "0", "COUNT", "50"], "redis SCAN")
    finally:
        await asyncio.shield(_stop_scratch_redis(session, cli, pidfile))
    dbs = [line.strip() for line in info.stdout.splitlines() if line.startswith("db")]
    keys = sum(int(m) for m in re.findall(r"keys=(\d+)", info.stdout))
    names = sorted(sample.stdout.splitlines()[1:])[:10]
    lines = [f"loaded by a scratch redis-server: {_count(keys, 'key')}"]
    lines += [f"  {db}" for db in dbs]
    if names:
        lines.append("  e.g. " + ", ".join(names))
    return "\n".join(lines)


def _redis_cli_program(argv: Sequence[str]) -> list[str]:
    """``redis_cli`` without its connection options: [sudo -u redis] redis-cli [-h … -p …]."""
    for index, word in enumerate(argv):
        if posixpath.basename(word) == "redis-cli":
            return list(argv[: index + 1])
    return list(argv[:1])


async def _stop_scratch_redis(session: _Session, cli: list[str], pidfile: str) -> None:
    try:
        await session.executor.run([*cli, "SHUTDOWN", "NOSAVE"], timeout=CLEANUP_TIMEOUT)
        pid = await session.executor.run(["cat", pidfile], timeout=CLEANUP_TIMEOUT)
        if pid.ok and pid.stdout.strip().isdigit():  # still there: SHUTDOWN was refused
            await session.executor.run(["kill", pid.stdout.strip()], timeout=CLEANUP_TIMEOUT)
    except Exception as exc:
        log.warning("%s: could not stop the scratch redis-server: %s", session.target, exc)


async def _verify_files(session: _Session, record: BackupRecord, scratch: str) -> str:
    await session.say(f"extracting {record.name} into {scratch}…")
    await session.check(["tar", "-xzf", record.remote_path, "-C", scratch], "tar -xzf")
    # Plain find and du -sk: GNU's and busybox's alike (a container may only have busybox).
    found = await session.check(["find", scratch, "-type", "f"], "listing the files")
    paths = sorted(p[len(scratch) :] for p in found.stdout.splitlines() if p.startswith(scratch))
    used = await session.check(["du", "-sk", scratch], "du -sk")
    kib = used.stdout.split()[0] if used.stdout.split() else "?"
    size = human_size(int(kib) * 1024) if kib.isdigit() else "? KiB"
    lines = [f"extracted into a scratch directory: {_count(len(paths), 'file')}, {size} on disk"]
    lines += [f"  {path}" for path in paths[:_SHOWN]]
    if len(paths) > _SHOWN:
        lines.append(f"  … and {len(paths) - _SHOWN} more files")
    return "\n".join(lines)
