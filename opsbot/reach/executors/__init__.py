"""Executors run an argv somewhere and return what happened as a value.

Three implementations share one contract (``tests/reach/test_executors.py``):

* ``LocalExecutor``: a subprocess on opsbot's own machine, never through a shell;
* ``SSHExecutor``: a command on an SSH host over a pooled asyncssh connection;
* ``DockerExecExecutor``: a command inside a container through the Docker Engine API.

An argv is a sequence of strings. Where a remote side needs one command string (SSH), it is
built with ``shlex.join`` so every element stays one quoted word: chat text can never become
shell syntax.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ExecResult:
    """The outcome of one command. ``exit_status`` is None when it did not finish (timeout)."""

    exit_status: int | None
    stdout: str
    stderr: str
    duration: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


def argv_words(argv: Sequence[str]) -> list[str]:
    """The argv as strings; an empty one is refused before anything runs."""
    args = [str(a) for a in argv]
    if not args:
        raise ValueError("argv must not be empty")
    return args


class Executor(Protocol):
    """Runs one argv with a deadline; the process is ended when the deadline passes."""

    async def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        stdin: bytes | None = None,
        probe: bool = False,
    ) -> ExecResult:
        """``probe``: a short read-only health probe, run as cheaply as the deadline allows
        (over SSH: without the remote ``timeout`` process where signals reach it)."""
        ...
