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
   executor's own connection (:mod:`opsbot.reach.executors.transfer`), whose SHA-256 must match;
5. the size compared with the previous backup of the same thing (``shrunk`` below
   ``shrink_warning`` of it: a half-empty dump is the classic silent failure);
6. the record stored, and backups beyond the newest ``keep`` deleted (remote and local).

State lives in the store (:mod:`opsbot.actions.backups.records`). A lease ``backup:<target>``
keeps two backups (or a backup and a restore) of one target from running at once, across
replicas.

A backup that fails at any step leaves nothing behind: its remote and local files are removed
and nothing is recorded.

The runbooks' "test restore" is :mod:`opsbot.actions.backups.verify`.

Nothing here knows about Telegram; ``progress`` is an optional async callback taking one line.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
import re
import time
from collections.abc import Callable
from pathlib import Path

from opsbot.actions.backups.home import _checksum, _copy_home
from opsbot.actions.backups.records import (
    HISTORY_KEEP,
    HISTORY_NAMESPACE,
    BackupError,
    BackupRecord,
    _add_to_index,
    _count,
    _file_name,
    _ours,
    describe,
    human_size,
    list_backups,
    source_of,
)
from opsbot.actions.backups.session import (
    REDIS_POLL_INTERVAL,
    Progress,
    _check_remote_path,
    _check_target,
    _holding_lock,
    _output_tail,
    _pg_connection,
    _remove_files,
    _Session,
)
from opsbot.config import (
    Backup,
    FilesBackup,
    PostgresBackup,
    RedisBackup,
    SQLiteBackup,
)
from opsbot.reach.executors import Executor
from opsbot.reach.executors.transfer import FileTransfer, sha256_file, transfer_of
from opsbot.render import plural
from opsbot.state.store import Store

log = logging.getLogger(__name__)



_DATABASE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_$.-]{0,62}$")


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
    async with _holding_lock(store, target_name, f"{spec.type} backup", spec.timeout):
        session = _Session(target_name, executor, spec.timeout, progress)
        return await _backup(session, spec, store, backups_dir, transfer, now)


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
    async with _holding_lock(store, target_name, f"restore of {record.name}", spec.timeout):
        session = _Session(target_name, executor, spec.timeout, progress)
        await _ensure_remote_copy(session, record)
        return await _restore(session, spec, record, database)


REDIS_RESTORE = (
    "restoring redis needs the server stopped: redis-server reads its RDB file only at "
    "start-up and writes its own dataset over it at the next save or shutdown, so a dump "
    "copied under a running server is lost. Stop redis, copy {path} over {dump}, then start "
    "it again (with AOF enabled, also move the appendonly files aside)."
)


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
        await session.say(f"removing {plural(len(pruned), 'old backup')}…")
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


