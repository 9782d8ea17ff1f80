"""The verbs, Telegram-free: shared by the Telegram handlers and the console.

``VERBS`` and ``BUTTONS`` are the authorization table: each verb and each kind of button
declares the least role that may use it and whether it is destructive. ``dispatch`` enforces
it for verbs, the button handler for taps (tests/test_authz_matrix.py proves both). Arguments
from chat are validated here (target names must exist, numbers are bounded) and are never
joined into a shell string.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from opsbot import (
    actions,
    alert_commands,
    backup_schedule,
    backups,
    incident_commands,
    operations,
)
from opsbot.approvals import Status
from opsbot.audit import digest
from opsbot.checks import TargetHealth, check_all, check_target
from opsbot.config import Backup, K8sTarget, Person, Role, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.oncall_commands import VERB_SPEC as ONCALL_VERB
from opsbot.progress import ProgressSink
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
from opsbot.silences import describe as describe_duration
from opsbot.targets import State, fetch_logs, k8s_revisions

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, and from where (for the audit)."""

    name: str
    role: Role
    user_id: int | None = None
    chat_id: int | None = None
    thread_id: int | None = None
    #: Where a long verb may report progress (a chat's in-place message); None = nowhere.
    progress: ProgressSink | None = field(default=None, compare=False)

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
    results = await _check_all_showing_progress(services, caller, targets)
    await _observe(services, results)
    return Reply(
        text=f"Health: {health_counts(results)} · {clock()}",
        block=health_table(results),
        buttons=(Button("🔄 Refresh", "h"),),
    )


#: /health over more targets than this shows progress soon; fewer, only once it is slow.
PROGRESS_MIN_TARGETS = 20
#: Seconds before the progress message of a /health over many targets (an answer that comes
#: sooner needs none), and over few.
PROGRESS_SOON = 0.2
PROGRESS_AFTER = 0.5


async def _check_all_showing_progress(
    services: Services, caller: Caller, targets: dict[str, Target]
) -> list[TargetHealth]:
    """check_all, reporting "12/100 checked · worst so far …" to the caller's progress sink."""
    sink = caller.progress
    if sink is None:
        return await check_all(targets, services)
    arrived = 0
    bad: list[TargetHealth] = []  # worst first; kept as results come (few, usually none)
    showing = False

    def show() -> None:
        nonlocal showing
        showing = True
        sink(_progress_reply(arrived, bad, len(targets)))

    def on_result(result: TargetHealth) -> None:
        nonlocal arrived
        arrived += 1
        if result.state:
            bisect.insort(bad, result, key=lambda h: (-h.state, h.target))
        if showing and arrived < len(targets):  # the last one: the answer follows at once
            show()

    delay = PROGRESS_SOON if len(targets) > PROGRESS_MIN_TARGETS else PROGRESS_AFTER
    timer = asyncio.get_running_loop().call_later(delay, show)
    try:
        return await check_all(targets, services, on_result)
    finally:
        timer.cancel()


def _progress_reply(arrived: int, bad: list[TargetHealth], total: int) -> Reply:
    text = f"⏳ Health: {arrived}/{total} checked…"
    if not bad:
        return Reply(text=text + (" all healthy so far" if arrived else ""))
    worst = bad[0]
    text += f" worst so far: {worst.state.icon} {worst.target}"
    return Reply(text=text, block=health_table(bad[:10]))


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
        chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
    )  # fmt: skip


