"""The verbs every wing shares: /health, /logs, /audit, /help, and the h/l buttons.

/health checks every target concurrently and, over many targets, reports progress through
the caller's sink; healthy containers' images become known-good versions for /rollback.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import re
import time

from opsbot.actions import kinds as actions
from opsbot.alerting.engine import ALERT_ENGINE
from opsbot.alerting.records import Alert
from opsbot.config import Role, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.miniapp.link import board_buttons
from opsbot.objectives import clock as objectives_clock
from opsbot.objectives import day_chart
from opsbot.reach.checks import TargetHealth, check_all, check_phrase, check_target
from opsbot.reach.targets import (
    FILTER_SCAN_LINES,
    State,
    can_restart,
    fetch_logs,
    has_log_source,
)
from opsbot.render import Button, Document, Reply, clock, plural, short_duration
from opsbot.services import Services
from opsbot.state.audit import args_text
from opsbot.updates.notices import check_line
from opsbot.verbs.manual import help_
from opsbot.verbs.registry import (
    NUMBER,
    ButtonSpec,
    Caller,
    Verb,
    parse_count,
    parse_lines,
    parse_target,
    register,
    register_buttons,
)

log = logging.getLogger(__name__)


async def health(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/health [TARGET]"""
    if len(args) > 1:
        raise UsageError("usage: /health [TARGET]")
    if args:
        name, target = parse_target(services, args[0])
        result = await check_target(name, target, services)
        await _observe(services, [result])
        state = result.state.name.lower()
        head = f"{result.state.icon} {name}: {state} ({short_duration(result.latency)})"
        buttons = [Button("🔄 Refresh", f"h:{name}")]
        if has_log_source(target):
            buttons.append(Button("📜 Logs", f"l:{name}"))
        if result.state and can_restart(target):
            buttons.append(Button("🔁 Restart", f"hr:{name}"))
        text = f"{head} · {clock()}"
        if (unchecked := await check_line(services, name)) is not None:
            text += f"\n{unchecked}"  # the registry of its update notices is not answering
        # its rounds recorded (an objective): the last 24 h's latency, shown as a photo
        chart = await day_chart.latency(services, name, objectives_clock.now(), photo=True)
        if chart is not None:
            text += f"\n📈 {chart[0].removeprefix(f'{name}: ')}"
        return Reply(text=text, block=target_detail(result), buttons=tuple(buttons),
                     document=chart[1] if chart is not None else None)  # fmt: skip
    targets = services.settings.targets
    if not targets:
        return Reply(text="No targets are configured.")
    results = await _check_all_showing_progress(services, caller, targets)
    services.keep_long_lived()  # the connections a cold fan-out opened, out of gc's sight
    await _observe(services, results)
    firing = await _firing(services)
    text = f"Health: {health_counts(results, len(firing))} · {clock()}"
    failing = {r.target for r in results if r.state}
    unseen = [a for a in firing if a.target not in failing]  # e.g. an RPO alert
    for alert in unseen[:FIRING_SHOWN]:
        who = alert.target or alert.source
        what = (alert.summary.splitlines() or [alert.source])[0].removeprefix(f"{who}: ")
        text += f"\n🔔 {who}: {what[:80]}"
    if len(unseen) > FIRING_SHOWN:
        text += f"\n… /alerts shows {len(unseen) - FIRING_SHOWN} more"
    return Reply(
        text=text,
        block=health_block(results),
        buttons=(*failing_buttons(services, results), Button("🔄 Refresh", "h"),
                 *board_buttons(services.settings)),
    )


#: Firing alerts /health names under its headline, and failing targets it offers buttons for
#: (worst first): a phone shows a few rows of buttons, not a keyboard per target.
FIRING_SHOWN = 3
BUTTONED_TARGETS = 3


async def _firing(services: Services) -> list[Alert]:
    """The alerts firing now (none without an alert engine, or while the store is away)."""
    engine = ALERT_ENGINE.bound(services)
    if engine is None:
        return []
    try:
        return [a for a in await engine.list(firing_only=True) if a.firing]
    except Exception as exc:  # the health answer matters more than the alerts' count
        log.warning("/health without the firing alerts: %s", exc)
        return []


def failing_buttons(services: Services, results: list[TargetHealth]) -> list[Button]:
    """Logs and Restart beside the worst failing targets, only those that would work."""
    buttons: list[Button] = []
    bad = sorted((r for r in results if r.state), key=lambda r: (-r.state, r.target))
    for result in bad[:BUTTONED_TARGETS]:
        target = services.settings.targets[result.target]
        if has_log_source(target):
            buttons.append(Button(f"📜 {result.target}", f"l:{result.target}"))
        if can_restart(target):
            buttons.append(Button(f"🔁 {result.target}", f"hr:{result.target}"))
    return buttons


