"""Verified backups per target: dump, verify, checksum, copy home, compare, keep the newest N.

One backup of a target is, in order (:func:`run_backup`):

1. a dump on the endpoint, into ``spec.remote_dir`` under a timestamped name
   (``quizbot-postgres-20261122-101500.dump``), every command an argv, never a shell string:
   ``postgres`` pg_dump -Fc · ``sqlite`` sqlite3 ``.backup`` (online, consistent) · ``redis``
   BGSAVE then a copy of the RDB file once the save finished · ``files`` tar -czf;
2. a verification that reads the dump back with the tool that would restore it:
   ``pg_restore --list`` · ``PRAGMA integrity_check`` · the ``REDIS`` file magic ·
   ``tar -tzf``. A dump that fails it is removed and the backup fails (:class:`BackupError`);
3. its SHA-256 and size, computed on the endpoint;
4. unless ``copy_local`` is off, a copy into opsbot's own ``backups_dir/<target>/`` over the
   executor's own connection (:mod:`opsbot.executors.transfer`), whose SHA-256 must match;
5. the size compared with the previous backup of the same thing (``shrunk`` below
   ``shrink_warning`` of it: a half-empty dump is the classic silent failure);
6. the record stored, and backups beyond the newest ``keep`` deleted (remote and local).

State lives in the store: ``backups-index/<target>`` is one document holding the kept records
(newest first, updated by compare-and-set); ``backups/<target>`` is an append-only history
including pruned ones. A lease ``backup:<target>`` keeps two backups (or a backup and a
restore) of one target from running at once, across replicas.

A backup that fails at any step leaves nothing behind: its remote and local files are removed
and nothing is recorded.

:func:`verify_restore` is the runbooks' "test restore": a kept backup restored into a scratch
database or directory, reported (tables and row counts, keys, files), then thrown away.

Nothing here knows about Telegram; ``progress`` is an optional async callback taking one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from opsbot.config import (
    NAME_PATTERN,
    Backup,
    FilesBackup,
    PostgresBackup,
    RedisBackup,
    SQLiteBackup,
)
from opsbot.errors import OpsbotError
from opsbot.executors import ExecResult, Executor
from opsbot.executors.transfer import FileTransfer, sha256_file, transfer_of
from opsbot.store import JSONDoc, Store, Versioned

log = logging.getLogger(__name__)

#: File name extension per backup kind.
EXTENSIONS = {"postgres": "dump", "sqlite": "sqlite3", "redis": "rdb", "files": "tar.gz"}
HISTORY_NAMESPACE = "backups"
INDEX_NAMESPACE = "backups-index"
#: Entries kept in the append-only history per target (the index holds what is on disk).
HISTORY_KEEP = 500
#: Seconds the lease outlives the backup's own timeout (cleanup after a timeout).
LOCK_MARGIN = 60.0
#: Seconds between two looks at a running BGSAVE.
REDIS_POLL_INTERVAL = 0.1
#: How often a copy home reports its bytes done (the card shows the latest at its own pace).
COPY_POLL = 0.25
#: Budget for removing files after a failure or for retention, outside the backup's deadline.
CLEANUP_TIMEOUT = 30.0

Progress = Callable[[str], Awaitable[None]]

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DATABASE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$.-]{0,62}$")


class BackupError(OpsbotError):
    """A backup or restore failed; the message says which step and why, in one paragraph."""


class BackupBusy(BackupError):
    """Another backup or restore of the same target holds its lease."""


@dataclass(frozen=True, slots=True)
class BackupRecord:
    """One verified backup, as kept in the store."""

    target: str
    kind: str  # postgres | sqlite | redis | files
    name: str  # file name, e.g. quizbot-postgres-20261122-101500.dump
    created: float  # epoch seconds (when the dump started)
    size: int  # bytes
    sha256: str  # hex, computed on the endpoint (and matched by the local copy)
    remote_path: str  # on the endpoint
    local_path: str | None  # opsbot's own copy, if any
    verified: str  # what the verification said, e.g. "pg_restore --list: 12 entries, 3 tables"
    previous_size: int | None  # size of the previous backup of the same source
    shrunk: bool  # smaller than shrink_warning x previous_size
    source: str = ""  # what was dumped (database, file, paths): retention and deltas are per it

    def to_doc(self) -> JSONDoc:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: JSONDoc) -> BackupRecord:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in doc.items() if k in names})

    @property
    def change(self) -> float | None:
        """Relative size change against the previous backup (-0.92 = 92 % smaller)."""
        if self.previous_size is None or self.previous_size <= 0:
            return None
        return self.size / self.previous_size - 1


# --------------------------------------------------------------------------- public API


async def run_backup(
    target_name: str,
    spec: Backup,
    executor: Executor,
    store: Store,
    backups_dir: Path,
    *,
    progress: Progress | None = None,
    now: Callable[[], float] = time.time,
) -> BackupRecord:
    """Dump, verify, checksum, copy home, compare, record and prune; see the module docstring.

    Raises BackupError when any step fails (nothing is left behind), or when a backup of the
    same target is already running. ExecutorError when the endpoint cannot be reached.
    """
    _check_target(target_name)
    transfer = transfer_of(executor) if spec.copy_local else None
    if spec.copy_local and transfer is None:
        raise BackupError(
            f"{target_name}: {executor!r} cannot copy files back to opsbot; set copy_local: "
            "false for this backup or use an SSH, Docker or local endpoint"
        )
    lock, owner = _lock_name(target_name), _owner(f"{spec.type} backup")
    holder = await store.acquire(lock, owner, ttl=spec.timeout + LOCK_MARGIN)
    if holder is not None:
        raise BackupBusy(f"a backup of {target_name} is already running ({holder})")
    try:
        session = _Session(target_name, executor, spec.timeout, progress)
        return await _backup(session, spec, store, backups_dir, transfer, now)
    finally:
        await _release(store, lock, owner)


async def list_backups(target_name: str, store: Store) -> list[BackupRecord]:
    """The kept backups of a target, newest first."""
    records = _parse_index(await store.get(INDEX_NAMESPACE, target_name))
    return sorted(records, key=lambda r: r.created, reverse=True)  # stable: ties keep order


async def restore_backup(
    target_name: str,
    spec: Backup,
    record: BackupRecord,
    executor: Executor,
    *,
    database: str | None = None,
    store: Store | None = None,
    progress: Progress | None = None,
) -> str:
    """Put ``record`` back; return a one-line summary of what was done.

    * postgres: ``pg_restore --clean --if-exists --no-owner --single-transaction`` into the
      target's database, or into ``database`` (e.g. a scratch database to inspect first);
    * sqlite: sqlite3 ``.restore`` into ``spec.path``: SQLite's backup API in reverse, under
      SQLite's own locks, so a running app sees the old or the new database, never a mix, and
      a stale ``-wal`` file cannot be replayed over the restored pages (a file copy plus
      ``mv`` could do both);
    * files: ``tar -xzf`` into ``/`` (files backups hold absolute paths);
    * redis: refused (see :data:`REDIS_RESTORE`).

    The dump on the endpoint must still have the recorded SHA-256. If it is gone but opsbot
    holds the local copy (with the right checksum), the copy is pushed back first. With a
    ``store``, the target's backup lease is held meanwhile (no backup prunes the file).
    """
    _check_target(target_name)
    if record.target != target_name or record.kind != spec.type:
        raise BackupError(
            f"{record.name} is a {record.kind} backup of {record.target}, not a "
            f"{spec.type} backup of {target_name}"
        )
    if isinstance(spec, RedisBackup):
        raise BackupError(REDIS_RESTORE.format(path=record.remote_path, dump=spec.dump_path))
    if database is not None and not isinstance(spec, PostgresBackup):
        raise BackupError("a database to restore into only applies to postgres backups")
    if database is not None and not _DATABASE.match(database):
        raise BackupError(f"{database!r} is not a plain database name")
    lock, owner = _lock_name(target_name), _owner(f"restore of {record.name}")
    if store is not None:
        holder = await store.acquire(lock, owner, ttl=spec.timeout + LOCK_MARGIN)
        if holder is not None:
            raise BackupError(f"a backup of {target_name} is already running ({holder})")
    try:
        session = _Session(target_name, executor, spec.timeout, progress)
        await _ensure_remote_copy(session, record)
        return await _restore(session, spec, record, database)
    finally:
        if store is not None:
            await _release(store, lock, owner)


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
    lock, owner = _lock_name(target_name), _owner(f"test restore of {record.name}")
    if store is not None:
        holder = await store.acquire(lock, owner, ttl=spec.timeout + LOCK_MARGIN)
        if holder is not None:
            raise BackupBusy(f"a backup of {target_name} is already running ({holder})")
    try:
        session = _Session(target_name, executor, spec.timeout, progress)
        await _ensure_remote_copy(session, record)
        if isinstance(spec, PostgresBackup):
            found = await _verify_postgres(session, spec, record)
        else:
            found = await _in_scratch_dir(session, spec, record)
        return f"test restore of {record.name} ({human_size(record.size)}): ok\n{found}"
    finally:
        if store is not None:
            await _release(store, lock, owner)


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


REDIS_RESTORE = (
    "restoring redis needs the server stopped: redis-server reads its RDB file only at "
    "start-up and writes its own dataset over it at the next save or shutdown, so a dump "
    "copied under a running server is lost. Stop redis, copy {path} over {dump}, then start "
    "it again (with AOF enabled, also move the appendonly files aside)."
)


def describe(record: BackupRecord) -> str:
    """One line for humans: name, size, checksum prefix, change against the previous one."""
    return (
        f"{record.name} · {human_size(record.size)} · sha256 {record.sha256[:12]} · "
        f"{describe_change(record)}"
    )


def describe_change(record: BackupRecord) -> str:
    change = record.change
    if change is None:
        return "first backup" if record.previous_size is None else "previous was empty"
    percent = round(change * 100)
    if percent == 0:
        text = "±0%" if record.size == record.previous_size else ("+0%" if change > 0 else "−0%")
    else:
        text = f"+{percent}%" if percent > 0 else f"−{-percent}%"
    return f"{text} ⚠️ shrank" if record.shrunk else text


def human_size(size: float) -> str:
    """1536 → '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if unit == "B" and size < 1024:
            return f"{int(size)} B"
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def source_of(spec: Backup) -> str:
    """What a spec dumps, in words; backups are compared and pruned per (target, kind, this)."""
    if isinstance(spec, PostgresBackup):
        where = f"@{spec.host or ''}:{spec.port or ''}" if spec.host or spec.port else ""
        return f"database {spec.database}{where}"
    if isinstance(spec, SQLiteBackup):
        return spec.path
    if isinstance(spec, RedisBackup):
        return spec.dump_path
    return " ".join(spec.paths)


