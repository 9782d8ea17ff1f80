"""The SQLite store's statements: its schema and the row operations its calls are made of."""

from __future__ import annotations

import sqlite3
from typing import Literal

from opsbot.state.store import Expect, ExpectScan

SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    version INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS logs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_by_key ON logs (namespace, key, seq);
-- Entries per log, so that capping one costs a lookup, not a walk over its ``keep`` newest.
CREATE TABLE IF NOT EXISTS log_sizes (
    namespace TEXT NOT NULL,
    key TEXT NOT NULL,
    size INTEGER NOT NULL,
    PRIMARY KEY (namespace, key)
);
CREATE TABLE IF NOT EXISTS locks (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at REAL NOT NULL
);
-- One counter for every document version, so a version is never reused, not even after a
-- document is deleted or expires: a stale swap cannot hit a re-created document.
CREATE TABLE IF NOT EXISTS counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO counter VALUES (1, 0);
"""


def expiry(ttl: float | None, now: float) -> float | None:
    if ttl is None:
        return None
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    return now + ttl


def next_version(db: sqlite3.Connection) -> int:
    row = db.execute("UPDATE counter SET version = version + 1 RETURNING version").fetchone()
    return int(row[0])


def write(
    db: sqlite3.Connection,
    now: float,
    namespace: str,
    key: str,
    text: str,
    expect: int | Literal["absent", "any"],
    ttl: float | None,
) -> int | None:
    """create (``absent``), put (``any``) or swap (a version); the new version or None."""
    expires_at = expiry(ttl, now)
    version = next_version(db)
    if expect == "any":
        db.execute(
            "INSERT OR REPLACE INTO docs VALUES (?, ?, ?, ?, ?)",
            (namespace, key, text, version, expires_at),
        )
        return version
    if expect == "absent":
        cursor = db.execute(
            "INSERT INTO docs VALUES (?, ?, ?, ?, ?) ON CONFLICT (namespace, key) DO UPDATE"
            " SET value = excluded.value, version = excluded.version,"
            " expires_at = excluded.expires_at WHERE docs.expires_at <= ?",
            (namespace, key, text, version, expires_at, now),
        )
    else:
        cursor = db.execute(
            "UPDATE docs SET value = ?, version = ?, expires_at = coalesce(?, expires_at)"
            " WHERE namespace = ? AND key = ? AND version = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (text, version, expires_at, namespace, key, expect, now),
        )
    return version if cursor.rowcount == 1 else None


def holds(db: sqlite3.Connection, now: float, op: Expect | ExpectScan) -> bool:
    """Whether a commit's standalone condition holds."""
    if isinstance(op, ExpectScan):
        rows = db.execute(
            "SELECT key, version FROM docs WHERE namespace = ?"
            " AND (expires_at IS NULL OR expires_at > ?)",
            (op.namespace, now),
        )
        return dict(rows.fetchall()) == dict(op.versions)
    row = db.execute(
        "SELECT version FROM docs WHERE namespace = ? AND key = ?"
        " AND (expires_at IS NULL OR expires_at > ?)",
        (op.namespace, op.key, now),
    ).fetchone()
    return row is None if op.version == "absent" else row is not None and row[0] == op.version


def append(
    db: sqlite3.Connection, namespace: str, key: str, text: str, keep: int | None
) -> None:
    db.execute(
        "INSERT INTO logs (namespace, key, value) VALUES (?, ?, ?)", (namespace, key, text)
    )
    (size,) = db.execute(
        "INSERT INTO log_sizes VALUES (?, ?, 1) ON CONFLICT (namespace, key)"
        " DO UPDATE SET size = size + 1 RETURNING size",
        (namespace, key),
    ).fetchone()
    if keep is not None and size > keep:
        db.execute(
            "DELETE FROM logs WHERE seq IN (SELECT seq FROM logs WHERE namespace = ? AND key = ?"
            " ORDER BY seq LIMIT ?)",
            (namespace, key, size - keep),
        )
        db.execute(
            "UPDATE log_sizes SET size = ? WHERE namespace = ? AND key = ?", (keep, namespace, key)
        )
