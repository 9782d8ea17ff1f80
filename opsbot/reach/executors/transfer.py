"""Binary file transfer over an executor's own connection.

``Executor.run`` returns text, which is no way to move a database dump. An executor that can
also copy files implements :class:`FileTransfer`:

* ``SSHExecutor``: SFTP over the same pooled connection (one more channel, no new handshake);
* ``LocalExecutor``: a plain copy in a worker thread;
* ``DockerExecExecutor``: the engine's archive endpoints (a one-member tar stream).

Both directions stream in chunks (a file is never held in memory whole) and write to a
temporary name beside the destination that is renamed into place only once complete, so a
failed copy never leaves a truncated file under the real name (on the Docker engine, which
extracts the archive itself, the file is written in place).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Protocol, runtime_checkable

from opsbot.errors import ExecutorError

#: Bytes per read/write while streaming a file.
CHUNK_SIZE = 4 * 1024 * 1024


class TransferError(ExecutorError):
    """A file could not be copied to or from an endpoint (missing, unreadable, cut short)."""


@runtime_checkable
class FileTransfer(Protocol):
    """Copies files between opsbot's machine and an endpoint; both return the bytes copied."""

    async def fetch(
        self, remote_path: str, local_path: Path, *, timeout: float | None = None
    ) -> int:
        """Copy ``remote_path`` on the endpoint to ``local_path`` here (replacing it)."""
        ...

    async def push(
        self, local_path: Path, remote_path: str, *, timeout: float | None = None
    ) -> int:
        """Copy ``local_path`` here to ``remote_path`` on the endpoint (replacing it)."""
        ...


def transfer_of(executor: object) -> FileTransfer | None:
    """The executor itself when it can transfer files, else None."""
    return executor if isinstance(executor, FileTransfer) else None


def temp_beside(path: Path | str) -> str:
    """A unique hidden name in the same directory, for write-then-rename."""
    text = str(path)
    head, _, name = text.rpartition("/")
    temp = f".{name}.{uuid.uuid4().hex[:12]}.part"
    return f"{head}/{temp}" if head or text.startswith("/") else temp


def copy_file(source: Path, destination: Path, stop: threading.Event | None = None) -> int:
    """Blocking: copy in chunks to a temporary name, then rename over ``destination``.

    Setting ``stop`` (from another thread: the caller gave up) abandons the copy and removes
    the temporary file, so a copy that timed out never appears later under the real name.
    """
    temp = Path(temp_beside(destination))
    copied = 0
    try:
        with source.open("rb") as src, temp.open("wb") as out:
            while chunk := src.read(CHUNK_SIZE):
                if stop is not None and stop.is_set():
                    raise TransferError(f"copying {source} was abandoned")
                out.write(chunk)
                copied += len(chunk)
        os.replace(temp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    return copied


def sha256_file(path: Path) -> str:
    """Blocking: the hex SHA-256 of a local file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()
