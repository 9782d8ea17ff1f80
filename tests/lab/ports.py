"""Small helpers shared by the lab: free ports, binaries, waiting, log tails, processes."""

from __future__ import annotations

import grp
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path


class LabError(RuntimeError):
    """A lab server could not be started (never a skip: the test run must fail)."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def require_binary(name: str, package: str) -> str:
    """Absolute path of `name`, or a LabError naming the Debian package to install."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if path is None:
        raise LabError(
            f"{name!r} not found: install the Debian package {package!r} "
            f"(apt-get install -y {package}) or run scripts/test.sh as root"
        )
    return path


def log_tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    log: Path,
    timeout: float = 30.0,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """Poll `check` until it returns True; raise LabError with the log tail otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise LabError(
                f"{what}: process exited with code {proc.returncode}\n"
                f"--- tail of {log} ---\n{log_tail(log)}"
            )
        try:
            if check():
                return
        except LabError:
            raise
        except Exception:  # any other failure just means "not ready yet"
            pass
        if time.monotonic() > deadline:
            raise LabError(
                f"{what}: not ready after {timeout:.0f}s\n--- tail of {log} ---\n{log_tail(log)}"
            )
        time.sleep(0.05)


def start_process(argv: list[str], log: Path, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `argv` with stdout and stderr appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=cwd
        )


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait, then SIGKILL if needed; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def run_logged(
    argv: list[str], log: Path, what: str, cwd: Path | None = None, timeout: float = 120.0
) -> None:
    """Run `argv` to completion with output appended to `log`; LabError on failure."""
    with log.open("ab") as out:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            timeout=timeout,
            check=False,
        )
    if result.returncode != 0:
        raise LabError(
            f"{what} failed (exit {result.returncode}): {' '.join(argv)}\n"
            f"--- tail of {log} ---\n{log_tail(log)}"
        )


def group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Until ``url`` answers 200 (or raise the last error after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def process_alive(pid: int) -> bool:
    """Running and not a zombie (nothing reaps orphans here, so `kill -0` would lie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return ") Z " not in stat
