"""Running one read-only probe command, and saying in one line why it told us nothing."""

from __future__ import annotations

from collections.abc import Sequence

from opsbot.reach.executors import ExecResult, Executor

#: Seconds one probe command may take; the whole discovery has its own deadline above this.
PROBE_TIMEOUT = 8.0
#: Exit statuses that mean the program is not there (sh's "not found", our executors' 127).
NOT_INSTALLED = (127,)


async def probe(
    executor: Executor, argv: Sequence[str], timeout: float = PROBE_TIMEOUT
) -> ExecResult:
    """Run ``argv`` (a list, never a shell string) as a bounded probe."""
    return await executor.run(list(argv), timeout=timeout)


def first_line(text: str, limit: int = 120) -> str:
    """The first non-empty line of a command's output, cut to ``limit`` characters."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def why(result: ExecResult) -> str:
    """A failed probe's reason, in a few words."""
    if result.timed_out:
        return f"no answer within {result.duration:.0f} s"
    return first_line(result.stderr) or first_line(result.stdout) or f"exit {result.exit_status}"


def denied(result: ExecResult) -> bool:
    text = (result.stderr + result.stdout).lower()
    return result.exit_status == 126 or "permission denied" in text
