"""One backup or restore run: its steps against one deadline, the lease, the argv helpers
every backup method shares."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path

from opsbot.actions.backups.records import (
    BackupBusy,
    BackupError,
)
from opsbot.config import (
    NAME_PATTERN,
    Backup,
    PostgresBackup,
    SQLiteBackup,
)
from opsbot.reach.executors import ExecResult, Executor
from opsbot.state.store import Store

log = logging.getLogger(__name__)

#: Seconds the lease outlives the backup's own timeout (cleanup after a timeout).
LOCK_MARGIN = 60.0


#: Seconds between two looks at a running BGSAVE.
REDIS_POLL_INTERVAL = 0.1


#: Budget for removing files after a failure or for retention, outside the backup's deadline.
CLEANUP_TIMEOUT = 30.0


Progress = Callable[[str], Awaitable[None]]


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


@contextlib.asynccontextmanager
async def _holding_lock(
    store: Store | None, target: str, what: str, timeout: float
) -> AsyncIterator[None]:
    """The target's backup lease held for ``what`` (its ``timeout`` and a margin), given back
    after; BackupBusy when another backup or restore holds it. Without a store: no lease."""
    lock, owner = _lock_name(target), _owner(what)
    if store is not None:
        holder = await store.acquire(lock, owner, ttl=timeout + LOCK_MARGIN)
        if holder is not None:
            raise BackupBusy(f"a backup of {target} is already running ({holder})")
    try:
        yield
    finally:
        if store is not None:
            await _release(store, lock, owner)


def _output_tail(result: ExecResult, limit: int = 400) -> str:
    text = (result.stderr.strip() or result.stdout.strip())[-limit:]
    status = "timed out" if result.timed_out else f"exit {result.exit_status}"
    return f" ({status}): {text}" if text else f" ({status})"


def _pg_connection(spec: PostgresBackup) -> list[str]:
    argv = []
    if spec.host is not None:
        argv += ["-h", spec.host]
    if spec.port is not None:
        argv += ["-p", str(spec.port)]
    if spec.user is not None:
        argv += ["-U", spec.user]
    return argv


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
