"""The embedded store: one SQLite file under the data dir, for a single replica.

Every call is one ``BEGIN IMMEDIATE`` transaction on the store's one connection, run where it
costs least:

* inline, on the event loop's thread, when nothing else is using the connection: a call in
  WAL mode without fsync takes tens of microseconds, less than handing it to a thread (an
  alert sent on its own was waiting ~0.3 ms per hand-over on a busy 2-core machine);
* on the store's worker thread otherwise: while another process on the same file (the CLI)
  holds the write lock (inline calls never wait for it: ``busy_timeout`` is 0 there, 5 s on
  the thread), while the thread checkpoints the WAL (every ``CHECKPOINT_EVERY`` inline
  commits, so the fsyncs of a checkpoint never stall the loop), and for calls that arrive
  meanwhile, which share one transaction (group commit). A cancelled caller never leaves a
  half-used connection behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar, cast

from opsbot.state.store import (
    SCAN_PAGE,
    Append,
    Expect,
    ExpectScan,
    JSONDoc,
    Op,
    Versioned,
    check_ops,
)
from opsbot.state.store import sqlite_sql as sql
from opsbot.state.store.updating import Updating

log = logging.getLogger(__name__)

T = TypeVar("T")
Work = Callable[[sqlite3.Connection, float], object]
CHECKPOINT_EVERY = 500  # inline commits between two WAL checkpoints on the thread
THREAD_BUSY_MS = 5000  # how long the thread waits for another process's write lock
SETUP_RETRY_S = 0.01  # between two tries to prepare a connection another one is preparing

_Waiter = asyncio.Future[object]


def _settle(waiter: _Waiter, outcome: tuple[bool, object]) -> None:
    if waiter.done():  # the caller was cancelled
        return
    ok, value = outcome
    if ok:
        waiter.set_result(value)
    else:
        assert isinstance(value, BaseException)
        waiter.set_exception(value)


class _Conflict(Exception):
    """A commit's condition did not hold: its savepoint is rolled back."""


