"""Verified backups against real components: postgres, sqlite and SFTP over the lab sshd,
redis and tar through the local executor, file transfer over local, SSH and Docker. No mocks.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import pwd
import sqlite3
import subprocess
import tarfile
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path

import pytest

from opsbot.actions.backups.methods import restore_backup, run_backup
from opsbot.actions.backups.records import (
    BackupError,
    BackupRecord,
    describe,
    human_size,
    list_backups,
)
from opsbot.config import FilesBackup, PostgresBackup, RedisBackup, SQLiteBackup
from opsbot.reach.executors import Executor
from opsbot.reach.executors.docker import DockerEngine
from opsbot.reach.executors.local import LocalExecutor
from opsbot.reach.executors.ssh import SSHExecutor, SSHPool
from opsbot.reach.executors.transfer import TransferError, transfer_of
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import lab_ssh_host
from tests.lab.dockerd import DockerLab, sleeping_container
from tests.lab.postgres import PostgresServer, postgres_bin_dir
from tests.lab.redis import RedisServer
from tests.lab.sshd import LAB_USER, SSHServer

TARGET = "quizbot"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def store(sqlite_store: SQLiteStore) -> SQLiteStore:
    return sqlite_store


@pytest.fixture
def ssh_executor(ssh_pool: SSHPool, sshd_server: SSHServer) -> SSHExecutor:
    return ssh_pool.executor(lab_ssh_host(sshd_server))


def chown_to_lab_user(*paths: Path) -> None:
    lab = pwd.getpwnam(LAB_USER)
    for path in paths:
        os.chown(path, lab.pw_uid, lab.pw_gid)


@pytest.fixture
def lab_dir(sshd_server: SSHServer) -> Path:
    """A fresh directory the SSH lab user owns (as the endpoint's working area)."""
    path = sshd_server.workdir / f"bk-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    chown_to_lab_user(path)
    return path


def sha256_of(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def files_spec(tmp_path: Path, **changes: object) -> FilesBackup:
    data = tmp_path / "data"
    if not data.exists():
        (data / "sub").mkdir(parents=True)
        (data / "a.txt").write_text("alpha\n")
        (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 64)
    options: dict[str, object] = {
        "type": "files",
        "paths": [str(data)],
        "remote_dir": str(tmp_path / "remote"),
        **changes,
    }
    return FilesBackup.model_validate(options)


# --------------------------------------------------------------------------- postgres


def pg(server: PostgresServer, tool: str, *args: str) -> str:
    argv = [str(postgres_bin_dir() / tool), "-h", server.host, "-p", str(server.port),
            "-U", server.user, *args]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def pg_spec(
    server: PostgresServer, database: str, remote_dir: Path, **changes: object
) -> PostgresBackup:
    bindir = postgres_bin_dir()
    options: dict[str, object] = {
        "type": "postgres",
        "database": database,
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "pg_dump": [str(bindir / "pg_dump")],
        "pg_restore": [str(bindir / "pg_restore")],
        "remote_dir": str(remote_dir),
        **changes,
    }
    return PostgresBackup.model_validate(options)


ROWS_SQL = "SELECT id, name FROM items ORDER BY id"


async def test_postgres_over_ssh_verified_listed_and_restored_into_a_scratch_db(
    postgres_server: PostgresServer,
    ssh_executor: SSHExecutor,
    lab_dir: Path,
    store: SQLiteStore,
    tmp_path: Path,
) -> None:
    source, scratch = f"src_{uuid.uuid4().hex[:8]}", f"scratch_{uuid.uuid4().hex[:8]}"
    pg(postgres_server, "createdb", source)
    pg(postgres_server, "psql", "-d", source, "-v", "ON_ERROR_STOP=1", "-c",
       "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"
       "INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'drei ✓');")  # fmt: skip
    spec = pg_spec(postgres_server, source, lab_dir / "pg")
    said: list[str] = []

    async def progress(line: str) -> None:
        said.append(line)

    record = await run_backup(TARGET, spec, ssh_executor, store, tmp_path / "backups",
                              progress=progress)  # fmt: skip

    assert record.name.startswith(f"{TARGET}-postgres-") and record.name.endswith(".dump")
    assert record.verified.startswith("pg_restore --list: ")
    assert record.verified.endswith(", 1 table")
    remote = Path(record.remote_path)
    assert remote.parent == lab_dir / "pg"
    assert remote.stat().st_uid == pwd.getpwnam(LAB_USER).pw_uid  # dumped as the SSH user
    assert remote.read_bytes()[:5] == b"PGDMP"
    assert record.size == remote.stat().st_size
    assert record.sha256 == sha256_of(remote)
    assert record.local_path == str(tmp_path / "backups" / TARGET / record.name)
    assert sha256_of(record.local_path) == record.sha256
    assert Path(record.local_path).stat().st_mode & 0o777 == 0o600
    assert record.previous_size is None and not record.shrunk
    assert said[0].startswith(f"dumping database {source}") and said[-1] == describe(record)

    assert await list_backups(TARGET, store) == [record]

    pg(postgres_server, "createdb", scratch)
    message = await restore_backup(TARGET, spec, record, ssh_executor, database=scratch,
                                   store=store)  # fmt: skip
    assert message.startswith(f"restored {record.name}") and f"database {scratch}" in message
    expected = pg(postgres_server, "psql", "-d", source, "-At", "-c", ROWS_SQL)
    assert pg(postgres_server, "psql", "-d", scratch, "-At", "-c", ROWS_SQL) == expected
    assert expected.splitlines() == ["1|one", "2|two", "3|drei ✓"]


async def test_a_corrupted_dump_fails_verification_and_is_removed(
    postgres_server: PostgresServer, store: SQLiteStore, tmp_path: Path
) -> None:
    # A "pg_dump" that writes garbage to its -f argument: $1=-Fc $2=-f $3=PATH.
    spec = pg_spec(postgres_server, postgres_server.dbname, tmp_path / "remote",
                   pg_dump=["sh", "-c", 'printf "PGDMP but not really" > "$3"', "sh"])  # fmt: skip
    with pytest.raises(BackupError, match=r"failed verification \(pg_restore --list\)"):
        await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    assert list((tmp_path / "remote").iterdir()) == []
    assert not (tmp_path / "backups" / TARGET).exists() or not any(
        (tmp_path / "backups" / TARGET).iterdir()
    )
    assert await list_backups(TARGET, store) == []


async def test_a_dump_that_outlives_the_timeout_is_ended_and_removed(
    postgres_server: PostgresServer, store: SQLiteStore, tmp_path: Path
) -> None:
    spec = pg_spec(postgres_server, postgres_server.dbname, tmp_path / "remote", timeout=1.0,
                   pg_dump=["sh", "-c", 'echo partial > "$3"; exec sleep 30', "sh"])  # fmt: skip
    with pytest.raises(BackupError, match=r"pg_dump of lab timed out \(budget 1 s\)"):
        await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    assert list((tmp_path / "remote").iterdir()) == []
    # The lease was released: the next backup is not refused as "already running".
    ok = pg_spec(postgres_server, postgres_server.dbname, tmp_path / "remote")
    record = await run_backup(TARGET, ok, LocalExecutor(), store, tmp_path / "backups")
    assert record.verified.startswith("pg_restore --list")


# --------------------------------------------------------------------------- sqlite


async def test_sqlite_over_ssh_integrity_checked_and_restored_from_the_local_copy(
    ssh_executor: SSHExecutor, lab_dir: Path, store: SQLiteStore, tmp_path: Path
) -> None:
    db_path = lab_dir / "app.db"
    with closing(sqlite3.connect(db_path)) as db:
        db.executescript(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);"
            "CREATE TABLE notes (body BLOB);"
            "INSERT INTO users (name) VALUES ('ann'), ('bob'), ('cy');"
        )
    chown_to_lab_user(db_path)
    spec = SQLiteBackup(type="sqlite", path=str(db_path), remote_dir=str(lab_dir / "dumps"))

    record = await run_backup(TARGET, spec, ssh_executor, store, tmp_path / "backups")

    assert record.name.endswith(".sqlite3")
    assert record.verified == "integrity_check ok, 2 tables"
    assert sha256_of(record.remote_path) == record.sha256
    assert record.local_path is not None and sha256_of(record.local_path) == record.sha256
    with closing(sqlite3.connect(f"file:{record.remote_path}?mode=ro", uri=True)) as copy:
        assert copy.execute("SELECT count(*) FROM users").fetchone() == (3,)

    # Damage the live database and lose the dump on the endpoint: the restore sends opsbot's
    # own copy back over SFTP, checks it, then .restore's it under SQLite's locks.
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("DELETE FROM users")
        db.commit()
    Path(record.remote_path).unlink()
    message = await restore_backup(TARGET, spec, record, ssh_executor, store=store)

    assert "integrity_check ok" in message
    assert sha256_of(record.remote_path) == record.sha256
    with closing(sqlite3.connect(db_path)) as db:
        assert db.execute("SELECT name FROM users ORDER BY id").fetchall() == [
            ("ann",), ("bob",), ("cy",)
        ]  # fmt: skip


async def test_a_big_copy_home_reports_bytes_done(
    ssh_executor: SSHExecutor, lab_dir: Path, store: SQLiteStore, tmp_path: Path
) -> None:
    """The copy home over SFTP says how far it got while it runs, then the result."""
    db_path = lab_dir / "big.db"
    with closing(sqlite3.connect(db_path)) as db:
        db.execute("CREATE TABLE blobs (b BLOB)")
        db.executemany("INSERT INTO blobs VALUES (randomblob(1048576))", [()] * 96)
        db.commit()
    chown_to_lab_user(db_path)
    spec = SQLiteBackup(type="sqlite", path=str(db_path), remote_dir=str(lab_dir / "dumps"))
    said: list[str] = []

    async def progress(line: str) -> None:
        said.append(line)

    record = await run_backup(TARGET, spec, ssh_executor, store, tmp_path / "backups",
                              progress=progress)  # fmt: skip

    total = human_size(record.size)
    copying = [line for line in said if line.startswith("copying ")]
    assert copying[0] == f"copying 0 B / {total} to opsbot…"
    done = [line.split(" / ")[0] for line in copying[1:]]
    assert any(d not in ("copying 0 B", f"copying {total}") for d in done), said
    assert said[-1] == describe(record)
    for path in (db_path, Path(record.remote_path), Path(record.local_path or db_path)):
        path.unlink(missing_ok=True)  # ~300 MB of scratch


async def test_sqlite_path_with_a_quote_is_refused(store: SQLiteStore, tmp_path: Path) -> None:
    spec = SQLiteBackup(type="sqlite", path=str(tmp_path / "x.db"),
                        remote_dir=str(tmp_path / "it's"))  # fmt: skip
    with pytest.raises(BackupError, match="cannot contain a quote"):
        await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")


# --------------------------------------------------------------------------- files


async def test_files_backup_via_local_executor_and_restore(
    store: SQLiteStore, tmp_path: Path
) -> None:
    spec = files_spec(tmp_path)
    record = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")

    assert record.name.endswith(".tar.gz")
    assert record.verified == "tar -tzf: 4 entries"  # data/, a.txt, sub/, sub/b.bin
    with tarfile.open(record.remote_path) as tar:
        names = sorted(tar.getnames())
    assert names[-1].endswith("data/sub/b.bin")
    assert record.local_path is not None and sha256_of(record.local_path) == record.sha256

    (tmp_path / "data" / "a.txt").write_text("overwritten\n")
    message = await restore_backup(TARGET, spec, record, LocalExecutor())
    assert message.startswith(f"extracted {record.name}")
    assert (tmp_path / "data" / "a.txt").read_text() == "alpha\n"


async def test_restore_refuses_a_dump_that_changed_since(
    store: SQLiteStore, tmp_path: Path
) -> None:
    spec = files_spec(tmp_path)
    record = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    with open(record.remote_path, "ab") as dump:
        dump.write(b"tampered")
    (tmp_path / "data" / "a.txt").write_text("current\n")
    with pytest.raises(BackupError, match="changed since the backup"):
        await restore_backup(TARGET, spec, record, LocalExecutor(), store=store)
    assert (tmp_path / "data" / "a.txt").read_text() == "current\n"
    with pytest.raises(BackupError, match="not a files backup of otherbot"):
        await restore_backup("otherbot", spec, record, LocalExecutor())


async def test_retention_keeps_the_newest_n(store: SQLiteStore, tmp_path: Path) -> None:
    spec = files_spec(tmp_path, keep=2)
    clock = iter([1_800_000_000.0 + 60 * i for i in range(4)])
    records = [
        await run_backup(
            TARGET, spec, LocalExecutor(), store, tmp_path / "backups", now=lambda: next(clock)
        )
        for _ in range(3)
    ]
    assert [r.name for r in await list_backups(TARGET, store)] == [
        records[2].name, records[1].name
    ]  # fmt: skip
    assert records[0].name == f"{TARGET}-files-20270115-080000.tar.gz"
    assert not Path(records[0].remote_path).exists()
    assert records[0].local_path is not None and not Path(records[0].local_path).exists()
    for kept in records[1:]:
        assert Path(kept.remote_path).exists()
        assert kept.local_path is not None and Path(kept.local_path).exists()
    history = await store.tail("backups", TARGET, 10)
    assert [h["name"] for h in history] == [r.name for r in reversed(records)]


async def test_a_dump_that_shrank_by_half_is_flagged(store: SQLiteStore, tmp_path: Path) -> None:
    spec = files_spec(tmp_path)
    big = tmp_path / "data" / "big.bin"
    big.write_bytes(os.urandom(256 * 1024))  # incompressible
    moment = 1_800_000_000.0  # both in the same second: the second name gets a suffix
    first = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups",
                             now=lambda: moment)  # fmt: skip
    big.write_bytes(os.urandom(1024))
    second = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups",
                              now=lambda: moment)  # fmt: skip

    assert second.name == first.name.replace(".tar.gz", "-2.tar.gz")
    assert first.previous_size is None and not first.shrunk
    assert "first backup" in describe(first)
    assert second.previous_size == first.size and second.shrunk
    percent = round((1 - second.size / first.size) * 100)
    assert describe(second) == (
        f"{second.name} · {human_size(second.size)} · sha256 {second.sha256[:12]} · "
        f"−{percent}% ⚠️ shrank"
    )
    third = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    assert not third.shrunk and third.previous_size == second.size