# --------------------------------------------------------------------------- one run


class _Session:
    """Runs the steps of one backup or restore against one deadline."""

    def __init__(
        self, target: str, executor: Executor, timeout: float, progress: Progress | None
    ) -> None:
        self.target = target
        self.executor = executor
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self._progress = progress

    def left(self, what: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise BackupError(f"{self.target}: out of time before {what} ({self.timeout:g} s)")
        return left

    async def run(self, argv: Sequence[str], what: str) -> ExecResult:
        result = await self.executor.run(argv, timeout=self.left(what))
        if result.timed_out:
            raise BackupError(f"{self.target}: {what} timed out (budget {self.timeout:g} s)")
        return result

    async def check(self, argv: Sequence[str], what: str) -> ExecResult:
        """Run; a non-zero exit is a BackupError quoting the end of stderr."""
        result = await self.run(argv, what)
        if not result.ok:
            raise BackupError(f"{self.target}: {what} failed{_output_tail(result)}")
        return result

    async def say(self, text: str) -> None:
        if self._progress is None:
            return
        try:
            await self._progress(text)
        except Exception:  # a progress message that cannot be shown must not fail a backup
            log.warning("backup progress callback failed", exc_info=True)


async def _backup(
    session: _Session,
    spec: Backup,
    store: Store,
    backups_dir: Path,
    transfer: FileTransfer | None,
    now: Callable[[], float],
) -> BackupRecord:
    target, kind = session.target, spec.type
    source = source_of(spec)
    kept = await list_backups(target, store)
    created = now()
    name = _file_name(target, kind, created, {r.name for r in kept})
    remote_path = posixpath.join(spec.remote_dir, name)
    _check_remote_path(remote_path, spec)
    if isinstance(spec, FilesBackup):
        relative = [p for p in spec.paths if not p.startswith("/")]
        if relative:
            raise BackupError(
                f"{target}: files backups need absolute paths (a restore extracts into /): "
                + ", ".join(relative)
            )
    local_path = backups_dir / target / name if transfer is not None else None

    await session.check(["mkdir", "-p", spec.remote_dir], f"creating {spec.remote_dir}")
    try:
        await session.say(f"dumping {source} to {remote_path}…")
        await _dump(session, spec, remote_path)
        await session.say("verifying the dump…")
        verified = await _verify(session, spec, remote_path)
        sha256, size = await _checksum(session, remote_path)
        if transfer is not None and local_path is not None:
            await session.say(f"copying {human_size(0)} / {human_size(size)} to opsbot…")
            await _copy_home(session, transfer, remote_path, local_path, sha256, size)
    except BaseException:
        await asyncio.shield(_remove_files(session, [remote_path], [local_path]))
        raise

    previous = next((r for r in kept if r.kind == kind and r.source == source), None)
    previous_size = previous.size if previous is not None else None
    record = BackupRecord(
        target=target,
        kind=kind,
        name=name,
        created=created,
        size=size,
        sha256=sha256,
        remote_path=remote_path,
        local_path=str(local_path) if local_path is not None else None,
        verified=verified,
        previous_size=previous_size,
        shrunk=previous_size is not None and size < spec.shrink_warning * previous_size,
        source=source,
    )
    try:
        await store.append(HISTORY_NAMESPACE, target, record.to_doc(), keep=HISTORY_KEEP)
        pruned = await _add_to_index(store, record, spec.keep)
    except BaseException:
        await asyncio.shield(_remove_files(session, [remote_path], [local_path]))
        raise
    if pruned:
        await session.say(f"removing {len(pruned)} old backup(s)…")
        await _prune(session, pruned, backups_dir)
    await session.say(describe(record))
    return record


async def _dump(session: _Session, spec: Backup, path: str) -> None:
    if isinstance(spec, PostgresBackup):
        argv = [
            *spec.pg_dump,
            "-Fc",
            "-f",
            path,
            *_pg_connection(spec),
            f"--dbname={spec.database}",
        ]
        await session.check(argv, f"pg_dump of {spec.database}")
    elif isinstance(spec, SQLiteBackup):
        argv = [*spec.sqlite3, "-readonly", spec.path, f".backup '{path}'"]
        result = await session.check(argv, f"sqlite3 .backup of {spec.path}")
        if result.stderr.strip():  # the CLI reports some dot-command errors with exit 0
            raise BackupError(f"{session.target}: sqlite3 .backup failed{_output_tail(result)}")
    elif isinstance(spec, RedisBackup):
        await _redis_bgsave(session, spec)
        await session.check(["cp", spec.dump_path, path], f"copying {spec.dump_path}")
    else:
        result = await session.run(["tar", "-czf", path, "--", *spec.paths], "tar -czf")
        # GNU tar exits 1 when a file changed while it was read; the archive is still whole.
        if result.exit_status != 0 and not (
            result.exit_status == 1 and "changed as we read it" in result.stderr
        ):
            raise BackupError(f"{session.target}: tar -czf failed{_output_tail(result)}")


async def _redis_bgsave(session: _Session, spec: RedisBackup) -> None:
    """BGSAVE and wait for it to finish.

    LASTSAVE has a resolution of one second, so two saves within a second look alike;
    ``rdb_saves`` (Redis 7+) counts them, and ``rdb_bgsave_in_progress`` says when the fork
    is done. Older servers fall back to LASTSAVE changing.
    """
    cli = list(spec.redis_cli)
    before = await _redis_persistence(session, cli)
    result = await session.run([*cli, "BGSAVE"], "redis BGSAVE")
    reply = (result.stdout + result.stderr).strip()
    if "already in progress" not in reply and (not result.ok or reply.startswith("ERR")):
        raise BackupError(f"{session.target}: redis BGSAVE failed: {reply[-300:]}")
    while True:
        info = await _redis_persistence(session, cli)
        done = info.get("rdb_bgsave_in_progress") == "0" and (
            info.get("rdb_saves") != before.get("rdb_saves")
            if "rdb_saves" in info
            else info.get("rdb_last_save_time") != before.get("rdb_last_save_time")
        )
        if done:
            break
        session.left("the redis BGSAVE finished")
        await asyncio.sleep(REDIS_POLL_INTERVAL)
    if info.get("rdb_last_bgsave_status") != "ok":
        raise BackupError(
            f"{session.target}: redis BGSAVE failed (rdb_last_bgsave_status:"
            f"{info.get('rdb_last_bgsave_status')}); see the redis log"
        )


async def _redis_persistence(session: _Session, cli: list[str]) -> dict[str, str]:
    result = await session.check([*cli, "INFO", "persistence"], "redis INFO persistence")
    info = dict(
        line.split(":", 1)
        for line in result.stdout.splitlines()
        if ":" in line and not line.startswith("#")
    )
    info = {k.strip(): v.strip() for k, v in info.items()}
    if "rdb_bgsave_in_progress" not in info:
        raise BackupError(
            f"{session.target}: redis INFO persistence said nothing usable: "
            f"{(result.stdout + result.stderr).strip()[:200]}"
        )
    return info


async def _verify(session: _Session, spec: Backup, path: str) -> str:
    """Read the dump back with the restoring tool; return what it said, or raise."""
    target = session.target
    if isinstance(spec, PostgresBackup):
        result = await session.run([*spec.pg_restore, "--list", path], "pg_restore --list")
        if not result.ok:
            raise BackupError(
                f"{target}: the dump failed verification (pg_restore --list){_output_tail(result)}"
            )
        entries = [line.split() for line in result.stdout.splitlines()]
        entries = [e for e in entries if e and not e[0].startswith(";")]
        tables = sum(1 for e in entries if e[3:4] == ["TABLE"] and e[4:5] != ["DATA"])
        counted = f"{_count(len(entries), 'entry', 'entries')}, {_count(tables, 'table')}"
        return f"pg_restore --list: {counted}"
    if isinstance(spec, SQLiteBackup):
        sqlite3 = [*spec.sqlite3, "-readonly", path]
        result = await session.run([*sqlite3, "PRAGMA integrity_check"], "integrity_check")
        if not result.ok or result.stdout.strip() != "ok":
            raise BackupError(
                f"{target}: the dump failed verification (PRAGMA integrity_check)"
                f"{_output_tail(result)}"
            )
        count = await session.check(
            [*sqlite3, "SELECT count(*) FROM sqlite_master WHERE type = 'table'"], "table count"
        )
        tables = int(count.stdout.strip()) if count.stdout.strip().isdigit() else 0
        return f"integrity_check ok, {_count(tables, 'table')}"
    if isinstance(spec, RedisBackup):
        result = await session.run(["head", "-c", "9", path], "reading the RDB header")
        if not result.ok or not result.stdout.startswith("REDIS"):
            raise BackupError(
                f"{target}: the dump failed verification: not an RDB file "
                f"(starts with {result.stdout[:9]!r}){_output_tail(result)}"
            )
        return f"RDB header {result.stdout.strip()}"
    result = await session.run(["tar", "-tzf", path], "tar -tzf")
    if not result.ok:
        raise BackupError(
            f"{target}: the archive failed verification (tar -tzf){_output_tail(result)}"
        )
    return f"tar -tzf: {_count(len(result.stdout.splitlines()), 'entry', 'entries')}"


async def _checksum(session: _Session, path: str) -> tuple[str, int]:
    result = await session.check(["sha256sum", path], "sha256sum")
    digest = result.stdout.split(maxsplit=1)[0].lstrip("\\") if result.stdout.split() else ""
    if not _SHA256.match(digest):
        raise BackupError(f"{session.target}: sha256sum said {result.stdout[:100]!r}")
    size = await session.check(["stat", "-c", "%s", path], "stat")
    try:
        return digest, int(size.stdout.strip())
    except ValueError:
        raise BackupError(f"{session.target}: stat said {size.stdout[:100]!r}") from None


async def _copy_home(
    session: _Session,
    transfer: FileTransfer,
    remote_path: str,
    local_path: Path,
    sha256: str,
    size: int,
) -> None:
    def prepare() -> None:
        local_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    await asyncio.to_thread(prepare)
    watching = asyncio.create_task(_watch_copy(session, local_path, size))
    try:
        copied = await transfer.fetch(remote_path, local_path, timeout=session.left("the copy"))
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
    await asyncio.to_thread(os.chmod, local_path, 0o600)
    local_sha = await asyncio.to_thread(sha256_file, local_path)
    if local_sha != sha256 or copied != size:
        raise BackupError(
            f"{session.target}: the copy of {local_path.name} does not match the dump "
            f"({human_size(copied)}, sha256 {local_sha[:12]} here; {human_size(size)}, sha256 "
            f"{sha256[:12]} on the endpoint)"
        )


async def _watch_copy(session: _Session, local_path: Path, size: int) -> None:
    """Report the bytes copied so far, read from the size of the file being written (every
    transfer writes a temporary name beside ``local_path``), whatever the executor."""
    while True:
        await asyncio.sleep(COPY_POLL)
        done = await asyncio.to_thread(_bytes_written, local_path)
        await session.say(f"copying {human_size(done)} / {human_size(size)} to opsbot…")


def _bytes_written(local_path: Path) -> int:
    sizes = [0]
    for path in [local_path, *local_path.parent.glob(f".{local_path.name}.*.part")]:
        with contextlib.suppress(OSError):
            sizes.append(path.stat().st_size)
    return max(sizes)


# --------------------------------------------------------------------------- the index


def _parse_index(current: Versioned | None) -> list[BackupRecord]:
    if current is None:
        return []
    records = []
    for doc in current.value.get("records", []):
        try:
            records.append(BackupRecord.from_doc(doc))
        except TypeError:
            log.warning("skipping a malformed backup record: %r", doc)
    return records


async def _add_to_index(store: Store, record: BackupRecord, keep: int) -> list[BackupRecord]:
    """Insert ``record`` first; drop the same source's records beyond ``keep``; return those."""
    for _ in range(50):
        current = await store.get(INDEX_NAMESPACE, record.target)
        records = [r for r in _parse_index(current) if r.name != record.name]
        same = [r for r in records if r.kind == record.kind and r.source == record.source]
        pruned = same[max(0, keep - 1) :]
        kept = [record, *(r for r in records if r not in pruned)]
        doc: JSONDoc = {"records": [r.to_doc() for r in kept]}
        if current is None:
            if await store.create(INDEX_NAMESPACE, record.target, doc):
                return pruned
        elif await store.swap(INDEX_NAMESPACE, record.target, current.version, doc) is not None:
            return pruned
    raise BackupError(f"{record.target}: the backups index kept changing; try again")


async def _prune(session: _Session, pruned: list[BackupRecord], backups_dir: Path) -> None:
    """Delete pruned backups' files: only names opsbot made, only in its own directories."""
    remote = [r.remote_path for r in pruned if _ours(r, posixpath.basename(r.remote_path))]
    local: list[Path | None] = []
    for record in pruned:
        if record.local_path is None:
            continue
        path = Path(record.local_path)
        if path.parent == backups_dir / record.target and _ours(record, path.name):
            local.append(path)
    await _remove_files(session, remote, local)


def _ours(record: BackupRecord, name: str) -> bool:
    return name == record.name and name.startswith(f"{record.target}-{record.kind}-")


async def _remove_files(session: _Session, remote: list[str], local: list[Path | None]) -> None:
    """Best effort, with a budget of its own (the backup's may be spent)."""
    if remote:
        try:
            result = await session.executor.run(["rm", "-f", *remote], timeout=CLEANUP_TIMEOUT)
            if not result.ok:
                log.warning(
                    "%s: could not remove %s:%s", session.target, remote, _output_tail(result)
                )
        except Exception as exc:
            log.warning("%s: could not remove %s: %s", session.target, remote, exc)
    for path in local:
        if path is not None:
            try:
                await asyncio.to_thread(path.unlink, missing_ok=True)
            except OSError as exc:
                log.warning("%s: could not remove %s: %s", session.target, path, exc)


# --------------------------------------------------------------------------- restore


async def _ensure_remote_copy(session: _Session, record: BackupRecord) -> None:
    """Make sure the endpoint has the dump with the recorded checksum (push it if gone)."""
    result = await session.run(["sha256sum", record.remote_path], "sha256sum")
    if result.ok:
        digest = result.stdout.split(maxsplit=1)[0].lstrip("\\") if result.stdout else ""
        if digest != record.sha256:
            raise BackupError(
                f"{session.target}: {record.remote_path} changed since the backup (sha256 "
                f"{digest[:12]}, recorded {record.sha256[:12]}); refusing to restore it"
            )
        return
    if "No such file" not in result.stderr:
        raise BackupError(
            f"{session.target}: cannot read {record.remote_path}{_output_tail(result)}"
        )
    local = Path(record.local_path) if record.local_path else None
    if local is None or not await asyncio.to_thread(local.is_file):
        raise BackupError(
            f"{session.target}: {record.remote_path} is gone from the endpoint and opsbot has "
            "no local copy of it"
        )
    transfer = transfer_of(session.executor)
    if transfer is None:
        raise BackupError(
            f"{session.target}: {record.remote_path} is gone and {session.executor!r} cannot "
            "receive files"
        )
    if await asyncio.to_thread(sha256_file, local) != record.sha256:
        raise BackupError(f"{session.target}: the local copy {local} does not match its record")
    await session.say(f"{record.remote_path} is gone: sending opsbot's copy back…")
    directory = posixpath.dirname(record.remote_path) or "."
    await session.check(["mkdir", "-p", directory], f"creating {directory}")
    await transfer.push(local, record.remote_path, timeout=session.left("the upload"))
    sha256, _size = await _checksum(session, record.remote_path)
    if sha256 != record.sha256:
        await _remove_files(session, [record.remote_path], [])
        raise BackupError(f"{session.target}: the copy sent back does not match its record")


async def _restore(
    session: _Session, spec: Backup, record: BackupRecord, database: str | None
) -> str:
    path = record.remote_path
    what = f"{record.name} ({human_size(record.size)}, sha256 {record.sha256[:12]})"
    if isinstance(spec, PostgresBackup):
        db = database or spec.database
        await session.say(f"restoring {record.name} into database {db}…")
        await session.check(
            [
                *spec.pg_restore,
                "--clean",
                "--if-exists",
                "--no-owner",
                "--single-transaction",
                *_pg_connection(spec),
                f"--dbname={db}",
                path,
            ],
            f"pg_restore into {db}",
        )
        return f"restored {what} into database {db}"
    if isinstance(spec, SQLiteBackup):
        _check_remote_path(path, spec)
        await session.say(f"restoring {record.name} into {spec.path}…")
        result = await session.check(
            [*spec.sqlite3, spec.path, f".restore '{path}'"], f"sqlite3 .restore into {spec.path}"
        )
        if result.stderr.strip():
            raise BackupError(f"{session.target}: sqlite3 .restore failed{_output_tail(result)}")
        check = await session.run(
            [*spec.sqlite3, "-readonly", spec.path, "PRAGMA integrity_check"], "integrity_check"
        )
        if check.stdout.strip() != "ok":
            raise BackupError(
                f"{session.target}: {spec.path} after the restore fails "
                f"PRAGMA integrity_check{_output_tail(check)}"
            )
        return f"restored {what} into {spec.path} (integrity_check ok)"
    if isinstance(spec, FilesBackup):
        await session.say(f"extracting {record.name} into /…")
        await session.check(["tar", "-xzf", path, "-C", "/"], "tar -xzf")
        return f"extracted {what} into / ({' '.join(spec.paths)})"
    raise BackupError(f"cannot restore a {spec.type} backup")


# --------------------------------------------------------------------------- helpers


def _pg_connection(spec: PostgresBackup) -> list[str]:
    argv = []
    if spec.host is not None:
        argv += ["-h", spec.host]
    if spec.port is not None:
        argv += ["-p", str(spec.port)]
    if spec.user is not None:
        argv += ["-U", spec.user]
    return argv


def _file_name(target: str, kind: str, created: float, taken: set[str]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created))
    base, ext = f"{target}-{kind}-{stamp}", EXTENSIONS[kind]
    name, n = f"{base}.{ext}", 2
    while name in taken:  # two backups within one second
        name, n = f"{base}-{n}.{ext}", n + 1
    return name