#: /health over more targets than this shows progress at once; fewer, only once it is slow.
PROGRESS_MIN_TARGETS = 20
#: Seconds before the progress message of a /health over few targets (an answer that comes
#: sooner needs none).
PROGRESS_AFTER = 0.5
#: Seconds a /health over many targets waits for its progress message to be in the chat
#: before it starts the checks: a fleet's checks keep the event loop so busy that the
#: message, queued first but sent by the outbox worker on the same loop, came ~0.95 s late
#: (1,000 SSH hosts, warm); a slow Bot API delays the checks by no more than this.
PROGRESS_WAIT = 0.3


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

    timer = None
    if len(targets) > PROGRESS_MIN_TARGETS:
        show()
        if caller.progress_shown is not None:
            await caller.progress_shown(PROGRESS_WAIT)
    else:
        timer = asyncio.get_running_loop().call_later(PROGRESS_AFTER, show)
    try:
        return await check_all(targets, services, on_result)
    finally:
        if timer is not None:
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
        output = await fetch_logs(
            name, target, services, lines, timeout=target.timeout, needle=needle
        )
    except (OpsbotError, LookupError, TimeoutError, RuntimeError) as exc:
        return Reply(text=f"❌ logs of {name} failed: {exc}")
    found = output.splitlines()[-lines:]  # an override argv may print more than asked
    if needle:  # matched on the host; again here, for an override argv that ignores it
        folded = needle.casefold()
        found = [line for line in found if folded in line.casefold()]
    body = "\n".join(found)
    if needle and len(found) < lines:  # every match there is, within the bounded search
        head = f"📜 {name} · {plural(len(found), 'line')} matching {needle!r}"
        head += f" in the last {FILTER_SCAN_LINES:,}"
    elif needle:
        head = f"📜 {name} · last {plural(len(found), 'line')} matching {needle!r}"
    else:
        head = f"📜 {name} · last {plural(len(found), 'line')}"
    if not body.strip():
        return Reply(text=f"{head} · nothing to show")
    limit = services.settings.limits.inline_chars - len(head) - 32
    if len(body) <= limit:
        return Reply(text=head, block=body, buttons=(Button("🔄 Refresh", f"l:{name}"),))
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Reply(
        text=f"{head} · {len(body):,} characters, attached\n{inline_tail(found)}",
        document=Document(f"{name}-{stamp}.log", body.encode()),
    )


#: What of a log sent as a file is shown in its message (a caption holds 1024 characters).
TAIL_LINES = 5
TAIL_CHARS = 700


def inline_tail(lines: list[str]) -> str:
    """The last few lines, each cut short, within TAIL_CHARS: a phone shows them at once."""
    shown: list[str] = []
    used = 0
    for line in reversed(lines[-TAIL_LINES:]):
        cut = line if len(line) <= 160 else line[:159] + "…"
        if used + len(cut) + 1 > TAIL_CHARS:
            break
        shown.insert(0, cut)
        used += len(cut) + 1
    return "\n".join(shown)


def _looks_numeric(word: str) -> bool:
    """A word meant as a line count (so '-5' or '1e9' is refused, not taken as a filter)."""
    return bool(re.match(r"^[+-]?[\d.,_e]+$", word, re.IGNORECASE)) and word[0] not in "eE"


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
        if NUMBER.match(word):
            count = parse_count(word, 200)
        else:
            target = parse_target(services, word)[0]
    entries = await services.audit.entries(target, count)
    if not entries:
        return Reply(text="The audit trail is empty.")
    # newest first by when each act happened: a command's entry is written just after its
    # reply, so it may be stored after a request filed a moment later
    entries.sort(key=lambda e: float(str(e.get("ts", 0))), reverse=True)
    lines = [_audit_line(e) for e in entries]
    return Reply(text=f"🧾 last {len(lines)} audit entries" + (f" of {target}" if target else ""),
                 block="\n".join(lines))  # fmt: skip