async def restart(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/restart TARGET"""
    return await _destructive("restart", services, caller, args)


_REVISION = re.compile(r"^[1-9]\d{0,8}$")


async def rollback(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/rollback TARGET [list | REVISION]"""
    if len(args) > 2:
        raise UsageError("usage: /rollback TARGET [list | REVISION]")
    if len(args) != 2:
        return await _destructive("rollback", services, caller, args)
    name, target = parse_target(services, args[0])
    if args[1].lower() == "list":
        return await _revisions(services, name, target)
    if not _REVISION.match(args[1]):
        raise UsageError(
            f"usage: /rollback TARGET [list | REVISION]; a revision is a number, not "
            f"{args[1][:20]!r}"
        )
    return await operations.request(
        services, caller.person, "rollback", name, target, (args[1],),
        chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
    )  # fmt: skip


async def _revisions(services: Services, name: str, target: Target) -> Reply:
    """The k8s deployment's revisions, newest first, with their images."""
    if not isinstance(target, K8sTarget):
        raise UsageError(f"{name} is a {target.kind} target; only k8s targets have revisions")
    try:
        revisions = await k8s_revisions(target, services, timeout=target.timeout)
    except (RuntimeError, OpsbotError) as exc:
        return Reply(text=f"❌ revisions of {name}: {exc}")
    if not revisions:
        return Reply(text=f"deployment {target.deployment} has no revisions recorded")
    lines = []
    for revision in revisions:
        when = revision.created.replace("T", " ").removesuffix("Z")[:16]
        mark = "current" if revision.current else ""
        line = f"{revision.number:>4}  {mark:<7}  {when:<16}  {', '.join(revision.images)}"
        if revision.change_cause:
            line += f"  ({revision.change_cause[:80]})"
        lines.append(line)
    return Reply(
        text=(
            f"🕘 {name}: deployment {target.deployment} in {target.namespace}, "
            f"{len(revisions)} revisions, newest first · /rollback {name} REVISION"
        ),
        block="\n".join(lines),
    )


BACKUP_USAGE = "usage: /backup TARGET [list | verify [NAME] | restore NAME]"


async def backup(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/backup TARGET [list | verify [NAME] | restore NAME]"""
    if not args or len(args) > 3:
        raise UsageError(BACKUP_USAGE)
    name, target = parse_target(services, args[0])
    sub = args[1].lower() if len(args) > 1 else ""
    if sub == "verify":
        return await _verify_backups(services, name, target, args[2] if len(args) == 3 else None)
    if sub == "list" and len(args) == 2:
        records = await backups.list_backups(name, services.store)
        if not records:
            return Reply(text=f"No backups of {name} yet.")
        lines = [backups.describe(r) for r in records]
        return Reply(text=f"💾 backups of {name}, newest first", block="\n".join(lines))
    if sub == "restore" and len(args) == 3:
        return await operations.request(
            services, caller.person, "restore", name, target, (args[2],),
            chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
        )  # fmt: skip
    if sub:
        raise UsageError(BACKUP_USAGE)
    return await operations.request(
        services, caller.person, "backup", name, target, (),
        chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
    )  # fmt: skip


async def _verify_backups(
    services: Services, name: str, target: Target, wanted: str | None
) -> Reply:
    """The test restore of one backup, or of the newest backup of each configured source."""
    if not target.backups:
        raise UsageError(f"{name} has no backups configured")
    records = await backups.list_backups(name, services.store)
    if wanted is not None:
        chosen = [r for r in records if r.name == wanted]
        if not chosen:
            shown = wanted if len(wanted) <= 80 else wanted[:80] + "…"
            raise UsageError(f"no backup named {shown!r} for {name}; see /backup {name} list")
    else:
        newest = (backup_schedule.newest(records, spec) for spec in target.backups)
        chosen = [r for r in newest if r is not None]
        if not chosen:
            raise UsageError(f"no backups of {name} yet; /backup {name} makes one")
    executor = operations.backup_executor(services, name, target)
    reports, ok = [], True
    for record in chosen:
        spec = _spec_of(target, record)
        if spec is None:
            reports.append(f"{record.name}: no {record.kind} backup is configured any more")
            ok = False
            continue
        try:
            reports.append(
                await backups.verify_restore(name, spec, record, executor, store=services.store)
            )
        except OpsbotError as exc:
            ok = False
            reports.append(f"test restore of {record.name} FAILED: {exc}")
    icon = "✅" if ok else "❌"
    return Reply(text=f"{icon} test restore of {name} · {clock()}", block="\n\n".join(reports))


def _spec_of(target: Target, record: backups.BackupRecord) -> Backup | None:
    """The configured backup a record came from (same kind and source), else one of its kind."""
    same_kind = [s for s in target.backups if s.type == record.kind]
    exact = [s for s in same_kind if backups.source_of(s) == record.source]
    found = exact or same_kind
    return found[0] if found else None


async def backups_overview(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/backups"""
    if args:
        raise UsageError("usage: /backups")
    now = time.time()
    lines: list[str] = []
    worst = "✅"
    for name, target in services.settings.targets.items():
        if not target.backups:
            continue
        records = await backups.list_backups(name, services.store)
        for spec in target.backups:
            icon, line = _backup_line(name, target, spec, records, now)
            lines.append(f"{icon} {line}")
            worst = "❌" if "❌" in (icon, worst) else ("⚠️" if "⚠️" in (icon, worst) else "✅")
    if not lines:
        return Reply(text="No backups are configured.")
    return Reply(text=f"{worst} backups · {clock()}", block="\n".join(lines))


def _backup_line(
    name: str, target: Target, spec: Backup, records: list[backups.BackupRecord], now: float
) -> tuple[str, str]:
    """(icon, lines) for one configured backup: newest, age against the RPO, size trend."""
    head = f"{name} {spec.type} {backups.source_of(spec)}"
    same = [r for r in records if r.kind == spec.type and r.source == backups.source_of(spec)]
    rpo = target.rpo
    limit = f"RPO {describe_duration(rpo)}" if rpo is not None else "no RPO"
    after = backup_schedule.next_slot(spec, now)
    nxt = time.strftime("%m-%d %H:%M UTC", time.gmtime(after)) if after is not None else None
    plan = f"next {nxt} ({spec.schedule})" if nxt else "not scheduled"
    if not same:
        icon = "❌" if rpo is not None else "⚠️"
        return icon, f"{head}\n   no backup yet · {limit} · {plan}"
    newest = same[0]
    age = now - newest.created
    icon = "❌" if rpo is not None and age > rpo else ("⚠️" if newest.shrunk else "✅")
    over = " — over it" if rpo is not None and age > rpo else ""
    sizes = " → ".join(backups.human_size(r.size) for r in reversed(same[:5]))
    return icon, (
        f"{head}\n   {newest.name} · {describe_duration(age)} old · {limit}{over}\n"
        f"   size {sizes} ({backups.describe_change(newest)}) · {plan}"
    )


async def approve(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/approve ID: the Approve button, typed (consoles, chats without buttons)."""
    return await _decide(services, caller, args, approve=True)


async def deny(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/deny ID: the Deny button, typed; the requester denying cancels."""
    return await _decide(services, caller, args, approve=False)


async def _decide(services: Services, caller: Caller, args: list[str], approve: bool) -> Reply:
    verb = "approve" if approve else "deny"
    if len(args) != 1 or not re.match(r"^[A-Za-z0-9_-]{1,64}$", args[0]):
        raise UsageError(f"usage: /{verb} ID (the id on the request's card)")
    request_id = args[0]
    before = await services.approvals.get(request_id)
    if approve and before is not None and services.approvals.needs_step_up(before):
        raise UsageError(
            "this request needs a TOTP step-up: tap Approve on its card, "
            "then send your code to opsbot in private"
        )
    notifier = services.console_notifier or services.notifier()
    toast, runner = await operations.decide(services, caller.person, request_id, approve, notifier)
    if runner is not None:
        await runner()  # the card is edited with progress and the result as it runs
    filed = await services.approvals.get(request_id)
    if filed is None or filed == before or filed.status is Status.expired:
        raise UsageError(toast)  # refused: not an admin, own request, expired, already done
    if filed.chat_id is not None and filed.message_id is not None:
        return Reply(text=toast)  # the card itself, edited in place, shows the rest
    shown = operations.card(filed)
    return Reply(text=f"{toast}\n{shown.text}", block=shown.block)


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
            "/rollback TARGET [list | REVISION]",
            "back to the last known-good version (k8s: list revisions, pick one)",
            rollback,
            destructive=True,
        ),
        Verb(
            "backup",
            Role.operator,
            "/backup TARGET [list | verify [NAME] | restore NAME]",
            "verified backup; list them; test-restore one into scratch; restore one",
            backup,
        ),
        Verb("approve", Role.operator, "/approve ID", "approve a request (as a button)", approve),
        Verb("deny", Role.operator, "/deny ID", "deny a request; your own: cancel it", deny),
        Verb(
            "backups",
            Role.viewer,
            "/backups",
            "every target's newest backup, its age against the RPO, its size trend",
            backups_overview,
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
        Verb(*ONCALL_VERB),
        Verb("help", Role.viewer, "/help", "what you may do here", help_),
    )
}


# --------------------------------------------------------------------------- buttons


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """One kind of inline button: its data is ``key`` or ``key:ARG`` (≤ 64 bytes in all).

    ``role`` is the least role whose tap does anything (the handlers check it before acting);
    ``verb`` is the verb a tap runs with ARG as its argument, if any. Approve and Deny have
    finer rules on top, in approvals.py: only another admin approves; an admin denies, and the
    requester may cancel their own request.
    """

    key: str
    role: Role
    summary: str
    destructive: bool = False
    verb: str | None = None


BUTTONS: dict[str, ButtonSpec] = {
    b.key: b
    for b in (
        ButtonSpec("h", Role.viewer, "refresh health (all, or h:TARGET)", verb="health"),
        ButtonSpec("l", Role.viewer, "a target's logs (l:TARGET)", verb="logs"),
        ButtonSpec("a", Role.admin, "approve a request (a:ID)", destructive=True),
        ButtonSpec("d", Role.operator, "deny, or cancel one's own request (d:ID)"),
        ButtonSpec("al", Role.viewer, "an alert's target's logs (al:ID)", verb="logs"),
        ButtonSpec("ar", Role.operator, "restart an alert's target (ar:ID)", True, verb="restart"),
        ButtonSpec("as", Role.operator, "silence an alert's target for 1 h (as:ID)"),
        ButtonSpec("ak", Role.operator, "acknowledge an alert (ak:ID)"),
        ButtonSpec("ai", Role.operator, "declare an incident from an alert (ai:ID)"),
    )
}


# --------------------------------------------------------------------------- dispatch


async def dispatch(services: Services, caller: Caller, verb_name: str, args: list[str]) -> Reply:
    """Authorize, run and audit one command; the reply is redacted before it leaves."""
    return (await dispatch_outcome(services, caller, verb_name, args))[0]


async def dispatch_outcome(
    services: Services, caller: Caller, verb_name: str, args: list[str]
) -> tuple[Reply, str]:
    """``dispatch``, with its outcome: ok, usage, refused or unknown (the console's exit code).

    An outcome of ok whose reply starts with ❌ is a command that ran and failed.
    """
    verb = VERBS.get(verb_name)
    if verb is None:
        reply, outcome = Reply(text=f"unknown command /{verb_name[:32]}; try /help"), "unknown"
    elif not caller.role.allows(verb.role):
        services.audit.record_soon("refused", who=caller.name, user=caller.user_id, verb=verb_name)
        reply, outcome = Reply(text=f"/{verb_name} needs the {verb.role.value} role"), "refused"
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
            # Redacted whole before it is cut: a key split into words is still a key.
            args=[a[:64] for a in services.redactor.redact(" ".join(args)).split()[:8]],
            outcome=outcome,
            duration=round(time.monotonic() - started, 3),
            digest=digest(reply.text + reply.block),
        )
    return reply.redacted(services.redactor), outcome
