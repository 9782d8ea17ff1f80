"""/help for a phone, and the words of Telegram's command menu.

``/help`` is a few lines of plain text (Telegram makes each ``/command`` tappable, which it
does not inside a preformatted block): only the commands the caller's role may use and that
the configuration makes useful (no ``/oncall`` without an on-call rotation, no ``/backup``
without a backup source). ``/help VERB`` is one command's page: its usage, what it does, who
may use it (by name) and examples with a real target.

The registry holds each verb's role and usage (the authorization table); the words a person
reads are kept here, in one place, so that /help and the menu say the same. A verb without a
page falls back to its registered usage and summary.

Both answers depend only on the configuration and the caller's role, so each is computed once
per configuration and role: /help costs no store round trip and no formatting per call.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from opsbot.config import Role, Settings, Target
from opsbot.errors import UsageError
from opsbot.reach.targets import can_restart, has_log_source
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.registry import VERBS, WORKS_ON, Caller, Verb, holders

#: Targets an example or a "works on" line names at most (a phone shows them on one line).
SHOWN_TARGETS = 8


@dataclass(frozen=True, slots=True)
class Page:
    """What a person reads about one verb."""

    #: (least role, one line): the caller's highest fitting line is the verb's line in /help
    #: and its description in the command menu; a caller no line fits does not see the verb.
    lines: tuple[tuple[Role, str], ...]
    does: str
    #: Typed examples; ``{target}`` becomes a configured target the verb works on.
    examples: tuple[str, ...] = ()
    #: The targets the verb works on (None: every target, or it takes none).
    fits: Callable[[Target], bool] | None = None
    #: Whether the configuration makes the verb useful at all (None: always).
    configured: Callable[[Settings], bool] | None = None


def _can_roll_back(target: Target) -> bool:
    return target.actions.rollback is not None or target.kind in ("container", "k8s")


def _can_deploy(target: Target) -> bool:
    if target.kind in ("container", "compose", "k8s"):
        return True
    return target.deploy is not None and target.deploy.argv is not None


def _any_deploys(settings: Settings) -> bool:
    return any(_can_deploy(t) for t in settings.targets.values())


def _has_backups(target: Target) -> bool:
    return bool(target.backups)


def _has_objectives(settings: Settings) -> bool:
    return any(settings.objective(name) is not None for name in settings.targets)


def _any_backups(settings: Settings) -> bool:
    return any(t.backups for t in settings.targets.values())


def _has_oncall(settings: Settings) -> bool:
    return settings.oncall is not None


PAGES: dict[str, Page] = {
    "health": Page(
        ((Role.viewer, "every target's health, worst first"),),
        "Checks every target at once and answers worst first, with each one's latency; a "
        "failing target gets Logs and Restart buttons. /health TARGET shows each check of one.",
        ("/health", "/health {target}"),
    ),
    "logs": Page(
        ((Role.viewer, "a target's last log lines, filtered"),),
        "The last LINES lines (default 100, at most 10000) of a target's log, read on its host. "
        "With FILTER: the last LINES lines that contain it, in any case, searched on the host "
        "among its newest 50,000. A long answer arrives as a file, its last lines shown above.",
        ("/logs {target}", "/logs {target} 50 error"),
        fits=has_log_source,
    ),
    "restart": Page(
        ((Role.operator, "restart a target, once an admin approves"),),
        "Files a restart that another admin approves (the card's button, or /approve ID); then "
        "opsbot restarts the target and checks it is healthy again. If it is not, the card "
        "shows its last log lines.",
        ("/restart {target}",),
        fits=can_restart,
    ),
    "rollback": Page(
        ((Role.operator, "back to the last known-good version"),),
        "Shows the current and the previous known-good version and, once another admin "
        "approves, goes back to it, then checks the target. Kubernetes: /rollback TARGET list "
        "shows the revisions, /rollback TARGET N picks one.",
        ("/rollback {target}",),
        fits=_can_roll_back,
    ),
    "deploy": Page(
        ((Role.operator, "a new version, rolled back if not healthy"),),
        "Shows current → new and every step; once another admin approves: a verified backup "
        "(if any), the deploy, the target's checks, and back to what ran before if they fail. "
        "/deploy TARGET history: who deployed what, when, how it ended.",
        ("/deploy {target} 2.1", "/deploy {target} history"),
        fits=_can_deploy,
    ),
    "freeze": Page(
        ((Role.admin, "a change freeze: no deploys"),),
        "Refuses /deploy until it ends (a DURATION such as 2h) or /unfreeze; an admin may still "
        "deploy with override REASON, audited.",
        ("/freeze 2h release day", "/unfreeze"),
        configured=_any_deploys,
    ),
    "unfreeze": Page(
        ((Role.admin, "end the change freeze"),),
        "Lifts the change freeze: /deploy runs again.",
        ("/unfreeze",),
        configured=_any_deploys,
    ),
    "backup": Page(
        ((Role.operator, "back up a target now; list, verify, restore"),),
        "Backs up each of the target's sources now, verified and checksummed. list shows the "
        "kept backups; verify test-restores one into scratch; restore NAME needs approval.",
        ("/backup {target}", "/backup {target} list", "/backup {target} verify"),
        fits=_has_backups,
        configured=_any_backups,
    ),
    "backups": Page(
        ((Role.viewer, "the newest backups against their RPO"),),
        "Every target's newest backup per source, its age against the RPO, its size trend "
        "and the next scheduled run.",
        ("/backups",),
        configured=_any_backups,
    ),
    "approve": Page(
        ((Role.admin, "approve a request (or tap Approve)"),),
        "Runs another person's request (a restart, a rollback, a restore). You cannot approve "
        "your own; ids are on the request's card.",
        ("/approve ID",),
    ),
    "deny": Page(
        ((Role.operator, "cancel your own request"), (Role.admin, "deny a request")),
        "Denies a request (admins), or cancels your own; nothing runs.",
        ("/deny ID",),
    ),
    "audit": Page(
        ((Role.viewer, "who did what, newest first"),),
        "The audit trail, newest first: N entries (default 20), of one target or all. "
        "/audit export sends the whole trail as a JSON lines file.",
        ("/audit", "/audit {target} 50", "/audit export"),
    ),
    "alerts": Page(
        ((Role.viewer, "firing alerts first, then recent"),),
        "Firing alerts first (most severe, newest), then the recent ones; all includes "
        "resolved ones.",
        ("/alerts", "/alerts all 50"),
    ),
    "ack": Page(
        ((Role.operator, "acknowledge an alert: reminders stop"),),
        "Marks an alert as yours: its reminders stop; it still resolves by itself.",
        ("/ack ID",),
    ),
    "silence": Page(
        ((Role.operator, "mute a target's alerts for a while"),),
        "No alert messages about a target (or * for all) for a while; alerts are still "
        "recorded. /silence list shows the silences and what each matches.",
        ("/silence {target} 1h deploy", "/silence list"),
    ),
    "unsilence": Page(
        ((Role.operator, "end a silence early"),),
        "Ends a silence before its time; ids are in /silence list.",
        ("/unsilence ID",),
    ),
    "incident": Page(
        (
            (Role.viewer, "open incidents; one's card"),
            (Role.operator, "declare and run an incident"),
        ),
        "Incidents with a pinned status card and a timeline: declare one (P0 most severe), "
        "then ack, update, mitigated, resolve (which drafts the post-mortem); the card's "
        "✏️ Update asks for the text as a reply. list and show are for everyone.",
        ("/incident P1 checkout failing {target}", "/incident list", "/incident show INC-1"),
    ),
    "slo": Page(
        ((Role.viewer, "objectives: budget left, burn rate"),),
        "Each target's objective from the monitor's own rounds: the SLI over its window, the "
        "error budget left (share and minutes), the burn rate over 1 h and 6 h, and when the "
        "budget is gone at that rate; least budget left first, or one target in detail.",
        ("/slo", "/slo {target}"),
        configured=_has_objectives,
    ),
    "report": Page(
        ((Role.viewer, "objectives report with a chart"),),
        "Per target over the last 7 (or 30) days: availability against its objective, budget "
        "left, p95 latency, incidents with time to acknowledge and resolve, alerts, restarts "
        "and rollbacks, backups against their RPO; with a PNG chart of availability and p95 "
        "latency per day. objectives.report sends it by itself, daily or weekly.",
        ("/report", "/report 30d"),
        configured=_has_objectives,
    ),
    "latency": Page(
        ((Role.viewer, "a target's latency chart, last 24 h"),),
        "A PNG chart of the target's p95 latency per 10 minutes over the last 24 h, from the "
        "monitor's rounds, with its latency objective; /health TARGET shows it inline.",
        ("/latency {target}",),
        configured=_has_objectives,
    ),
    "oncall": Page(
        (
            (Role.viewer, "who is on call now and next"),
            (Role.operator, "who is on call; override it"),
        ),
        "Who is on call now and next from the rotation; operators may override it for a while "
        "(/oncall override NAME 4h) and clear the override.",
        ("/oncall", "/oncall override alice 4h"),
        configured=_has_oncall,
    ),
    "help": Page(
        ((Role.viewer, "this list, or one command's page"),),
        "This list, for your role; /help and a command's name shows that command's page.",
        ("/help", "/help logs"),
    ),
}

WORKS_ON.update((name, p.fits) for name, p in PAGES.items() if p.fits is not None)


def line_for(verb: Verb, role: Role) -> str | None:
    """The verb's one line for this role, or None when the role may not use it."""
    page = PAGES.get(verb.name)
    if page is None:
        return verb.summary if role.allows(verb.role) else None
    fitting = [text for least, text in page.lines if role.allows(least) and role.allows(verb.role)]
    return fitting[-1] if fitting else None