def _audit_line(entry: dict[str, object]) -> str:
    when = time.strftime("%m-%d %H:%M:%S", time.gmtime(float(str(entry.get("ts", 0)))))
    who = entry.get("who") or entry.get("username") or entry.get("user") or "-"
    what = entry.get("verb") or entry.get("action") or entry.get("kind") or ""
    target = entry.get("target") or ""
    args = args_text(entry.get("args"))
    if target and args.split(" ", 1)[0].lower() == target:
        target = ""  # a command's first word named it already
    request = entry.get("request")  # ties a request to its decision and its run
    ref = f"id={request}" if request and f"id={request}" not in args else ""
    extra = entry.get("outcome") or entry.get("status") or entry.get("summary") or ""
    extra = extra or entry.get("reason") or ""  # why it was refused
    if extra == entry.get("event"):
        extra = ""  # "approved bob restart web", not "… approved" twice
    if entry.get("ok") is not None:
        extra = ("ok " if entry["ok"] else "FAILED ") + str(entry.get("summary", ""))
    parts = (when, entry.get("event"), who, what, args, target, ref, extra)
    return " ".join(str(p) for p in parts if p)[:300]


def health_table(results: list[TargetHealth]) -> str:
    """One line per target, worst first (the caller sorts): icon, name, latency, why."""
    width = max((len(r.target) for r in results), default=0)
    lines = []
    for r in results:
        why = "" if r.state == 0 else f"  {r.summary}"
        lines.append(f"{r.state.icon} {r.target:<{width}} {short_duration(r.latency):>7}{why}")
    return "\n".join(lines)


#: Over this many targets /health lists only the worst ones, at most ``NAMED_UNHEALTHY``,
#: and counts the rest: one message that fits Telegram's 4,096 characters and a phone.
LISTED_TARGETS = 30
NAMED_UNHEALTHY = 20
#: Characters a row of that list keeps: what a phone shows of a <pre> line, unwrapped.
PHONE_CHARS = 44


def health_block(results: list[TargetHealth]) -> str:
    """Every target (worst first), or over ``LISTED_TARGETS`` the worst not-healthy ones by
    name, then "… 10 more not healthy" and "✅ 970 healthy"."""
    if len(results) <= LISTED_TARGETS:
        return health_table(results)
    bad = [r for r in results if r.state]  # worst first, like results
    named = bad[:NAMED_UNHEALTHY]
    width = max((len(r.target) for r in named), default=0)
    lines = []
    for r in named:
        line = f"{r.state.icon} {r.target:<{width}} {short_duration(r.latency):>6}  {_why(r)}"
        lines.append(line if len(line) <= PHONE_CHARS else line[: PHONE_CHARS - 1] + "…")
    if len(bad) > len(named):
        lines.append(f"… {len(bad) - len(named):,} more not healthy")
    if healthy := len(results) - len(bad):
        lines.append(f"{State.OK.icon} {healthy:,} healthy")
    return "\n".join(lines)


def _why(result: TargetHealth) -> str:
    """Its worst checks, each as a person reads it beside the target: "http /health: HTTP 500"."""
    worst = [c for c in result.checks if c.state is result.state]
    return "; ".join(f"{check_phrase(c.name)}: {c.detail}" for c in worst)


def health_counts(results: list[TargetHealth], firing: int = 0) -> str:
    """"3 targets, 1 failing, 1 alert firing"; "all healthy" only when nothing is wrong."""
    failing = sum(1 for r in results if r.state == 2)
    warning = sum(1 for r in results if r.state == 1)
    parts = [plural(len(results), "target")]
    if failing:
        parts.append(f"{failing} failing")
    if warning:
        parts.append(f"{warning} warning")
    if firing:
        parts.append(f"{plural(firing, 'alert')} firing")
    if not failing and not warning and not firing:
        parts.append("all healthy")
    return ", ".join(parts)


def target_detail(result: TargetHealth) -> str:
    """Each check of one target on its own line."""
    lines = []
    for check in result.checks:
        latency = short_duration(check.latency) if check.latency is not None else "-"
        lines.append(f"{check.state.icon} {check.name}  {latency:>7}  {check.detail}")
    return "\n".join(lines)


register(
    Verb("health", Role.viewer, "/health [TARGET]", "every target, worst first", health),
    Verb(
        "logs",
        Role.viewer,
        "/logs TARGET [LINES] [FILTER]",
        "last lines (default 100); with FILTER, the last matching ones",
        logs,
    ),
    Verb(
        "audit",
        Role.viewer,
        "/audit [TARGET] [N] | /audit export",
        "who did what, newest first",
        audit,
        reads_only=True,
    ),
    Verb("help", Role.viewer, "/help [COMMAND]", "what you may do here", help_, reads_only=True),
)
register_buttons(
    ButtonSpec("h", Role.viewer, "refresh health (all, or h:TARGET)", verb="health"),
    ButtonSpec("l", Role.viewer, "a target's logs (l:TARGET)", verb="logs"),
    ButtonSpec("hr", Role.operator, "restart a target (hr:TARGET)", True, verb="restart"),
)
