"""Run an argv as a subprocess on opsbot's own machine, never through a shell."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from opsbot.reach.executors import ExecResult
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
        args = [str(a) for a in argv]
        if not args:
            raise ValueError("argv must not be empty")
        started = time.monotonic()
        try:
            child = _Child(args, stdin, env=self._env, cwd=self._cwd)
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
        timed_out = False
        try:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(child.finished)
            except TimeoutError:
                timed_out = True
        except BaseException:
            # Cancelled by the caller: do not leave the process tree behind.
            await asyncio.shield(child.end())
            raise
        if timed_out:
            # Descendants may still hold the pipes: stop reading rather than wait on them.
            await asyncio.shield(child.end())
        else:
            child.close()
        duration = time.monotonic() - started
        return ExecResult(
            exit_status=None if timed_out else child.proc.returncode,
            stdout=child.out.decode("utf-8", errors="replace"),
            stderr=child.err.decode("utf-8", errors="replace"),
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


class _Child:
    """A child process in its own session, watched from the event loop itself: its pipes and a
    pidfd (its exit) are on the loop's selector. asyncio's subprocess machinery would start a
    thread per child to wait for it and take several loop turns per pipe; a health probe's
    answer pays for each.
    """

    def __init__(
        self, args: list[str], stdin: bytes | None, *, env: dict[str, str] | None,
        cwd: str | None,
    ) -> None:  # fmt: skip
        self.loop = asyncio.get_running_loop()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
        self.out = bytearray()
        self.err = bytearray()
        #: Both pipes at their end and the process reaped.
        self.finished: asyncio.Future[None] = self.loop.create_future()
        self._exited: asyncio.Future[None] = self.loop.create_future()
        self._reading: dict[int, bytearray] = {}
        self._ending: asyncio.Task[None] | None = None
        self._pidfd: int | None = None
        try:
            self._pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):  # no pidfd (an old kernel, a filter): a thread waits
            waiting = self.loop.run_in_executor(None, self.proc.wait)
            waiting.add_done_callback(lambda _: self._reaped())
        else:
            self.loop.add_reader(self._pidfd, self._on_exit)
        for stream, sink in ((self.proc.stdout, self.out), (self.proc.stderr, self.err)):
            assert stream is not None
            fd = stream.fileno()
            os.set_blocking(fd, False)
            self._reading[fd] = sink
            self.loop.add_reader(fd, self._on_readable, fd)
        self._feeding: memoryview | None = None
        if stdin is not None:
            assert self.proc.stdin is not None
            self._feeding = memoryview(stdin)
            os.set_blocking(self.proc.stdin.fileno(), False)
            self.loop.add_writer(self.proc.stdin.fileno(), self._on_writable)
            self._on_writable()

    def _on_readable(self, fd: int) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if chunk:
            self._reading[fd] += chunk
        else:
            self._stop_reading(fd)

    def _stop_reading(self, fd: int) -> None:
        if self._reading.pop(fd, None) is not None:
            self.loop.remove_reader(fd)
            self._check_finished()

    def _on_writable(self) -> None:
        stdin = self.proc.stdin
        if self._feeding is None or stdin is None:
            return
        try:
            written = os.write(stdin.fileno(), self._feeding) if self._feeding else 0
        except BlockingIOError:
            return
        except OSError:  # the child stopped reading (broken pipe): what is left is dropped
            written = len(self._feeding)
        self._feeding = self._feeding[written:]
        if not self._feeding:
            self._stop_feeding()

    def _stop_feeding(self) -> None:
        stdin = self.proc.stdin
        if self._feeding is not None and stdin is not None:
            self._feeding = None
            self.loop.remove_writer(stdin.fileno())
            with contextlib.suppress(OSError):
                stdin.close()

    def _on_exit(self) -> None:
        assert self._pidfd is not None
        self.loop.remove_reader(self._pidfd)
        self.proc.wait()  # at once: the pidfd says it has exited
        self._reaped()

    def _reaped(self) -> None:
        if not self._exited.done():
            self._exited.set_result(None)
        self._check_finished()

    def _check_finished(self) -> None:
        if not self._reading and self._exited.done() and not self.finished.done():
            self.finished.set_result(None)

    def end(self) -> asyncio.Task[None]:
        """SIGTERM the process group, then SIGKILL it after a short grace; reap the leader and
        release everything (one task, however many callers ask)."""
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end())
        return self._ending

    async def _end(self) -> None:
        try:
            if not self._exited.done():
                _signal_group(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._exited), KILL_GRACE)
            # Children of the leader may have ignored SIGTERM: always finish the group off.
            _signal_group(self.proc.pid, signal.SIGKILL)
            await asyncio.shield(self._exited)
        finally:
            self.close()

    def close(self) -> None:
        """Stop watching; close the pipes and the pidfd (the process is reaped)."""
        self._stop_feeding()
        for fd in list(self._reading):
            self._stop_reading(fd)
        if self._pidfd is not None:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
