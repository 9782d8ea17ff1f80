"""The test restore (``/backup TARGET verify``) against real PostgreSQL, sqlite3, redis-server and
tar, over the lab sshd or the local executor: what it reports, and that nothing is left behind.
"""

from __future__ import annotations

import sqlite3
import subprocess
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from opsbot.actions.backups.methods import run_backup
from opsbot.actions.backups.records import BackupError
from opsbot.actions.backups.verify import verify_restore
from opsbot.config import FilesBackup, RedisBackup, SQLiteBackup
from opsbot.reach.executors.docker import DockerEngine
from opsbot.reach.executors.local import LocalExecutor
from opsbot.reach.executors.ssh import SSHExecutor
from opsbot.state.store.sqlite import SQLiteStore
from tests.actions.test_backups import (
    chown_to_lab_user,
    files_spec,
    lab_dir,
    pg,
    pg_spec,
    ssh_executor,
    store,
)
from tests.lab.dockerd import DockerLab
from tests.lab.postgres import PostgresServer, postgres_bin_dir
from tests.lab.redis import RedisServer

__all__ = ["lab_dir", "ssh_executor", "store"]  # the backup tests' fixtures, shared
TARGET = "quizbot"


def scratch_left(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.startswith("opsbot-verify-")]


async def test_postgres_is_restored_into_a_scratch_database_counted_and_dropped(
    postgres_server: PostgresServer, ssh_executor: SSHExecutor, lab_dir: Path, store: SQLiteStore,
    tmp_path: Path,
) -> None:  # fmt: skip
    source = f"src_{uuid.uuid4().hex[:8]}"
    pg(postgres_server, "createdb", source)
    pg(postgres_server, "psql", "-d", source, "-v", "ON_ERROR_STOP=1", "-c",
       "CREATE TABLE items (id int PRIMARY KEY, name text);"
       "INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 1234) g;"
       'CREATE TABLE "Odd Name" (x int); CREATE SCHEMA billing;'
       "CREATE TABLE billing.payments (id int);"
       "INSERT INTO billing.payments VALUES (1), (2);")  # fmt: skip
    spec = pg_spec(
        postgres_server, source, lab_dir / "pg", psql=[str(postgres_bin_dir() / "psql")]
    )
    record = await run_backup(TARGET, spec, ssh_executor, store, tmp_path / "backups")
    said: list[str] = []

    async def progress(line: str) -> None:
        said.append(line)

    report = await verify_restore(TARGET, spec, record, ssh_executor, store=store,
                                  progress=progress)  # fmt: skip

    lines = report.splitlines()
    assert lines[0].startswith(f"test restore of {record.name} (") and lines[0].endswith(": ok")
    assert "3 tables, 1236 rows" in lines[1] and "(dropped after)" in lines[1]
    counts = {line.strip().rsplit(None, 1)[0].strip(): line.split()[-1] for line in lines[2:]}
    assert counts == {"billing.payments": "2", 'public."Odd Name"': "0", "public.items": "1234"}
    assert any(line.startswith("creating scratch database opsbot_verify_") for line in said)
    scratch_sql = "SELECT datname FROM pg_database WHERE datname LIKE 'opsbot_verify_%'"
    databases = pg(postgres_server, "psql", "-d", source, "-At", "-c", scratch_sql)
    assert databases.strip() == ""  # the scratch database is gone
    assert pg(postgres_server, "psql", "-d", source, "-At", "-c",
              "SELECT count(*) FROM items").strip() == "1234"  # fmt: skip


async def test_sqlite_is_restored_into_a_scratch_file_and_counted(
    ssh_executor: SSHExecutor, lab_dir: Path, store: SQLiteStore, tmp_path: Path
) -> None:
    db = lab_dir / "faceswap.db"
    with closing(sqlite3.connect(db)) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.executemany("INSERT INTO users (name) VALUES (?)", [("ann",), ("ben",), ("cy",)])
        conn.execute('CREATE TABLE "it\'s ""odd""" (x)')
        conn.execute("CREATE TABLE payments (amount INTEGER)")
        conn.execute("INSERT INTO payments VALUES (5)")
        conn.commit()
    chown_to_lab_user(db)
    spec = SQLiteBackup(type="sqlite", path=str(db), remote_dir=str(lab_dir / "bk"))
    record = await run_backup(TARGET, spec, ssh_executor, store, tmp_path / "backups")

    report = await verify_restore(TARGET, spec, record, ssh_executor, store=store)

    lines = report.splitlines()
    assert "integrity_check ok: 3 tables, 4 rows" in lines[1]
    rows = {line.strip().rsplit(None, 1)[0].strip(): line.split()[-1] for line in lines[2:]}
    assert rows == {'it\'s "odd"': "0", "payments": "1", "users": "3"}
    assert scratch_left(lab_dir / "bk") == []


