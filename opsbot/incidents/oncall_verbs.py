"""The /oncall verb (Telegram-free): who is on call now and next; overrides.

``/oncall`` · ``/oncall override NAME 4h [primary|secondary]`` · ``/oncall clear
[primary|secondary]``. Overrides need the operator role.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from opsbot.alerting import silences
from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.incidents import oncall
from opsbot.render import Reply, day_hhmm
from opsbot.verbs.registry import Caller, Verb, register

if TYPE_CHECKING:
    from opsbot.services import Services

USAGE = "/oncall | override NAME 4h [secondary] | clear [secondary]"
SUMMARY = "who is on call now and next; override the rotation for a while"
MAX_OVERRIDE = 14 * 86400


def _role(rest: list[str], usage: str) -> oncall.Role:
    if not rest:
        return "primary"
    word = rest[0].lower()
    if len(rest) > 1 or word not in oncall.ROLES:
        raise UsageError(f"usage: {usage}")
    return "primary" if word == "primary" else "secondary"


async def oncall_verb(
    services: Services,
    caller: Caller,
    args: list[str],
    clock: Callable[[], float] = time.time,
) -> Reply:
    """/oncall: see ``USAGE``."""
    settings = services.settings
    store = services.store
    now = clock()
    sub = args[0].lower() if args else ""
    if sub in ("override", "clear") and not caller.role.allows(Role.operator):
        raise UsageError("changing who is on call needs the operator role")
    if sub == "override":
        usage = "/oncall override NAME 4h [primary|secondary]"
        if len(args) < 3:
            raise UsageError(f"usage: {usage}")
        person = oncall.person_named(settings, args[1])
        if person is None:
            names = ", ".join(p.name for p in settings.people) or "none"
            raise UsageError(f"{args[1][:32]!r} is not one of the people: {names}")
        seconds = silences.parse_duration(args[2], minimum=60, maximum=MAX_OVERRIDE)
        role = _role(args[3:], usage)
        await oncall.who(settings, store, now)  # refuses when no rotation is configured
        done = await oncall.set_override(store, role, person.name, seconds, caller.name, now)
        return Reply(
            text=(
                f"📟 {person.name} is the {role} on call for {silences.describe(seconds)}"
                f" (until {day_hhmm(done.until)}), then the rotation again."
            )
        )
    if sub == "clear":
        role = _role(args[1:], "/oncall clear [primary|secondary]")
        await oncall.who(settings, store, now)
        if not await oncall.clear_override(store, role):
            return Reply(text=f"No {role} override to clear.")
        return Reply(text=f"📟 {role} override cleared: the rotation decides again.")
    if args:
        raise UsageError(f"usage: {USAGE}")
    return Reply(text=describe(services, await oncall.who(settings, store, now)))


def describe(services: Services, now_on: oncall.OnCall) -> str:
    settings = services.settings
    current, following = now_on.shift, now_on.next

    def name(person: object) -> str:
        return getattr(person, "name", "nobody")

    lines = [
        f"📟 On call now: primary {name(now_on.primary)} · secondary {name(now_on.secondary)}",
        f"Shift until {oncall.local_time(settings, current.end)}",
    ]
    for role, override in now_on.overrides.items():
        lines.append(
            f"Override: {override.name} is {role} until {day_hhmm(override.until)}"
            f" (set by {override.by})"
        )
    lines.append(
        f"Next ({oncall.local_time(settings, following.start)}): primary {following.primary}"
        f" · secondary {following.secondary or 'nobody'}"
    )
    if now_on.contacts:
        lines.append("Escalation contacts: " + ", ".join(p.name for p in now_on.contacts))
    return "\n".join(lines)


# (name, least role, usage, summary, verb): registered below.
VERB_SPEC = ("oncall", Role.viewer, USAGE, SUMMARY, oncall_verb)

register(Verb(*VERB_SPEC))
