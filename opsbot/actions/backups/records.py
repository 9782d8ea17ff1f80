"""Backup records: what was kept, the index per target, how a record reads in the chat.

``backups-index/<target>`` is one document holding the kept records (newest first, updated
by compare-and-set); ``backups/<target>`` is an append-only history including pruned ones.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, fields

from opsbot.config import (
    Backup,
    PostgresBackup,
    RedisBackup,
    SQLiteBackup,
)
from opsbot.errors import OpsbotError
from opsbot.state.store import JSONDoc, Store, Versioned

log = logging.getLogger(__name__)

#: File name extension per backup kind.
EXTENSIONS = {"postgres": "dump", "sqlite": "sqlite3", "redis": "rdb", "files": "tar.gz"}


HISTORY_NAMESPACE = "backups"


INDEX_NAMESPACE = "backups-index"


#: Entries kept in the append-only history per target (the index holds what is on disk).
HISTORY_KEEP = 500


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


async def list_backups(target_name: str, store: Store) -> list[BackupRecord]:
    """The kept backups of a target, newest first."""
    records = _parse_index(await store.get(INDEX_NAMESPACE, target_name))
    return sorted(records, key=lambda r: r.created, reverse=True)  # stable: ties keep order


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


def _parse_index(current: Versioned | None) -> list[BackupRecord]:
    return [] if current is None else _records_of(current.value)


def _records_of(index: JSONDoc) -> list[BackupRecord]:
    records = []
    for doc in index.get("records", []):
        try:
            records.append(BackupRecord.from_doc(doc))
        except TypeError:
            log.warning("skipping a malformed backup record: %r", doc)
    return records


async def _add_to_index(store: Store, record: BackupRecord, keep: int) -> list[BackupRecord]:
    """Insert ``record`` first; drop the same source's records beyond ``keep``; return those."""
    pruned: list[BackupRecord] = []

    def insert(index: JSONDoc | None) -> JSONDoc:
        nonlocal pruned
        records = [r for r in _records_of(index or {}) if r.name != record.name]
        same = [r for r in records if r.kind == record.kind and r.source == record.source]
        pruned = same[max(0, keep - 1) :]
        kept = [record, *(r for r in records if r not in pruned)]
        return {"records": [r.to_doc() for r in kept]}

    if await store.update(INDEX_NAMESPACE, record.target, insert, attempts=50) is None:
        raise BackupError(f"{record.target}: the backups index kept changing; try again")
    return pruned


def _ours(record: BackupRecord, name: str) -> bool:
    return name == record.name and name.startswith(f"{record.target}-{record.kind}-")


def _file_name(target: str, kind: str, created: float, taken: set[str]) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(created))
    base, ext = f"{target}-{kind}-{stamp}", EXTENSIONS[kind]
    name, n = f"{base}.{ext}", 2
    while name in taken:  # two backups within one second
        name, n = f"{base}-{n}.{ext}", n + 1
    return name


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else (many or one + 's')}"