async def test_redis_is_loaded_by_a_scratch_server_and_its_keys_reported(
    redis_server: RedisServer, store: SQLiteStore, tmp_path: Path
) -> None:
    cli = ["redis-cli", "-h", redis_server.host, "-p", str(redis_server.port)]
    # The report samples the first ten names in sorted order: "0-" sorts before the keys other
    # tests left in the session's redis, so the sample holds ours whatever ran before.
    prefix = f"0-verify-{uuid.uuid4().hex[:6]}"
    for i in range(3):
        subprocess.run([*cli, "SET", f"{prefix}:{i}", "v"], check=True, capture_output=True)
    directory, filename = (
        subprocess.run(
            [*cli, "CONFIG", "GET", key], check=True, capture_output=True, text=True
        ).stdout.splitlines()[1]
        for key in ("dir", "dbfilename")
    )
    spec = RedisBackup(
        type="redis", dump_path=f"{directory}/{filename}", redis_cli=cli,
        remote_dir=str(tmp_path / "remote"),
    )  # fmt: skip
    record = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    total = int(subprocess.run([*cli, "DBSIZE"], check=True, capture_output=True).stdout)

    report = await verify_restore(TARGET, spec, record, LocalExecutor(), store=store)

    assert f"loaded by a scratch redis-server: {total} key" in report
    assert f"db0:keys={total}," in report
    assert f"{prefix}:" in report or total > 50  # a few key names, as a sample
    assert scratch_left(tmp_path / "remote") == []  # socket, pid file and copy removed
    left = subprocess.run(["pgrep", "-f", str(tmp_path / "remote")], capture_output=True)
    assert left.returncode == 1  # no scratch redis-server left running


async def test_files_are_extracted_into_a_scratch_directory_and_listed(
    store: SQLiteStore, tmp_path: Path
) -> None:
    spec = files_spec(tmp_path)
    record = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    (tmp_path / "data" / "a.txt").write_text("changed since\n")  # the live data is not touched

    report = await verify_restore(TARGET, spec, record, LocalExecutor(), store=store)

    assert "extracted into a scratch directory: 2 files, " in report, report
    assert " KiB on disk" in report
    data = str(tmp_path / "data")
    listed = [line.strip() for line in report.splitlines()[2:]]
    assert listed == [f"{data}/a.txt", f"{data}/sub/b.bin"]
    assert (tmp_path / "data" / "a.txt").read_text() == "changed since\n"
    assert scratch_left(tmp_path / "remote") == []


async def test_a_dump_changed_since_the_backup_is_not_verified(
    store: SQLiteStore, tmp_path: Path
) -> None:
    spec = files_spec(tmp_path)
    record = await run_backup(TARGET, spec, LocalExecutor(), store, tmp_path / "backups")
    Path(record.remote_path).write_bytes(b"not the archive")
    with pytest.raises(BackupError, match="changed since the backup"):
        await verify_restore(TARGET, spec, record, LocalExecutor(), store=store)


async def test_files_in_a_busybox_container_are_verified_with_busybox_tools(
    docker_lab: DockerLab, store: SQLiteStore, tmp_path: Path
) -> None:
    name = f"verify-{uuid.uuid4().hex[:8]}"
    with closing(docker_lab.client()) as client:
        client.containers.run(
            docker_lab.image_v1, ["sleep", "3600"], name=name, detach=True, init=True,
            network_mode="none",
        )  # fmt: skip
    engine = DockerEngine("lab", docker_lab.base_url)
    try:
        executor = engine.executor(name)
        spec = FilesBackup(type="files", paths=["/www", "/VERSION"], remote_dir="/tmp/bk")
        record = await run_backup(TARGET, spec, executor, store, tmp_path / "backups")
        report = await verify_restore(TARGET, spec, record, executor, store=store)
        left = await executor.run(["ls", "/tmp/bk"], timeout=10)
    finally:
        await engine.close()
        with closing(docker_lab.client()) as client:
            client.containers.get(name).remove(force=True)
    assert "extracted into a scratch directory: 2 files, " in report, report
    assert [line.strip() for line in report.splitlines()[2:]] == ["/VERSION", "/www/health"]
    assert left.stdout.split() == [record.name]  # the scratch directory is gone
