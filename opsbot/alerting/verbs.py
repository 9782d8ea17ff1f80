"""The alert verbs: /alerts, /silence, /unsilence, /ack (Telegram-free).

Each takes the ``AlertEngine`` in front of a verb's arguments; ``_bound`` finds the engine in
``Services`` (only ``opsbot run`` has one) and registers them, with the alert buttons, in
``opsbot.verbs.registry``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from opsbot.alerting import silences
from opsbot.alerting.engine import ALERT_ENGINE, AlertEngine
from opsbot.alerting.records import Alert, plural
from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.render import Document, Reply, hhmm, span
from opsbot.verbs.registry import ButtonSpec, Caller, Handler, Verb, register, register_buttons

if TYPE_CHECKING:
    from opsbot.services import Services

MAX_LISTED = 500
DEFAULT_LISTED = 30
_NUMBER = re.compile(r"^\d{1,6}$")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _count(word: str) -> int:
    if not _NUMBER.match(word) or not 1 <= int(word) <= MAX_LISTED:
        raise UsageError(f"N must be a whole number from 1 to {MAX_LISTED}")
    return int(word)


def _an_id(word: str, what: str, hint: str) -> str:
    if not _ID.match(word):
        shown = word if len(word) <= 32 else word[:32] + "…"
        raise UsageError(f"{shown!r} is not {what} id; {hint}")
    return word


def alert_line(alert: Alert) -> str:
    """One line of /alerts: icon, id, target, count, since, flags, summary."""
    who = alert.target or alert.source
    flags = []
    if alert.acked_by:
        flags.append(f"acked {alert.acked_by}")
    if alert.silenced and alert.firing:
        flags.append("silenced")
    if alert.digested and alert.message_id is None:
        flags.append("in digest")
    flag = f" [{', '.join(flags)}]" if flags else ""
    summary = alert.summary if len(alert.summary) <= 70 else alert.summary[:69] + "…"
    if alert.firing:
        head = (
            f"{alert.severity.icon} {alert.id} {who} ×{alert.count} since {hhmm(alert.first_seen)}"
        )
    else:
        took = span((alert.resolved_at or alert.last_seen) - alert.first_seen)
        head = f"✅ {alert.id} {who} ×{alert.count} resolved {hhmm(alert.last_seen)} after {took}"
    return f"{head}{flag} — {summary}"


async def alerts_verb(
    engine: AlertEngine, services: Services, caller: Caller, args: list[str]
) -> Reply:
    """/alerts [all] [N]: firing alerts, most severe first; with ``all`` recent ones too."""
    show_all = False
    limit = DEFAULT_LISTED
    if len(args) > 2:
        raise UsageError("usage: /alerts [all] [N]")
    for word in args:
        if word.lower() == "all":
            show_all = True
        elif _NUMBER.match(word):
            limit = _count(word)
        else:
            raise UsageError("usage: /alerts [all] [N]")
    # Only the alerts shown are held, the others counted: a storm records tens of thousands.
    listing = await engine.listing(firing_only=not show_all, limit=limit)
    shown = listing.shown
    if listing.firing:
        parts = [f"{listing.critical} critical"] if listing.critical else []
        parts += [f"{listing.acked} acked"] if listing.acked else []
        parts += [f"{listing.silenced} silenced"] if listing.silenced else []
        head = f"🚨 {listing.firing} firing" + (f" ({', '.join(parts)})" if parts else "")
    else:
        head = "✅ nothing firing"
    storm = await engine.storm()
    if storm is not None:
        head += (
            f" · 🌩 storm since {hhmm(storm.started)}: {storm.total:,} alerts, {storm.new:,} new"
        )
    if not shown:
        return Reply(text=head + (" · no alerts recorded" if show_all else ""))
    more = listing.listed - len(shown)
    head += f" · showing {len(shown)}" + (
        f" (+{more} more: /alerts all {MAX_LISTED})" if more else ""
    )
    body = "\n".join(alert_line(a) for a in shown)
    footer = "/ack ID · /silence TARGET 1h"
    limit_chars = services.settings.limits.inline_chars - len(head) - len(footer) - 32
    if len(body) <= limit_chars:
        return Reply(text=f"{head}\n{footer}", block=body)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return Reply(
        text=f"{head} · attached\n{footer}",
        document=Document(f"alerts-{stamp}.txt", body.encode()),
    )


def silence_line(silence: silences.Silence, now: float) -> str:
    """One line of /silence list: id, what it matches, until, by whom, why."""
    left = span(silence.ends - now)
    note = f" — {silence.reason}" if silence.reason else ""
    return (
        f"🔕 {silence.id}: {silence.what}, until {hhmm(silence.ends)} ({left} left)"
        f" by {silence.created_by}{note}"
    )


async def silence_verb(
    engine: AlertEngine, services: Services, caller: Caller, args: list[str]
) -> Reply:
    """/silence TARGET DURATION [reason…] | /silence list"""
    usage = "usage: /silence TARGET DURATION [reason] (TARGET or *; e.g. 90m, 1h30m, 2d) | list"
    now = engine.clock()
    if len(args) == 1 and args[0].lower() == "list":
        active = await silences.active(engine.store, now)
        if not active:
            return Reply(text="🔔 no silences in force.")
        return Reply(
            text=f"🔕 {plural(len(active), 'silence')} in force · /unsilence ID",
            block="\n".join(silence_line(s, now) for s in active),
        )
    if len(args) < 2:
        raise UsageError(usage)
    target = args[0].lower()
    if target != silences.EVERY_TARGET and target not in services.settings.targets:
        known = ", ".join(sorted(services.settings.targets)) or "none configured"
        shown = args[0] if len(args[0]) <= 32 else args[0][:32] + "…"
        raise UsageError(f"unknown target {shown!r}; known targets: {known}, or * for all")
    seconds = silences.parse_duration(args[1])
    reason = " ".join(args[2:])
    if len(reason) > 200:
        raise UsageError("the reason is limited to 200 characters")
    silence = await engine.silence_target(target, seconds, reason, caller.person)
    what = "every target" if target == silences.EVERY_TARGET else target
    note = f" — {reason}" if reason else ""
    return Reply(
        text=(
            f"🔕 {what} silenced for {silences.describe(seconds)}, until {hhmm(silence.ends)}:"
            f" {silence.what}, whatever the check · by {caller.name} · id {silence.id}{note}\n"
            "Alerts are still recorded (/alerts); /unsilence " + silence.id + " ends it early."
            " To silence one alert only, tap 🔕 on its card."
        )
    )


async def unsilence_verb(
    engine: AlertEngine, services: Services, caller: Caller, args: list[str]
) -> Reply:
    """/unsilence ID"""
    if len(args) != 1:
        raise UsageError("usage: /unsilence ID (see /silence list)")
    silence_id = _an_id(args[0], "a silence", "see /silence list")
    ended = await engine.unsilence(silence_id, caller.person)
    if ended is None:
        raise UsageError(f"no silence {silence_id!r} in force; see /silence list")
    return Reply(
        text=f"🔔 silence {ended.id} of {ended.what} ended by {caller.name}; alerts post again."
    )


async def ack_verb(
    engine: AlertEngine, services: Services, caller: Caller, args: list[str]
) -> Reply:
    """/ack ID"""
    if len(args) != 1:
        raise UsageError("usage: /ack ID (the id is on the alert and in /alerts)")
    alert = await engine.get(_an_id(args[0], "an alert", "see /alerts"))  # any case
    if alert is None:
        raise UsageError(f"no alert {args[0][:16]!r}; see /alerts")
    toast = await engine.ack(alert.id, caller.person)
    return Reply(text=f"👀 {alert.id}: {toast}")


#: The alert buttons done here, each answered with a toast (the others run a verb).
ALERT_TAPS = {"ak": "ack", "as": "silence", "au": "unsilence"}
SILENCE_BUTTON_SECONDS = 3600


async def alert_tap(services: Services, caller: Caller, key: str, alert_id: str) -> str:
    """Ack, Silence 1h or Unsilence tapped on an alert's card: done, audited (one entry with
    who, what and its arguments), and the toast returned."""
    engine = ALERT_ENGINE.bound(services)
    alert = await engine.get(alert_id) if engine is not None else None
    if engine is None or alert is None:
        return "This alert is no longer known."
    args = {"alert": alert_id}
    if key == "ak":
        toast = await engine.ack(alert_id, caller.person)
    elif key == "as":
        toast = await engine.silence_alert(alert_id, caller.person, SILENCE_BUTTON_SECONDS)
        args["for"] = silences.describe(SILENCE_BUTTON_SECONDS)
    elif key == "au":
        toast = await engine.unsilence_alert(alert_id, caller.person)
    else:
        raise ValueError(f"not an alert tap: {key!r}")
    after = await engine.get(alert_id)
    services.audit.record_soon(  # a tap's entry, as Audit.tap writes it, with the alert's ids
        "tap", who=caller.name, user=caller.user_id, chat=caller.chat_id,
        verb=ALERT_TAPS[key], button=key, args=args,
        target=alert.target if alert.target in services.settings.targets else None,
        alert=alert_id, identity=alert.identity, fingerprint=alert.fingerprint,
        silence=(after or alert).silence_id or alert.silence_id, outcome=toast[:200],
    )  # fmt: skip
    return toast


AlertVerb = Callable[[AlertEngine, "Services", Caller, list[str]], Awaitable[Reply]]

# (name, least role, usage, summary, verb): registered below, bound to the engine.
VERB_SPECS: tuple[tuple[str, Role, str, str, AlertVerb], ...] = (
    ("alerts", Role.viewer, "/alerts [all] [N]", "firing alerts first, then recent", alerts_verb),
    ("ack", Role.operator, "/ack ID", "acknowledge an alert: reminders stop", ack_verb),
    (
        "silence",
        Role.operator,
        "/silence TARGET|* DURATION [reason] | list",
        "no alert messages of a target for a while (still recorded)",
        silence_verb,
    ),
    ("unsilence", Role.operator, "/unsilence ID", "end a silence early", unsilence_verb),
)


def _bound(verb: AlertVerb) -> Handler:
    async def run(services: Services, caller: Caller, args: list[str]) -> Reply:
        engine = ALERT_ENGINE.bound(services)
        if engine is None:
            raise UsageError("alerts are handled by the running bot (opsbot run), not here")
        return await verb(engine, services, caller, args)

    return run


register(*(Verb(*spec[:4], _bound(spec[4])) for spec in VERB_SPECS))
register_buttons(
    ButtonSpec("al", Role.viewer, "an alert's target's logs (al:ID)", verb="logs"),
    ButtonSpec("ar", Role.operator, "restart an alert's target (ar:ID)", True, verb="restart"),
    ButtonSpec("ab", Role.operator, "back up an alert's target now (ab:ID)", verb="backup"),
    ButtonSpec("as", Role.operator, "silence this alert (not its target) for 1 h (as:ID)",
        audits_itself=True),
    ButtonSpec("au", Role.operator, "end the silence shown on an alert (au:ID)",
        audits_itself=True),
    ButtonSpec("ak", Role.operator, "acknowledge an alert (ak:ID)", audits_itself=True),
    ButtonSpec("ai", Role.operator, "declare an incident from an alert (ai:ID)",
        audits_itself=True),  # only asks the severity: the P0–P3 tap (is:ID:P1) is the act
)
