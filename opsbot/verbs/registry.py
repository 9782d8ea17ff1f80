"""The verb registry, Telegram-free: one table the chat and the console share.

``VERBS`` and ``BUTTONS`` are the authorization table: each verb and each kind of button
declares the least role that may use it and whether it is destructive. ``dispatch`` enforces
it for verbs, the button handler for taps (tests/verbs/test_authz_matrix.py proves both). Arguments
from chat are validated by the verbs (``parse_target`` and friends: target names must exist,
numbers are bounded) and are never joined into a shell string.

Each wing's ``verbs`` module adds its verbs and buttons with ``register`` and
``register_buttons`` when imported; ``opsbot.catalog`` imports them all. This module imports
no wing, so nothing imports back up.
"""

from __future__ import annotations

import difflib
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field

from opsbot.config import Person, Role, Settings, Target
from opsbot.errors import UsageError
from opsbot.notify import ProgressSink
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.state.audit import digest


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
    #: Waits (at most the seconds given) until the first progress message is in the chat;
    #: True once it is. None where progress is not shown or not waited for.
    progress_shown: Callable[[float], Awaitable[bool]] | None = field(
        default=None, compare=False
    )

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
    #: Reaches no target and changes nothing: it reads opsbot's own state and answers. Run
    #: twice it would only answer twice, so it runs while its update_id is being claimed and
    #: only its reply waits for the claim; it shows no progress (opsbot/handlers/ingress.py).
    #: A verb that runs anything on a target (even a health check) waits for the claim first.
    reads_only: bool = False


def command_verb(text: str) -> str:
    """The verb a chat command names: "/Help@opsbot_bot args" is "help" (/start is /help)."""
    verb = text.split(maxsplit=1)[0][1:].split("@", 1)[0].lower() if text.strip() else ""
    return "help" if verb == "start" else verb


#: Every verb by name, in the order /help and Telegram's command menu show them.
VERBS: dict[str, Verb] = {}


def register(*verbs: Verb) -> None:
    """Add a wing's verbs to the table (at the wing's import)."""
    for verb in verbs:
        if verb.name in VERBS:
            raise ValueError(f"/{verb.name} is registered twice")
        VERBS[verb.name] = verb


def arrange(order: Sequence[str]) -> None:
    """Put ``VERBS`` in this order (the ones not named keep theirs, after)."""
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(VERBS.values(), key=lambda v: rank.get(v.name, len(rank)))
    VERBS.clear()
    VERBS.update((v.name, v) for v in ordered)


# --------------------------------------------------------------------------- argument parsing


#: Names a message lists at most (the rest are counted): a phone shows about this many.
LISTED = 12


def listing(names: Sequence[str], limit: int = LISTED) -> str:
    """"a, b, c" or "a, b, … (12 more)"; "none" for no names."""
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names) - limit} more)" if len(names) > limit else "")


def parse_target(services: Services, word: str) -> tuple[str, Target]:
    """A configured target by name (any case); a miss names the nearest one and the rest."""
    name = word.lower()
    target = services.settings.targets.get(name)
    if target is None:
        names = sorted(services.settings.targets)
        shown = word if len(word) <= 32 else word[:32] + "…"
        if not names:
            raise UsageError(f"unknown target {shown!r}: no targets are configured")
        near = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f"; did you mean {near[0]}?" if near else ";"
        raise UsageError(f"unknown target {shown!r}{hint} targets: {listing(names)}")
    return name, target


def holders(settings: Settings, role: Role) -> str:
    """Who has this role or a higher one, by name: "oscar, alice, bob" (or "nobody")."""
    names = [p.name for p in settings.people if p.role.allows(role)]
    return listing(names) if names else "nobody is configured with it"


def refusal(settings: Settings, what: str, role: Role) -> str:
    """"/restart needs the operator role: oscar, alice, bob have it" (a refusal that says
    whom to ask)."""
    names = [p.name for p in settings.people if p.role.allows(role)]
    if not names:
        return f"{what} needs the {role.value} role, and nobody is configured with it"
    have = "has" if len(names) == 1 else "have"
    return f"{what} needs the {role.value} role: {listing(names)} {have} it"


NUMBER = re.compile(r"^[+-]?\d+$")


def parse_lines(services: Services, word: str) -> int:
    limit = services.settings.limits.max_log_lines
    if not NUMBER.match(word) or not 1 <= int(word) <= limit:
        raise UsageError(f"lines must be a whole number from 1 to {limit}, not {word[:20]!r}")
    return int(word)


def parse_count(word: str, limit: int) -> int:
    if not NUMBER.match(word) or not 1 <= int(word) <= limit:
        raise UsageError(f"N must be a whole number from 1 to {limit}")
    return int(word)


# --------------------------------------------------------------------------- buttons


@dataclass(frozen=True, slots=True)
class ButtonSpec:
    """One kind of inline button: its data is ``key`` or ``key:ARG`` (≤ 64 bytes in all).

    ``role`` is the least role whose tap does anything (the handlers check it before acting);
    ``verb`` is the verb a tap runs with ARG as its argument, if any. Approve and Deny have
    finer rules on top, in approvals.py: only another admin approves; an admin denies, and the
    requester may cancel their own request. A button without a verb is audited by the handlers
    as one ``tap`` entry, unless ``audits_itself``: its wing writes a richer entry of its own
    (a decision, an alert's silence) or the tap changes nothing (a prompt).
    """

    key: str
    role: Role
    summary: str
    destructive: bool = False
    verb: str | None = None
    audits_itself: bool = False


BUTTONS: dict[str, ButtonSpec] = {}


def register_buttons(*specs: ButtonSpec) -> None:
    """Add a wing's kinds of button to the table (at the wing's import)."""
    for spec in specs:
        if spec.key in BUTTONS:
            raise ValueError(f"button key {spec.key!r} is registered twice")
        BUTTONS[spec.key] = spec


# --------------------------------------------------------------------------- dispatch

#: Set by a verb that wrote its own audit entry of this command (a request filed, a decision
#: recorded, with its arguments): dispatch then writes no second, generic one.
_audited: ContextVar[bool] = ContextVar("opsbot_verb_audited", default=False)


def audited() -> None:
    """Called by a verb whose own audit entry stands for this command."""
    _audited.set(True)


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
        text = refusal(services.settings, f"/{verb_name}", verb.role)
        reply, outcome = Reply(text=text), "refused"
    else:
        started = time.monotonic()
        own = _audited.set(False)
        try:
            reply = await verb.run(services, caller, args)
            outcome = "ok"
        except UsageError as exc:
            text = _with_targets(services, verb_name, str(exc))
            reply, outcome = Reply(text=f"⚠️ {text}"), "usage"
        finally:
            by_verb = _audited.get()
            _audited.reset(own)
        services.metrics.commands_total.labels(verb=verb_name, outcome=outcome).inc()
        if by_verb:  # its own entry (a request filed, a decision) stands for the command
            return reply.redacted(services.redactor), outcome
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


#: Per verb, which targets it works on (a restart needs a kind that restarts), for the
#: targets a usage error lists; filled by opsbot.verbs.manual, which describes each verb.
WORKS_ON: dict[str, Callable[[Target], bool]] = {}


def _with_targets(services: Services, verb: str, message: str) -> str:
    """A usage line that asks for a TARGET also lists the ones it works on: no guessing."""
    if not message.startswith("usage:") or "TARGET" not in message or "targets:" in message:
        return message
    fits = WORKS_ON.get(verb)
    names = sorted(n for n, t in services.settings.targets.items() if fits is None or fits(t))
    return f"{message}; targets: {listing(names)}"