async def test_two_backups_of_one_target_never_run_at_once(
    store: SQLiteStore, tmp_path: Path
) -> None:
    spec = files_spec(tmp_path)
    results = await asyncio.gather(
        run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups"),
        run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups"),
        return_exceptions=True,
    )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1 and isinstance(errors[0], BackupError)
    assert str(errors[0]).startswith(f"a backup of {TARGET} is already running (files backup")
    assert sum(isinstance(r, BackupRecord) for r in results) == 1
    # The lease was given back: the next one runs.
    await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    assert len(await list_backups(TARGET, store)) == 2


# --------------------------------------------------------------------------- redis


def redis_cli(server: RedisServer, *args: str) -> str:
    argv = ["redis-cli", "-h", server.host, "-p", str(server.port), *args]
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=10).stdout


async def test_redis_bgsave_copy_via_local_executor(
    redis_server: RedisServer, store: SQLiteStore, tmp_path: Path
) -> None:
    key = f"opsbot-backup-{uuid.uuid4().hex[:8]}"
    redis_cli(redis_server, "SET", key, "value")
    directory = redis_cli(redis_server, "CONFIG", "GET", "dir").splitlines()[1]
    filename = redis_cli(redis_server, "CONFIG", "GET", "dbfilename").splitlines()[1]
    spec = RedisBackup(
        type="redis",
        dump_path=f"{directory}/{filename}",
        redis_cli=["redis-cli", "-h", redis_server.host, "-p", str(redis_server.port)],
        remote_dir=str(tmp_path / "remote"),
    )
    # Twice within a second: LASTSAVE alone could not tell the second save from the first.
    first = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    second = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")

    for record in (first, second):
        assert record.name.endswith(".rdb")
        assert record.verified.startswith("RDB header REDIS")
        assert record.local_path is not None
        data = Path(record.local_path).read_bytes()
        assert data.startswith(b"REDIS") and key.encode() in data
    with pytest.raises(BackupError, match="restoring redis needs the server stopped"):
        await restore_backup(TARGET, spec, second, LocalExecutor(), store=store)


