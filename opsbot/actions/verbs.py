"""The action verbs: /restart, /rollback (and a k8s target's revisions), /approve, /deny,
and the Approve/Deny buttons. Each verb files its action (``restart.RESTART``, …) with
``lifecycle``; its role and destructiveness are the action's, as declared.
"""

from __future__ import annotations

import re

from opsbot.actions import lifecycle
from opsbot.actions.action import Action
from opsbot.actions.approvals import APPROVALS, APPROVER, Request, Status
from opsbot.actions.cards import DECLARE, RETRY, ROLLBACK, card
from opsbot.actions.declared import RESTART
from opsbot.actions.declared import ROLLBACK as ROLLBACK_ACTION
from opsbot.config import K8sTarget, Role, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.reach.targets import k8s_revisions
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.registry import (
    ButtonSpec,
    Caller,
    Verb,
    audited,
    parse_target,
    register,
    register_buttons,
)


async def request_as(
    caller: Caller,
    services: Services,
    action: Action,
    name: str,
    target: Target,
    args: tuple[str, ...] = (),
) -> Reply:
    """``action`` on ``name`` requested by the caller, from the chat (and thread) it wrote in;
    its "requested" audit entry, with the arguments, is the command's."""
    filed = await lifecycle.request(
        services, caller.person, action, name, target, args,
        chat_id=caller.chat_id, thread_id=caller.thread_id, progress=caller.progress,
    )  # fmt: skip
    audited()
    return filed


async def _file(action: Action, services: Services, caller: Caller, args: list[str]) -> Reply:
    if len(args) != 1:
        raise UsageError(f"usage: /{action.verb} TARGET")
    name, target = parse_target(services, args[0])
    return await request_as(caller, services, action, name, target)


async def restart(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/restart TARGET"""
    return await _file(RESTART, services, caller, args)


_REVISION = re.compile(r"^[1-9]\d{0,8}$")


async def rollback(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/rollback TARGET [list | REVISION]"""
    if len(args) > 2:
        raise UsageError("usage: /rollback TARGET [list | REVISION]")
    if len(args) != 2:
        return await _file(ROLLBACK_ACTION, services, caller, args)
    name, target = parse_target(services, args[0])
    if args[1].lower() == "list":
        return await _revisions(services, name, target)
    if not _REVISION.match(args[1]):
        raise UsageError(
            f"usage: /rollback TARGET [list | REVISION]; a revision is a number, not "
            f"{args[1][:20]!r}"
        )
    return await request_as(caller, services, ROLLBACK_ACTION, name, target, (args[1],))


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


async def approve(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/approve ID: the Approve button, typed (consoles, chats without buttons)."""
    return await _decide(services, caller, args, approve=True)


async def deny(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/deny ID: the Deny button, typed; the requester denying cancels."""
    return await _decide(services, caller, args, approve=False)


async def _decide(services: Services, caller: Caller, args: list[str], approve: bool) -> Reply:
    """The typed decision; its answer is said before the action's result (the card's edits),
    so the chat reads in the order things happened."""
    verb = "approve" if approve else "deny"
    if len(args) != 1 or not re.match(r"^[A-Za-z0-9_-]{1,64}$", args[0]):
        raise UsageError(f"usage: /{verb} ID (the id on the request's card, any case)")
    before = await APPROVALS.of(services).get(args[0])
    if before is None:
        raise UsageError(f"no request {args[0].upper()[:16]}")
    if approve and lifecycle.needs_step_up(services, before):
        raise UsageError(
            "this request needs a TOTP step-up: tap Approve on its card, "
            "then send your code to opsbot in private"
        )
    notifier = services.console_notifier or services.notifier()
    toast, won = await lifecycle.decide(services, caller.person, before.id, approve, notifier)
    audited()  # decide wrote the decision (or the refusal), with the request's arguments
    filed = await APPROVALS.of(services).get(before.id)
    if filed is None or filed == before or filed.status is Status.expired:
        raise UsageError(toast)  # refused: not an admin, own request, expired, already done
    if won is None:
        return _answer(toast, filed, caller.chat_id)
    if caller.chat_id is not None and services.console_notifier is None:
        # Said now, where it was typed (threaded to the card when that is here too): queued
        # ahead of every edit the run makes, so "Approved: running." comes first.
        ref = filed.message_id if filed.chat_id == caller.chat_id else None
        reply_to = await services.outbox.message_id(ref) if ref is not None else None
        said = _answer(toast, filed, caller.chat_id)
        await notifier.send(caller.chat_id, said, thread_id=caller.thread_id, reply_to=reply_to)
        toast = ""
    await lifecycle.perform(services, won, notifier)  # the card shows progress, then the result
    done = await APPROVALS.of(services).get(before.id) or filed
    if not toast and done.message_id is not None and done.chat_id == caller.chat_id:
        return Reply(text="")  # "Approved: running." was said; the card here shows the result
    icon = "✅" if done.status is Status.done else "❌"
    result = f"{icon} {done.action} {done.target}: {done.result or done.status.value}"
    return _answer(f"{toast}\n{result}" if toast else result, done, caller.chat_id)


def _answer(text: str, filed: Request, where: int | None) -> Reply:
    """``text``, with the card itself unless that is posted where this is said."""
    if filed.message_id is not None and filed.chat_id is not None and filed.chat_id == where:
        return Reply(text=text)  # the card itself, edited in place, shows the rest
    shown = card(filed)
    return Reply(text=f"{text}\n{shown.text}", block=shown.block)


async def retry(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/retry ID: a failed card's Retry, typed: the same request filed again."""
    if len(args) != 1 or not re.match(r"^[A-Za-z0-9_-]{1,64}$", args[0]):
        raise UsageError("usage: /retry ID (the id on a failed request's card)")
    filed = await lifecycle.retry(
        services, caller.person, args[0], chat_id=caller.chat_id, thread_id=caller.thread_id,
        progress=caller.progress,
    )  # fmt: skip
    audited()
    return filed


register(
    Verb(
        RESTART.verb,
        RESTART.role,
        "/restart TARGET",
        "restart, verified healthy after",
        restart,
        destructive=RESTART.destructive,
    ),
    Verb(
        ROLLBACK_ACTION.verb,
        ROLLBACK_ACTION.role,
        "/rollback TARGET [list | REVISION]",
        "back to the last known-good version (k8s: list revisions, pick one)",
        rollback,
        destructive=ROLLBACK_ACTION.destructive,
    ),
    Verb("approve", APPROVER, "/approve ID", "approve a request (as a button)", approve),
    Verb("deny", Role.operator, "/deny ID", "deny a request; your own: cancel it", deny),
    Verb(
        "retry", Role.operator, "/retry ID", "file a failed request again (same approval)",
        retry, destructive=True,
    ),
)  # fmt: skip
register_buttons(
    ButtonSpec("a", APPROVER, "approve a request (a:ID)", destructive=True, audits_itself=True),
    ButtonSpec("d", Role.operator, "deny, or cancel one's own request (d:ID)",
        audits_itself=True),
    ButtonSpec(RETRY, Role.operator, "a failed request, filed again (rt:ID)", True, "retry"),
    ButtonSpec(ROLLBACK, ROLLBACK_ACTION.role, "roll a target back (rb:TARGET)",
        ROLLBACK_ACTION.destructive, ROLLBACK_ACTION.verb),
    ButtonSpec(DECLARE, Role.operator, "declare an incident from a failed request (ri:ID)",
        audits_itself=True),
)
