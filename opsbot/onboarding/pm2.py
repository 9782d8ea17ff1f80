"""pm2 processes, from ``pm2 jlist`` (name, status, pid: the rest, env included, is dropped)."""

from __future__ import annotations

import json
from typing import Any

from opsbot.onboarding.findings import Findings, PM2Process
from opsbot.onboarding.probing import denied, probe, why
from opsbot.reach.executors import Executor

#: Whether the user's pm2 daemon runs, asked without starting one (``pm2 jlist`` would spawn
#: it). A fixed script: nothing from the command line or the chat is put into it.
DAEMON_RUNS = [
    "sh", "-c",
    'home="${PM2_HOME:-$HOME/.pm2}"; test -S "$home/rpc.sock" && '
    'kill -0 "$(cat "$home/pm2.pid" 2>/dev/null)" 2>/dev/null',
]  # fmt: skip


async def discover_pm2(executor: Executor, findings: Findings) -> None:
    installed = await probe(executor, ["sh", "-c", "command -v pm2"])
    if not installed.ok:
        findings.notes.append("pm2: not installed")
        return
    if not (await probe(executor, DAEMON_RUNS)).ok:
        findings.notes.append("pm2: installed, no daemon runs for this user")
        return
    result = await probe(executor, ["pm2", "jlist"])
    if not result.ok:
        (findings.problems if denied(result) else findings.notes).append(f"pm2: {why(result)}")
        return
    listing = _listing(result.stdout)
    if listing is None:
        findings.problems.append("pm2: jlist did not print a JSON list")
        return
    for item in listing:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        env = item.get("pm2_env")
        status = env.get("status") if isinstance(env, dict) else None
        pid = item.get("pid")
        findings.pm2.append(
            PM2Process(
                name=item["name"],
                status=status if isinstance(status, str) else "unknown",
                pid=pid if isinstance(pid, int) and pid > 0 else None,
            )
        )


def _listing(stdout: str) -> list[Any] | None:
    """The JSON list, past any banner pm2 prints first (an out-of-date daemon warns)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("["):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, list) else None
    return None
