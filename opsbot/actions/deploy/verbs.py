"""/deploy TARGET VERSION: files the deploy action (its role and approval as declared)."""

from __future__ import annotations

from opsbot.actions import lifecycle
from opsbot.actions.deploy.action import DEPLOY
from opsbot.errors import UsageError
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.registry import Caller, Verb, audited, parse_target, register

USAGE = "usage: /deploy TARGET VERSION"


async def deploy(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/deploy TARGET VERSION"""
    if len(args) != 2:
        raise UsageError(USAGE)
    name, target = parse_target(services, args[0])
    filed = await lifecycle.request(
        services, caller.person, DEPLOY, name, target, (args[1],),
        chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
    )  # fmt: skip
    audited()
    return filed


register(
    Verb(
        DEPLOY.verb, DEPLOY.role, "/deploy TARGET VERSION",
        "a new version: backup, deploy, verified healthy, else rolled back", deploy,
        destructive=DEPLOY.destructive,
    ),
)  # fmt: skip