def offered(settings: Settings, verb: Verb) -> bool:
    """Whether the configuration makes the verb useful (its targets exist, it is set up)."""
    page = PAGES.get(verb.name)
    if page is None:
        return True
    if page.configured is not None and not page.configured(settings):
        return False
    if page.fits is not None:
        return any(page.fits(t) for t in settings.targets.values())
    return True


def menu(
    settings: Settings, role: Role, verbs: Mapping[str, Verb] = VERBS
) -> list[tuple[str, str]]:
    """(command, description) for Telegram's command menu: what /help lists for the role."""
    found = []
    for verb in verbs.values():
        line = line_for(verb, role)
        if line is not None and offered(settings, verb):
            found.append((verb.name, line[:1].upper() + line[1:]))
    found.sort(key=lambda item: item[0] == "help")  # /help last, after every wing's verbs
    return found


# One answer per configuration, role and page; the configuration is kept with it, so an id
# is never reused by another configuration while it is cached.
_CACHE: dict[tuple[int, Role, str], tuple[Settings, str]] = {}
_CACHE_SIZE = 256


def _cached(settings: Settings, role: Role, key: str, make: Callable[[], str]) -> str:
    slot = (id(settings), role, key)
    hit = _CACHE.get(slot)
    if hit is not None and hit[0] is settings:
        return hit[1]
    if len(_CACHE) >= _CACHE_SIZE:
        _CACHE.clear()
    text = make()
    _CACHE[slot] = (settings, text)
    return text


