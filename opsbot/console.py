"""The console: the same verbs and services as the bot, without Telegram.

Interactive when standard input is a terminal; otherwise it reads one command per line, so a
runbook can be scripted (``echo /health | opsbot console --config ...``).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from opsbot.commands import Caller, dispatch
from opsbot.config import Role, Settings
from opsbot.render import Reply
from opsbot.services import Services

PROMPT = "opsbot> "


def render(reply: Reply, documents: Path) -> str:
    parts = [reply.text]
    if reply.block:
        parts.append(reply.block)
    if reply.document is not None:
        documents.mkdir(parents=True, exist_ok=True)
        path = documents / reply.document.filename
        path.write_bytes(reply.document.content)
        parts.append(f"(saved to {path})")
    return "\n".join(parts)


async def run_console(
    settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout
) -> int:
    services = Services.build(settings)
    caller = Caller("console", Role.admin)
    interactive = stdin.isatty()
    documents = settings.data_dir / "console"
    if interactive:
        out.write("opsbot console: /help lists the commands, Ctrl-D quits.\n")
    try:
        while True:
            if interactive:
                line = await asyncio.to_thread(_prompt)
            else:
                line = await asyncio.to_thread(stdin.readline)
            if line is None or line == "":
                break
            words = line.strip().split()
            if not words or words[0].startswith("#"):
                continue
            verb = words[0].lstrip("/").lower()
            if verb in ("quit", "exit"):
                break
            reply = await dispatch(services, caller, verb, words[1:])
            out.write(render(reply, documents) + "\n")
            out.flush()
    finally:
        await services.close()
    return 0


def _prompt() -> str | None:
    try:
        return input(PROMPT) + "\n"
    except EOFError:
        return None
