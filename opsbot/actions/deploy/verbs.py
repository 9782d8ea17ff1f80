"""/deploy TARGET VERSION [override REASON] | history, and /freeze, /unfreeze: the deploy
action filed through the lifecycle (its role and approval as declared); the freeze is an
admin's. Each is audited as every command is (its arguments: the reason); an override also
writes an ``override`` entry naming what it went past."""

from __future__ import annotations

from opsbot.actions import lifecycle
from opsbot.actions.deploy import gates, history
from opsbot.actions.deploy.action import DEPLOY, OVERRIDE
from opsbot.alerting.silences import parse_duration
from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.registry import Caller, Verb, audited, parse_target, register

USAGE = "usage: /deploy TARGET VERSION [override REASON] | /deploy TARGET history"


async def deploy(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/deploy TARGET VERSION [override REASON] | /deploy TARGET history"""
    if len(args) < 2 or len(args) == 3:
        raise UsageError(USAGE)
    name, target = parse_target(services, args[0])
    if len(args) == 2 and args[1].lower() == "history":
        return history.render(name, await history.recent(services.store, name))
    if len(args) > 2 and args[2].lower() != OVERRIDE:
        raise UsageError(USAGE)
    filed = await lifecycle.request(
        services, caller.person, DEPLOY, name, target, tuple(args[1:]),
        chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
    )  # fmt: skip
    if len(args) > 2:
        await services.audit.record(
            "override", who=caller.name, user=caller.user_id, chat=caller.chat_id, target=name,
            action=DEPLOY.name, request=filed.request_id, reason=" ".join(args[3:])[:200],
            held=await gates.held_back(services, name),
        )  # fmt: skip
    audited()
    return filed


async def freeze(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/freeze [DURATION] REASON: no deploys until it ends (or /unfreeze)."""
    if not args:
        raise UsageError("usage: /freeze [DURATION] REASON (e.g. /freeze 2h release day)")
    seconds: float | None = None
    if args[0][:1].isdigit():
        seconds = parse_duration(args[0])
        args = args[1:]
    if not args:
        raise UsageError("usage: /freeze [DURATION] REASON: say why")
    made = await gates.freeze(services.store, caller.name, " ".join(args)[:200], seconds)
    return Reply(text=f"🧊 {made.said()}. /deploy is refused until then (an admin may "
                 "override, with a reason).")  # fmt: skip


async def unfreeze(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/unfreeze: deploys allowed again."""
    if args:
        raise UsageError("usage: /unfreeze")
    was = await gates.unfreeze(services.store)
    if was is None:
        return Reply(text="No change freeze was on.")
    return Reply(text=f"🌤 change freeze lifted (it was {was.by}'s: {was.reason})")


register(
    Verb(
        DEPLOY.verb, DEPLOY.role, "/deploy TARGET VERSION [override REASON] | history",
        "a new version: backup, deploy, verified healthy, else rolled back", deploy,
        destructive=DEPLOY.destructive,
    ),
    Verb("freeze", Role.admin, "/freeze [DURATION] REASON", "a change freeze: no deploys",
         freeze, destructive=True),
    Verb("unfreeze", Role.admin, "/unfreeze", "end the change freeze", unfreeze,
         destructive=True),
)  # fmt: skip