# --------------------------------------------------------------------------- transfer


@pytest.fixture(scope="module")
def transfer_container(docker_lab: DockerLab) -> Iterator[str]:
    with sleeping_container(docker_lab, "opsbot-transfer") as container:
        yield container.name


@pytest.fixture
async def endpoint(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Executor, str]]:
    """(executor, a writable directory on its side) for local, ssh and docker."""
    if request.param == "local":
        (tmp_path / "far").mkdir()
        yield LocalExecutor(), str(tmp_path / "far")
    elif request.param == "ssh":
        executor = request.getfixturevalue("ssh_executor")
        yield executor, str(request.getfixturevalue("lab_dir"))
    else:
        lab: DockerLab = request.getfixturevalue("docker_lab")
        container = request.getfixturevalue("transfer_container")
        engine = DockerEngine("lab", lab.base_url, timeout=30)
        yield engine.executor(container), "/tmp"
        await engine.close()


@pytest.mark.parametrize("endpoint", ["local", "ssh", "docker"], indirect=True)
async def test_binary_round_trip(endpoint: tuple[Executor, str], tmp_path: Path) -> None:
    executor, far = endpoint
    transfer = transfer_of(executor)
    assert transfer is not None
    payload = os.urandom(9 * 1024 * 1024 + 123) + b"\x00\xff\xfe not utf-8 \x80"
    (tmp_path / "out.bin").write_bytes(payload)
    remote = f"{far}/blob-{uuid.uuid4().hex[:8]}.bin"

    assert await transfer.push(tmp_path / "out.bin", remote, timeout=30) == len(payload)
    listed = await executor.run(["sha256sum", remote], timeout=10)
    assert listed.stdout.split()[0] == hashlib.sha256(payload).hexdigest()
    assert await transfer.fetch(remote, tmp_path / "back.bin", timeout=30) == len(payload)
    assert (tmp_path / "back.bin").read_bytes() == payload
    # Pushing again replaces the file; nothing temporary is left beside it.
    (tmp_path / "out.bin").write_bytes(b"small")
    assert await transfer.push(tmp_path / "out.bin", remote, timeout=30) == 5
    assert await transfer.fetch(remote, tmp_path / "back.bin", timeout=30) == 5
    assert (tmp_path / "back.bin").read_bytes() == b"small"
    leftovers = await executor.run(["ls", "-a", far], timeout=10)
    assert ".part" not in leftovers.stdout

    with pytest.raises(TransferError):
        await transfer.fetch(f"{far}/missing.bin", tmp_path / "missing.bin", timeout=30)
    assert not any(p.name.endswith(".part") or p.name == "missing.bin" for p in tmp_path.iterdir())


def test_transfer_of_an_executor_without_file_transfer() -> None:
    class Plain:
        async def run(self, argv: object, *, timeout: float, stdin: bytes | None = None) -> None:
            raise NotImplementedError

    assert transfer_of(Plain()) is None
    assert transfer_of(LocalExecutor()) is not None
