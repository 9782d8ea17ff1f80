"""Run an argv as a subprocess on opsbot's own machine, never through a shell."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from opsbot.reach.executors import ExecResult, argv_words
from opsbot.reach.executors.transfer import TransferError, copy_file

#: Seconds between SIGTERM and SIGKILL when a deadline passes.
KILL_GRACE = 0.5


class LocalExecutor:
    """Runs an argv in its own session (process group) so a timeout ends the whole tree."""

    def __init__(self, *, env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        self._env = env
        self._cwd = cwd

    def __repr__(self) -> str:
        return "LocalExecutor()"

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        probe: bool = False,
    ) -> ExecResult:
        args = argv_words(argv)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=self._env,
                cwd=self._cwd,
            )
        except FileNotFoundError as exc:
            return ExecResult(
                127,
                "",
                f"{args[0]}: command not found ({exc.strerror})\n",
                time.monotonic() - started,
            )
        except PermissionError as exc:
            return ExecResult(
                126,
                "",
                f"{args[0]}: cannot execute ({exc.strerror})\n",
                time.monotonic() - started,
            )

        out = bytearray()
        err = bytearray()
        tasks = [
            asyncio.ensure_future(_drain(proc.stdout, out)),
            asyncio.ensure_future(_drain(proc.stderr, err)),
        ]
        if stdin is not None:
            tasks.append(asyncio.ensure_future(_feed(proc.stdin, stdin)))
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.gather(*tasks)
                    await proc.wait()
            except TimeoutError:
                timed_out = True
                await _kill_group(proc)
                # Descendants may still hold the pipes: stop reading rather than wait on them.
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            # Cancelled by the caller: do not leave the process tree behind.
            if proc.returncode is None or timed_out:
                await asyncio.shield(_kill_group(proc))
            for task in tasks:
                task.cancel()
            raise
        duration = time.monotonic() - started
        return ExecResult(
            exit_status=None if timed_out else proc.returncode,
            stdout=out.decode("utf-8", errors="replace"),
            stderr=err.decode("utf-8", errors="replace"),
            duration=duration,
            timed_out=timed_out,
        )

    # -- FileTransfer: both sides are this machine; the copy runs in a worker thread --------

    async def fetch(
        self, remote_path: str, local_path: Path, *, timeout: float | None = None
    ) -> int:
        return await _copy(self._path(remote_path), Path(local_path), timeout)

    async def push(
        self, local_path: Path, remote_path: str, *, timeout: float | None = None
    ) -> int:
        return await _copy(Path(local_path), self._path(remote_path), timeout)

    def _path(self, remote_path: str) -> Path:
        """A "remote" path as the commands this executor runs see it (relative to cwd)."""
        return Path(self._cwd or ".") / remote_path


async def _copy(source: Path, destination: Path, timeout: float | None) -> int:
    stop = threading.Event()
    try:
        async with asyncio.timeout(timeout):
            return await asyncio.to_thread(copy_file, source, destination, stop)
    except TimeoutError:
        raise TransferError(f"copying {source} to {destination} timed out") from None
    except OSError as exc:
        raise TransferError(
            f"cannot copy {source} to {destination}: {exc.strerror or exc}"
        ) from None
    finally:
        stop.set()  # the worker thread abandons the copy if we gave up on it


async def _drain(stream: asyncio.StreamReader | None, sink: bytearray) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        sink += chunk


async def _feed(stream: asyncio.StreamWriter | None, data: bytes) -> None:
    if stream is None:
        return
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(data)
        await stream.drain()
    stream.close()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        await stream.wait_closed()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the process group, then SIGKILL it after a short grace; reap the leader."""
    _signal_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), KILL_GRACE)
    # Children of the leader may have ignored SIGTERM: always finish the group off.
    _signal_group(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await proc.wait()