def _check_target(name: str) -> None:
    if not re.match(NAME_PATTERN, name):
        raise BackupError(f"{name!r} is not a valid target name")


def _check_remote_path(path: str, spec: Backup) -> None:
    if path.startswith("-") or any(ord(c) < 32 or c == "\x7f" for c in path):
        raise BackupError(f"unsafe backup path {path!r} (check remote_dir)")
    if isinstance(spec, SQLiteBackup) and "'" in path:
        # The path is quoted inside a sqlite3 dot-command, where a quote cannot be escaped.
        raise BackupError(f"a sqlite backup path cannot contain a quote: {path!r}")


def _lock_name(target: str) -> str:
    return f"backup:{target}"


def _owner(what: str) -> str:
    """A unique lease owner that also tells a human who holds it."""
    started = time.strftime("%H:%M:%S UTC", time.gmtime())
    return (
        f"{what} since {started} on {socket.gethostname()}/{os.getpid()} #{uuid.uuid4().hex[:6]}"
    )


async def _release(store: Store, lock: str, owner: str) -> None:
    try:
        await asyncio.shield(store.release(lock, owner))
    except Exception:
        log.warning("could not release %s (it expires by itself)", lock, exc_info=True)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"


def _output_tail(result: ExecResult, limit: int = 400) -> str:
    text = (result.stderr.strip() or result.stdout.strip())[-limit:]
    status = "timed out" if result.timed_out else f"exit {result.exit_status}"
    return f" ({status}): {text}" if text else f" ({status})"
