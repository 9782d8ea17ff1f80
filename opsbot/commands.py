"""The verbs, Telegram-free: shared by the Telegram handlers and the console.

Each verb declares the least role that may use it and whether it is destructive; the gate
enforces that in one place (``authorize``). Arguments from chat are validated here (target names
must exist, numbers are bounded) and are never joined into a shell string.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opsbot.audit import digest
from opsbot.checks import check_all, check_target
from opsbot.config import Role, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.render import (
    Button,
    Document,
    Reply,
    clock,
    health_counts,
    health_table,
    target_detail,
)
from opsbot.services import Services
from opsbot.targets import fetch_logs


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, and from where (for the audit)."""

    name: str
    role: Role
    user_id: int | None = None
    chat_id: int | None = None


Handler = Callable[[Services, Caller, list[str]], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Verb:
    name: str
    role: Role
    usage: str
    summary: str
    run: Handler
    destructive: bool = False


# --------------------------------------------------------------------------- argument parsing


def parse_target(services: Services, word: str) -> tuple[str, Target]:
    name = word.lower()
    target = services.settings.targets.get(name)
    if target is None:
        known = ", ".join(sorted(services.settings.targets)) or "none configured"
        shown = word if len(word) <= 32 else word[:32] + "…"
        raise UsageError(f"unknown target {shown!r}; known targets: {known}")
    return name, target


_NUMBER = re.compile(r"^[+-]?\d+$")


def parse_lines(services: Services, word: str) -> int:
    limit = services.settings.limits.max_log_lines
    if not _NUMBER.match(word) or not 1 <= int(word) <= limit:
        raise UsageError(f"lines must be a whole number from 1 to {limit}, not {word[:20]!r}")
    return int(word)


# --------------------------------------------------------------------------- the verbs


async def health(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/health [TARGET]"""
    if len(args) > 1:
        raise UsageError("usage: /health [TARGET]")
    if args:
        name, target = parse_target(services, args[0])
        result = await check_target(name, target, services)
        head = f"{result.state.icon} {name}: {result.state.name.lower()} ({result.latency:.1f} s)"
        return Reply(
            text=f"{head} · {clock()}",
            block=target_detail(result),
            buttons=(Button("🔄 Refresh", f"h:{name}"), Button("📜 Logs", f"l:{name}")),
        )
    targets = services.settings.targets
    if not targets:
        return Reply(text="No targets are configured.")
    results = await check_all(targets, services)
    return Reply(
        text=f"Health: {health_counts(results)} · {clock()}",
        block=health_table(results),
        buttons=(Button("🔄 Refresh", "h"),),
    )


async def logs(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/logs TARGET [LINES] [FILTER]"""
    if not args:
        raise UsageError("usage: /logs TARGET [LINES] [FILTER]")
    name, target = parse_target(services, args[0])
    rest = args[1:]
    lines = services.settings.limits.default_log_lines
    if rest and _looks_numeric(rest[0]):
        lines = parse_lines(services, rest[0])
        rest = rest[1:]
    needle = " ".join(rest)
    if len(needle) > 200:
        raise UsageError("the filter is limited to 200 characters")
    try:
        output = await fetch_logs(name, target, services, lines, timeout=target.timeout)
    except (OpsbotError, LookupError, TimeoutError, RuntimeError) as exc:
        return Reply(text=f"❌ logs of {name} failed: {exc}")
    found = output.splitlines()[-lines:]  # an override argv may print more than asked
    if needle:
        folded = needle.casefold()
        found = [line for line in found if folded in line.casefold()]
    body = "\n".join(found)
    head = f"📜 {name} · last {lines} lines"
    if needle:
        head += f" · filter {needle!r}: {len(found)} matching"
    if not body.strip():
        return Reply(text=f"{head} · nothing to show")
    limit = services.settings.limits.inline_chars - len(head) - 32
    if len(body) <= limit:
        return Reply(text=head, block=body, buttons=(Button("🔄 Refresh", f"l:{name}"),))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Reply(
        text=f"{head} · {len(body)} characters, attached",
        document=Document(f"{name}-{stamp}.log", body.encode()),
    )


def _looks_numeric(word: str) -> bool:
    """A word meant as a line count (so '-5' or '1e9' is refused, not taken as a filter)."""
    return bool(re.match(r"^[+-]?[\d.,_e]+$", word, re.IGNORECASE)) and word[0] not in "eE"


async def help_(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/help"""
    lines = [f"{v.usage}: {v.summary}" for v in VERBS.values() if caller.role.allows(v.role)]
    names = ", ".join(sorted(services.settings.targets)) or "none"
    return Reply(
        text=f"You are {caller.name} ({caller.role.value}). You may use:",
        block="\n".join(lines) + f"\n\nTargets: {names}",
    )


VERBS: dict[str, Verb] = {
    v.name: v
    for v in (
        Verb("health", Role.viewer, "/health [TARGET]", "every target, worst first", health),
        Verb(
            "logs",
            Role.viewer,
            "/logs TARGET [LINES] [FILTER]",
            "last lines (default 100), filtered case-insensitively",
            logs,
        ),
        Verb("help", Role.viewer, "/help", "what you may do here", help_),
    )
}


# --------------------------------------------------------------------------- dispatch


async def dispatch(services: Services, caller: Caller, verb_name: str, args: list[str]) -> Reply:
    """Authorize, run and audit one command; the reply is redacted before it leaves."""
    verb = VERBS.get(verb_name)
    if verb is None:
        reply = Reply(text=f"unknown command /{verb_name[:32]}; try /help")
    elif not caller.role.allows(verb.role):
        services.audit.record("refused", who=caller.name, user=caller.user_id, verb=verb_name)
        reply = Reply(text=f"/{verb_name} needs the {verb.role.value} role")
    else:
        started = time.monotonic()
        try:
            reply = await verb.run(services, caller, args)
            outcome = "ok"
        except UsageError as exc:
            reply, outcome = Reply(text=f"⚠️ {exc}"), "usage"
        services.audit.record(
            "command",
            who=caller.name,
            user=caller.user_id,
            chat=caller.chat_id,
            verb=verb_name,
            args=[a[:64] for a in args[:8]],
            outcome=outcome,
            duration=round(time.monotonic() - started, 3),
            digest=digest(reply.text + reply.block),
        )
    return reply.redacted(services.redactor)
