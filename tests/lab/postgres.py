"""A real PostgreSQL cluster (initdb + pg_ctl as the `postgres` OS user) on a loopback port.

The cluster lives in /tmp/opsbot-pg-XXXX owned by postgres (pytest's tmp dirs are 0700 root,
which the postgres user cannot enter); the server log is copied into `tmp_path` on teardown.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.ports import LabError, free_port, log_tail, require_binary, run_logged, wait_until


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str
    dbname: str
    dsn: str


def postgres_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/N/bin, else the dir of `initdb` on PATH."""
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()]
    numbered = [p for p in candidates if re.fullmatch(r"\d+", p.parent.name)]
    if numbered:
        return max(numbered, key=lambda p: int(p.parent.name))
    initdb = shutil.which("initdb")
    if initdb is None:
        raise LabError(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: install the Debian package "
            "'postgresql' (apt-get install -y postgresql)"
        )
    return Path(initdb).resolve().parent


def _accepts(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        return True


@contextmanager
def start_postgres(tmp_path: Path) -> Iterator[PostgresServer]:
    if os.geteuid() != 0:
        raise LabError("the postgres lab must run as root (it runs initdb as user postgres)")
    bindir = postgres_bin_dir()
    runuser = require_binary("runuser", "util-linux")
    try:
        pg_user = pwd.getpwnam("postgres")
    except KeyError:
        raise LabError(
            "OS user 'postgres' missing: install the Debian package 'postgresql'"
        ) from None
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "postgres-setup.log"
    root = Path(tempfile.mkdtemp(prefix="opsbot-pg-", dir="/tmp"))
    data = root / "data"
    server_log = root / "server.log"
    port = free_port()
    as_pg = [runuser, "-u", "postgres", "--"]
    pg_ctl = str(bindir / "pg_ctl")
    try:
        os.chown(root, pg_user.pw_uid, pg_user.pw_gid)
        root.chmod(0o700)
        run_logged(
            [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-locale", "--no-sync"],
            log, "initdb", cwd=root,
        )  # fmt: skip
        options = (
            f"-p {port} -k {root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        try:
            run_logged(
                [*as_pg, pg_ctl, "-D", str(data), "-l", str(server_log), "-o", options,
                 "-w", "-t", "60", "start"],
                log, "pg_ctl start", cwd=root,
            )  # fmt: skip
        except LabError as exc:
            raise LabError(
                f"{exc}\n--- tail of {server_log} ---\n{log_tail(server_log)}"
            ) from None
        wait_until(lambda: _accepts(port), what="postgres", log=server_log, timeout=30)
        run_logged(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres",
             "lab"],
            log, "createdb lab",
        )  # fmt: skip
        yield PostgresServer(
            host="127.0.0.1",
            port=port,
            user="postgres",
            dbname="lab",
            dsn=f"postgresql://postgres@127.0.0.1:{port}/lab",
        )
    finally:
        try:
            if (data / "postmaster.pid").exists():
                run_logged(
                    [*as_pg, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
                    log, "pg_ctl stop", cwd=root,
                )  # fmt: skip
        finally:
            if server_log.exists():
                shutil.copy2(server_log, tmp_path / "postgres.log")
            shutil.rmtree(root, ignore_errors=True)