class SQLiteStore(Updating):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opsbot-sqlite")
        self._db: sqlite3.Connection | None = None
        self._closed = False
        # Group commit: operations queued while the thread is busy share one transaction.
        self._queue_lock = threading.Lock()
        self._queued: list[tuple[Work, _Waiter]] = []
        self._flushing = False  # the thread owns the connection
        self._flush_task: asyncio.Future[None] | None = None
        self._commits = 0  # since the last WAL checkpoint
        self._busy_ms = THREAD_BUSY_MS

    def _connect(self) -> sqlite3.Connection:
        """A prepared connection. Two stores opening a new file at once can collide where the
        busy timeout does not help (switching a rollback-journal file to WAL upgrades a shared
        lock, which SQLite refuses at once rather than deadlock): the loser retries briefly.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + THREAD_BUSY_MS / 1000
        while True:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            try:
                self._prepare(db)
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(SETUP_RETRY_S)

    @staticmethod
    def _prepare(db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA busy_timeout = {THREAD_BUSY_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # the thread checkpoints (_flush)
        # In WAL mode NORMAL stays consistent after a crash and fsyncs only at checkpoints; a
        # power cut may lose the last commits. FULL made an alert storm fsync-bound (~1.5 ms a
        # write), too slow to record thousands of alerts a second.
        db.execute("PRAGMA synchronous = NORMAL")
        db.executescript(sql.SCHEMA)
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        db.execute("DELETE FROM docs WHERE expires_at <= ?", (now,))
        db.execute("DELETE FROM locks WHERE expires_at <= ?", (now,))
        # Counted afresh: a file written before log_sizes existed has logs but no sizes.
        db.execute("DELETE FROM log_sizes")
        db.execute(
            "INSERT INTO log_sizes"
            " SELECT namespace, key, count(*) FROM logs GROUP BY namespace, key"
        )
        db.execute("COMMIT")

    async def _run(self, work: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``work(db, now)`` atomically: inline when the connection is free, else queued
        for the store's thread, where operations that arrive while it is busy are committed
        together (each in its own savepoint, so one failing rolls back only itself).
        """
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        with self._queue_lock:
            inline = not self._flushing and self._db is not None
            self._flushing = inline  # held while inline, so the thread never starts meanwhile
        if inline:
            try:
                done, value = self._inline(work)
            finally:
                checkpoint = self._commits >= CHECKPOINT_EVERY
                with self._queue_lock:
                    self._flushing = checkpoint  # then the thread takes the connection over
                if checkpoint:
                    self._start_flush(loop)
            if done:
                return value
        waiter: _Waiter = loop.create_future()
        with self._queue_lock:
            self._queued.append((work, waiter))
            start = not self._flushing
            self._flushing = True
        if start:
            self._start_flush(loop)
        return cast(T, await waiter)

    def _busy_timeout(self, db: sqlite3.Connection, ms: int) -> None:
        if self._busy_ms != ms:
            db.execute(f"PRAGMA busy_timeout = {ms}")
            self._busy_ms = ms

    def _inline(self, work: Callable[[sqlite3.Connection, float], T]) -> tuple[bool, T]:
        """(True, result) or the work's exception; (False, _) when the file is locked."""
        db = self._db
        assert db is not None
        self._busy_timeout(db, 0)
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError:  # another process writes: the thread waits for it
            return False, cast(T, None)
        try:
            result = work(db, time.time())
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        self._commits += 1
        return True, result

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._flush_task = loop.run_in_executor(self._executor, self._flush, loop)

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            if self._db is not None:
                try:
                    self._busy_timeout(self._db, THREAD_BUSY_MS)
                    if self._commits >= CHECKPOINT_EVERY:
                        self._commits = 0
                        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:  # the next commit says what is wrong, if anything is
                    log.warning("sqlite store: WAL checkpoint failed", exc_info=True)
            with self._queue_lock:
                batch, self._queued = self._queued, []
                if not batch:
                    self._flushing = False
                    return
            for waiter, outcome in self._commit(batch):
                loop.call_soon_threadsafe(_settle, waiter, outcome)

    def _commit(
        self, batch: list[tuple[Work, _Waiter]]
    ) -> list[tuple[_Waiter, tuple[bool, object]]]:
        try:
            if self._db is None:
                self._db = self._connect()
            db = self._db
            db.execute("BEGIN IMMEDIATE")
        except BaseException as exc:  # cannot even start: every operation gets the error
            return [(waiter, (False, exc)) for _, waiter in batch]
        outcomes: list[tuple[_Waiter, tuple[bool, object]]] = []
        now = time.time()
        for work, waiter in batch:
            db.execute("SAVEPOINT op")
            try:
                outcomes.append((waiter, (True, work(db, now))))
            except BaseException as exc:
                db.execute("ROLLBACK TO op")
                outcomes.append((waiter, (False, exc)))
            db.execute("RELEASE op")
        try:
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [(waiter, (False, exc)) for _, waiter in batch]
        self._commits += 1
        return outcomes

    # ----------------------------------------------------------------------- documents

    async def get(self, namespace: str, key: str) -> Versioned | None:
        def work(db: sqlite3.Connection, now: float) -> Versioned | None:
            row = db.execute(
                "SELECT value, version FROM docs WHERE namespace = ? AND key = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (namespace, key, now),
            ).fetchone()
            return None if row is None else Versioned(json.loads(row[0]), row[1])

        return await self._run(work)

    async def create(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> bool:
        text = json.dumps(value)

        def work(db: sqlite3.Connection, now: float) -> bool:
            return sql.write(db, now, namespace, key, text, "absent", ttl) is not None

        return await self._run(work)

    async def put(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> int:
        text = json.dumps(value)

        def work(db: sqlite3.Connection, now: float) -> int:
            version = sql.write(db, now, namespace, key, text, "any", ttl)
            assert version is not None
            return version

        return await self._run(work)

    async def swap(
        self,
        namespace: str,
        key: str,
        expected_version: int,
        value: JSONDoc,
        *,
        ttl: float | None = None,
    ) -> int | None:
        text = json.dumps(value)

        def work(db: sqlite3.Connection, now: float) -> int | None:
            return sql.write(db, now, namespace, key, text, expected_version, ttl)

        return await self._run(work)

    async def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Versioned]:
        wanted = json.dumps(list(keys))

        def work(db: sqlite3.Connection, now: float) -> dict[str, Versioned]:
            rows = db.execute(
                "SELECT key, value, version FROM docs WHERE namespace = ?"
                " AND key IN (SELECT value FROM json_each(?))"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (namespace, wanted, now),
            )
            return {key: Versioned(json.loads(value), version) for key, value, version in rows}

        return await self._run(work) if keys else {}

    async def commit(self, ops: Sequence[Op]) -> list[int] | None:
        check_ops(ops)
        texts = ["" if isinstance(op, Expect | ExpectScan) else json.dumps(op.value) for op in ops]

        def work(db: sqlite3.Connection, now: float) -> list[int]:
            conditions = [op for op in ops if isinstance(op, Expect | ExpectScan)]
            if not all(sql.holds(db, now, op) for op in conditions):
                raise _Conflict
            versions = []
            for op, text in zip(ops, texts, strict=True):
                if isinstance(op, Expect | ExpectScan):
                    versions.append(0)
                elif isinstance(op, Append):
                    sql.append(db, op.namespace, op.key, text, op.keep)
                    versions.append(0)
                else:
                    version = sql.write(db, now, op.namespace, op.key, text, op.expect, op.ttl)
                    if version is None:
                        raise _Conflict  # rolls back this commit's savepoint: nothing is written
                    versions.append(version)
            return versions

        try:
            return await self._run(work) if ops else []
        except _Conflict:
            return None

    async def delete(self, namespace: str, key: str) -> bool:
        def work(db: sqlite3.Connection, now: float) -> bool:
            cursor = db.execute(
                "DELETE FROM docs WHERE namespace = ? AND key = ?"
                " AND (expires_at IS NULL OR expires_at > ?)",
                (namespace, key, now),
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def scan(self, namespace: str) -> dict[str, Versioned]:
        def work(db: sqlite3.Connection, now: float) -> dict[str, Versioned]:
            db.execute(
                "DELETE FROM docs WHERE namespace = ? AND expires_at <= ?", (namespace, now)
            )
            rows = db.execute(
                "SELECT key, value, version FROM docs WHERE namespace = ?", (namespace,)
            )
            return {key: Versioned(json.loads(value), version) for key, value, version in rows}

        return await self._run(work)

    async def scan_page(
        self, namespace: str, cursor: str | None = None, count: int = SCAN_PAGE
    ) -> tuple[dict[str, Versioned], str | None]:
        """Keys in order: the cursor is the last key of the page (the primary key's order)."""
        count = max(count, 1)

        def work(db: sqlite3.Connection, now: float) -> dict[str, Versioned]:
            rows = db.execute(
                "SELECT key, value, version FROM docs WHERE namespace = ? AND key > ?"
                " AND (expires_at IS NULL OR expires_at > ?) ORDER BY key LIMIT ?",
                (namespace, cursor or "", now, count),
            )
            return {key: Versioned(json.loads(value), version) for key, value, version in rows}

        page = await self._run(work)
        return page, (next(reversed(page)) if len(page) >= count else None)

    # ----------------------------------------------------------------------- logs

    async def append(
        self, namespace: str, key: str, value: JSONDoc, *, keep: int | None = None
    ) -> None:
        check_ops([Append(namespace, key, value, keep)])
        text = json.dumps(value)

        def work(db: sqlite3.Connection, now: float) -> None:
            sql.append(db, namespace, key, text, keep)

        await self._run(work)

    async def tail(self, namespace: str, key: str, limit: int) -> list[JSONDoc]:
        def work(db: sqlite3.Connection, now: float) -> list[JSONDoc]:
            rows = db.execute(
                "SELECT value FROM logs WHERE namespace = ? AND key = ? ORDER BY seq DESC LIMIT ?",
                (namespace, key, max(limit, 0)),
            )
            return [json.loads(value) for (value,) in rows]

        return await self._run(work)

    # ----------------------------------------------------------------------- locks

    async def acquire(self, name: str, owner: str, ttl: float) -> str | None:
        def work(db: sqlite3.Connection, now: float) -> str | None:
            cursor = db.execute(
                "INSERT INTO locks VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET owner = excluded.owner, expires_at = excluded.expires_at"
                " WHERE locks.owner = excluded.owner OR locks.expires_at <= ?",
                (name, owner, sql.expiry(ttl, now), now),
            )
            if cursor.rowcount == 1:
                return None
            row = db.execute("SELECT owner FROM locks WHERE name = ?", (name,)).fetchone()
            return str(row[0])

        return await self._run(work)

    async def release(self, name: str, owner: str) -> bool:
        def work(db: sqlite3.Connection, now: float) -> bool:
            cursor = db.execute(
                "DELETE FROM locks WHERE name = ? AND owner = ? AND expires_at > ?",
                (name, owner, now),
            )
            return cursor.rowcount == 1

        return await self._run(work)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        # Queued after any flush still running on the store's thread, so nothing reopens it.
        await loop.run_in_executor(self._executor, self._close_db)
        self._executor.shutdown(wait=False)

    def _close_db(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
