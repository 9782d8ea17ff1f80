"""A dump's way home: its SHA-256 and size on the endpoint, the copy into opsbot's own
``backups_dir`` (progress in bytes while it runs), the copy's checksum compared."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
from pathlib import Path

from opsbot.actions.backups.records import (
    BackupError,
    human_size,
)
from opsbot.actions.backups.session import (
    _Session,
)
from opsbot.reach.executors.transfer import FileTransfer, sha256_file

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")

#: How often a copy home reports its bytes done (the card shows the latest at its own pace).
COPY_POLL = 0.25


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
