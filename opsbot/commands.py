"""The verbs, Telegram-free: shared by the Telegram handlers and the console.

Each verb declares the least role that may use it and whether it is destructive; the gate
enforces that in one place (``authorize``). Arguments from chat are validated here (target names
must exist, numbers are bounded) and are never joined into a shell string.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opsbot import actions, alert_commands, backups, incident_commands, operations
from opsbot.audit import digest
from opsbot.checks import TargetHealth, check_all, check_target
from opsbot.config import Person, Role, Target
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
from opsbot.targets import State, fetch_logs

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, and from where (for the audit)."""

    name: str
    role: Role
    user_id: int | None = None
    chat_id: int | None = None
    thread_id: int | None = None

    @property
    def person(self) -> Person:
        return Person(id=self.user_id or 0, name=self.name, role=self.role)


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
        await _observe(services, [result])
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
    await _observe(services, results)
    return Reply(
        text=f"Health: {health_counts(results)} · {clock()}",
        block=health_table(results),
        buttons=(Button("🔄 Refresh", "h"),),
    )


async def _observe(services: Services, results: list[TargetHealth]) -> None:
    """Healthy containers' images become known-good versions, for /rollback."""
    for result in results:
        target = services.settings.targets[result.target]
        if result.state is State.OK and target.kind == "container":
            try:
                await actions.observe_version(result.target, target, services, services.store)
            except OpsbotError as exc:  # the health answer matters more than the history
                log.warning("%s: version not recorded: %s", result.target, exc)


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


async def _destructive(action: str, services: Services, caller: Caller, args: list[str]) -> Reply:
    if len(args) != 1:
        raise UsageError(f"usage: /{action} TARGET")
    name, target = parse_target(services, args[0])
    return await operations.request(
        services, caller.person, action, name, target, (),
        chat_id=caller.chat_id, thread_id=caller.thread_id,
    )  # fmt: skip


async def restart(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/restart TARGET"""
    return await _destructive("restart", services, caller, args)


async def rollback(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/rollback TARGET"""
    return await _destructive("rollback", services, caller, args)


async def backup(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/backup TARGET [list | restore NAME]"""
    if not args or len(args) > 3:
        raise UsageError("usage: /backup TARGET [list | restore NAME]")
    name, target = parse_target(services, args[0])
    sub = args[1].lower() if len(args) > 1 else ""
    if sub == "list" and len(args) == 2:
        records = await backups.list_backups(name, services.store)
        if not records:
            return Reply(text=f"No backups of {name} yet.")
        lines = [backups.describe(r) for r in records]
        return Reply(text=f"💾 backups of {name}, newest first", block="\n".join(lines))
    if sub == "restore" and len(args) == 3:
        return await operations.request(
            services, caller.person, "restore", name, target, (args[2],),
            chat_id=caller.chat_id, thread_id=caller.thread_id,
        )  # fmt: skip
    if sub:
        raise UsageError("usage: /backup TARGET [list | restore NAME]")
    return await operations.request(
        services, caller.person, "backup", name, target, (),
        chat_id=caller.chat_id, thread_id=caller.thread_id,
    )  # fmt: skip


async def audit(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/audit [TARGET] [N] | /audit export [TARGET]"""
    if args and args[0].lower() == "export":
        target = parse_target(services, args[1])[0] if len(args) > 1 else None
        text = await services.audit.export(target)
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        name = f"audit-{target or 'all'}-{stamp}.jsonl"
        return Reply(
            text=f"🧾 audit trail, {text.count(chr(10))} entries",
            document=Document(name, text.encode()),
        )
    target = None
    count = 20
    for word in args[:2]:
        if _NUMBER.match(word):
            count = parse_count(word, 200)
        else:
            target = parse_target(services, word)[0]
    entries = await services.audit.entries(target, count)
    if not entries:
        return Reply(text="The audit trail is empty.")
    lines = [_audit_line(e) for e in entries]
    return Reply(text=f"🧾 last {len(lines)} audit entries" + (f" of {target}" if target else ""),
                 block="\n".join(lines))  # fmt: skip


def parse_count(word: str, limit: int) -> int:
    if not _NUMBER.match(word) or not 1 <= int(word) <= limit:
        raise UsageError(f"N must be a whole number from 1 to {limit}")
    return int(word)


def _audit_line(entry: dict[str, object]) -> str:
    when = time.strftime("%m-%d %H:%M:%S", time.gmtime(float(str(entry.get("ts", 0)))))
    who = entry.get("who") or entry.get("username") or entry.get("user") or "-"
    what = entry.get("verb") or entry.get("action") or entry.get("kind") or ""
    target = entry.get("target") or ""
    extra = entry.get("outcome") or entry.get("status") or entry.get("summary") or ""
    if entry.get("ok") is not None:
        extra = ("ok " if entry["ok"] else "FAILED ") + str(entry.get("summary", ""))
    return " ".join(str(p) for p in (when, entry.get("event"), who, what, target, extra) if p)[
        :300
    ]


async def help_(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/help"""
    lines = [f"{v.usage}: {v.summary}" for v in VERBS.values() if caller.role.allows(v.role)]
    names = ", ".join(sorted(services.settings.targets)) or "none"
    return Reply(
        text=f"You are {caller.name} ({caller.role.value}). You may use:",
        block="\n".join(lines) + f"\n\nTargets: {names}",
    )


async def incident(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/incident …"""
    if services.incidents is None:
        raise UsageError("incidents are handled by the running bot (opsbot run), not here")
    return await incident_commands.incident_verb(services.incidents, services, caller, args)


def _alert_verb(verb: alert_commands.AlertVerb) -> Handler:
    async def run(services: Services, caller: Caller, args: list[str]) -> Reply:
        if services.alerts is None:
            raise UsageError("alerts are handled by the running bot (opsbot run), not here")
        return await verb(services.alerts, services, caller, args)

    return run


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
        Verb(
            "restart",
            Role.operator,
            "/restart TARGET",
            "restart, verified healthy after",
            restart,
            destructive=True,
        ),
        Verb(
            "rollback",
            Role.operator,
            "/rollback TARGET",
            "back to the last known-good version",
            rollback,
            destructive=True,
        ),
        Verb(
            "backup",
            Role.operator,
            "/backup TARGET [list | restore NAME]",
            "verified backup; list them; restore one",
            backup,
        ),
        Verb(
            "audit",
            Role.viewer,
            "/audit [TARGET] [N] | /audit export",
            "who did what, newest first",
            audit,
        ),
        *(
            Verb(name, role, usage, summary, _alert_verb(verb))
            for name, role, usage, summary, verb in alert_commands.VERB_SPECS
        ),
        Verb(
            incident_commands.VERB_SPEC[0],
            incident_commands.VERB_SPEC[1],
            incident_commands.VERB_SPEC[2],
            incident_commands.VERB_SPEC[3],
            incident,
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
        services.audit.record_soon("refused", who=caller.name, user=caller.user_id, verb=verb_name)
        reply = Reply(text=f"/{verb_name} needs the {verb.role.value} role")
    else:
        started = time.monotonic()
        try:
            reply = await verb.run(services, caller, args)
            outcome = "ok"
        except UsageError as exc:
            reply, outcome = Reply(text=f"⚠️ {exc}"), "usage"
        services.metrics.commands_total.labels(verb=verb_name, outcome=outcome).inc()
        named = args[0].lower() if args else ""
        services.audit.record_soon(  # after the reply, never in its way
            "command",
            target=named if named in services.settings.targets else None,
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