async def help_(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/help [VERB]"""
    settings = services.settings
    if len(args) > 1:
        raise UsageError("usage: /help [COMMAND], e.g. /help logs")
    if not args:
        text = _cached(settings, caller.role, "", lambda: overview(settings, caller.role))
        return Reply(text=f"You are {caller.name} ({caller.role.value}). " + text)
    name = args[0].lstrip("/").split("@", 1)[0].lower()
    verb = VERBS.get(name)
    if verb is None:
        raise UsageError(_unknown_command(name, settings, caller.role))
    text = _cached(settings, caller.role, name, lambda: page(settings, caller.role, verb))
    return Reply(text=text)


def overview(settings: Settings, role: Role) -> str:
    """The commands the role may use here, one tappable line each, and the targets."""
    names = sorted(settings.targets)
    if not names:
        where = "No targets are configured."
    elif len(names) <= SHOWN_TARGETS:
        where = f"Targets: {', '.join(names)}."
    else:
        where = f"{len(names)} targets (/health lists them)."
    lines = [f"/{name} — {text}" for name, text in menu(settings, role)]
    return "\n".join([where, "", *lines, "", "/help COMMAND for one command, e.g. /help logs"])


def page(settings: Settings, role: Role, verb: Verb) -> str:
    """One command: usage, what it does, who may use it, where, and examples."""
    spec = PAGES.get(verb.name)
    summary = verb.summary if spec is None else spec.lines[-1][1]
    lines = [verb.usage, summary[:1].upper() + summary[1:] + "."]
    if spec is not None:
        lines.append(spec.does)
    who = holders(settings, verb.role)
    may = "you may" if role.allows(verb.role) else f"you ({role.value}) may not"
    lines.append(f"Who: {verb.role.value} role and up ({who}); {may}.")
    if spec is not None and not offered(settings, verb):
        lines.append("Not set up in this configuration.")
    fitting = sorted(n for n, t in settings.targets.items() if spec is None or _fits(spec, t))
    if spec is not None and spec.fits is not None and fitting:
        shown = ", ".join(fitting[:SHOWN_TARGETS]) + (" …" if len(fitting) > SHOWN_TARGETS else "")
        lines.append(f"Works on: {shown}.")
    if spec is not None and spec.examples and (fitting or spec.fits is None):
        example = fitting[0] if fitting else "TARGET"
        lines += ["", "Examples:", *(e.replace("{target}", example) for e in spec.examples)]
    return "\n".join(lines)


def _fits(spec: Page, target: Target) -> bool:
    return spec.fits is None or spec.fits(target)


def _unknown_command(name: str, settings: Settings, role: Role) -> str:
    shown = name if len(name) <= 32 else name[:32] + "…"
    mine = [n for n, _ in menu(settings, role)]
    near = difflib.get_close_matches(name, mine, n=1, cutoff=0.6)
    hint = f"; did you mean /help {near[0]}?" if near else "."
    return f"no command /{shown}{hint} Yours: " + ", ".join(f"/{n}" for n in mine)
