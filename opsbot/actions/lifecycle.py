"""A request's life, Telegram-free and action-blind: request → decide → perform.

``request`` plans an action (``declared.ACTIONS``: the lifecycle knows no action by name)
and either runs it (when its policy needs no approval) or files an approval request and
answers with its card. ``decide`` records an Approve/Deny tap and, for the one tap that
approves, hands back the request for its caller to ``perform``: under the target's lock, the
card edited with live progress and the verified result, the result copied to the incident
chat. Messages go out through the ``Notifier`` port; ``reaper`` settles what a dead replica
left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator

from opsbot.actions.action import Action, Outcome
from opsbot.actions.approvals import APPROVALS, Request, Status
from opsbot.actions.cards import CardProgress, card, final_card, pace_of, report, show
from opsbot.actions.declared import ACTIONS, action_of
from opsbot.config import Person, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.incidents.state import INCIDENTS
from opsbot.notify import Notifier, ProgressSink
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.state.audit import digest

log = logging.getLogger(__name__)

LOCK_TTL_MARGIN = 120.0
RUN_LEASE = 15.0  # a running action renews its lease; a dead replica's lapses this fast


def needs_step_up(services: Services, request: Request) -> bool:
    """A won approval of this request waits for its approver's TOTP code (one of an action
    no longer declared waits for nothing: it fails when run)."""
    action = ACTIONS.get(request.action)
    return action is not None and APPROVALS.of(services).needs_step_up(request, action)


# --------------------------------------------------------------------------- requesting


async def request(
    services: Services,
    person: Person,
    action: Action,
    name: str,
    target: Target,
    args: tuple[str, ...],
    *,
    chat_id: int | None,
    thread_id: int | None = None,
    progress: ProgressSink | None = None,
) -> Reply:
    """Plan the action; file it for approval (card) or, if the policy allows, run it now
    (its card's progress then goes to ``progress``, the caller's in-place message)."""
    if not person.role.allows(action.role):  # a verb may file more than one action
        raise UsageError(f"{action.name} needs the {action.role.value} role")
    refused = action.refusal(person.role, args)
    if refused is not None:
        raise UsageError(refused)
    planned = await action.plan(services, name, target, args)
    approvals = APPROVALS.of(services)
    filed = await approvals.create(
        action=action.name,
        target=name,
        args=args,
        steps=planned.steps,
        note=planned.note,
        payload=planned.payload,
        requester=person,
        chat_id=chat_id,
        thread_id=thread_id,
    )
    await services.audit.record(
        "requested", who=person.name, user=person.id, chat=chat_id, target=name,
        action=action.name, request=filed.id, args=audit_args(services, args),
        steps=list(planned.steps),
    )  # fmt: skip
    if approvals.needs_approval(action):
        return card(filed)
    # No approval needed: claim it for the requester and run it right away.
    claimed = await approvals.claim_unreviewed(filed.id)
    if claimed is None:
        return Reply(text="This request was already handled.")
    began = time.monotonic()
    outcome = await perform(services, claimed, None, sink=progress)
    done = await approvals.get(filed.id) or claimed
    return final_card(services, done, outcome, time.monotonic() - began)


def audit_args(services: Services, args: tuple[str, ...]) -> list[str]:
    """An action's arguments for the audit trail: redacted, each cut short."""
    return [services.redactor.redact(a)[:64] for a in args]


async def retry(
    services: Services,
    person: Person,
    request_id: str,
    *,
    chat_id: int | None,
    thread_id: int | None = None,
    progress: ProgressSink | None = None,
) -> Reply:
    """File a failed (or expired) request again: the same action, target and arguments,
    planned anew and through the same approval policy, requested by ``person``."""
    old = await APPROVALS.of(services).get(request_id)
    if old is None:
        raise UsageError(f"no request {request_id.upper()[:16]}")
    if old.status not in (Status.failed, Status.expired):
        raise UsageError(f"{old.id} is {old.status.value}: only a failed or expired one retries")
    target = services.settings.targets.get(old.target)
    if target is None:
        raise UsageError(f"{old.target} is no longer configured")
    return await request(
        services, person, action_of(old.action), old.target, target, old.args,
        chat_id=chat_id, thread_id=thread_id, progress=progress,
    )  # fmt: skip


async def declare_from(services: Services, person: Person, request_id: str) -> str:
    """Declare incident on a failed card: P2, titled after what failed, its target
    involved; the answer is the tap's toast."""
    incidents = INCIDENTS.bound(services)
    failed = await APPROVALS.of(services).get(request_id)
    if incidents is None:
        return "Incidents are not available."
    if failed is None:
        return f"no request {request_id.upper()[:16]}"
    title = f"{failed.target}: {failed.action} failed"
    targets = [failed.target] if failed.target in services.settings.targets else []
    declared = await incidents.declare("P2", title, targets, person)
    await services.audit.record(
        "incident", who=person.name, user=person.id, incident=declared.id,
        request=failed.id, target=failed.target, args=["P2", title],
    )  # fmt: skip
    return f"{declared.id} declared (P2): /incident severity {declared.id} P1 to raise it."


# --------------------------------------------------------------------------- deciding


async def decide(
    services: Services,
    person: Person,
    request_id: str,
    approve: bool,
    notifier: Notifier,
) -> tuple[str, Request | None]:
    """Record a tap: the toast to show and, for the one winning approval, the request to
    ``perform`` now (the caller's step-up may hold it for a code first)."""
    decision = await APPROVALS.of(services).decide(request_id, person, approve)
    filed = decision.request
    outcome = ("approved" if approve else "denied") if decision.changed else "refused"
    services.metrics.approvals_total.labels(decision=outcome).inc()
    if decision.changed and filed is not None:
        await services.audit.record(
            "approved" if approve else "denied", who=person.name, user=person.id,
            target=filed.target, action=filed.action, request=filed.id,
            args=audit_args(services, filed.args), status=filed.status.value,
        )  # fmt: skip
        await show(notifier, filed, "starting…" if decision.execute else "")
    elif filed is not None:
        await services.audit.record(
            "refused", who=person.name, user=person.id, target=filed.target,
            request=filed.id, reason=decision.message,
        )  # fmt: skip
    if not decision.execute or filed is None:
        return decision.message, None
    return decision.message, filed


# --------------------------------------------------------------------------- performing


async def perform(
    services: Services,
    filed: Request,
    notifier: Notifier | None,
    *,
    sink: ProgressSink | None = None,
) -> Outcome:
    """Run an approved request once: under the target's lock, verified, reported.

    The request is marked started (compare-and-set) under a run lease before anything runs,
    so whoever calls this (the tap's handler, or the reaper after a crash) runs it at most
    once; the reaper tells a run in progress (lease held) from a dead one (lease gone).
    """
    target = services.settings.targets.get(filed.target)
    async with _run_lease(services, filed) as owner:
        if owner is None:
            return Outcome(False, "already running")
        started = await APPROVALS.of(services).start(filed.id)
        if started is None:
            return Outcome(False, "already started")
        return await _perform(services, started, target, owner, notifier, sink)


async def resume(services: Services, filed: Request, notifier: Notifier | None) -> Outcome:
    """Hand a run whose replica died to its action's ``recover`` (the reaper calls this for
    an action that ``recovers``): under a new run lease, once, the dead run's target lock
    taken over, the outcome recorded and reported as ``perform`` does."""
    async with _run_lease(services, filed) as owner:
        if owner is None:
            return Outcome(False, "already running")
        current = await APPROVALS.of(services).get(filed.id)
        if current is None or current.status is not Status.approved or current.started is None:
            return Outcome(False, "already settled")
        log.warning("request %s was running on a replica that died: recovering it", filed.id)
        target = services.settings.targets.get(filed.target)
        return await _perform(services, current, target, owner, notifier, recovering=True)


@contextlib.asynccontextmanager
async def _run_lease(services: Services, filed: Request) -> AsyncIterator[str | None]:
    """The request's run lease, renewed while held: its owner, or None when another has it."""
    owner = json.dumps({"action": filed.action, "by": filed.requester.name, "at": time.time(),
                        "request": filed.id})  # fmt: skip
    run_lease = f"run:{filed.id}"
    if await services.store.acquire(run_lease, owner, ttl=RUN_LEASE) is not None:
        yield None
        return
    renewing = asyncio.create_task(_renew(services, run_lease, owner))
    try:
        yield owner
    finally:
        renewing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewing
        try:
            await services.store.release(run_lease, owner)
        except Exception as exc:  # the store is briefly away: the lease lapses by itself
            log.warning("could not release %s (it lapses within %.0f s): %s",
                        run_lease, RUN_LEASE, exc)  # fmt: skip


async def _renew(services: Services, lease: str, owner: str) -> None:
    """Keep the run lease while the action runs: it lapses within RUN_LEASE of a crash."""
    while True:
        await asyncio.sleep(RUN_LEASE / 3)
        try:
            await services.store.acquire(lease, owner, ttl=RUN_LEASE)
        except Exception as exc:  # the store is briefly away: the run goes on
            log.warning("could not renew %s: %s", lease, exc)


async def _perform(
    services: Services,
    filed: Request,
    target: Target | None,
    owner: str,
    notifier: Notifier | None,
    sink: ProgressSink | None = None,
    *,
    recovering: bool = False,
) -> Outcome:
    started = time.monotonic()
    lock = f"target:{filed.target}"
    if target is None:
        outcome = Outcome(False, f"target {filed.target} is no longer configured")
    else:
        outcome = await _locked(services, filed, target, owner, lock, notifier, sink,
                                recovering=recovering)  # fmt: skip
    duration = time.monotonic() - started
    summary = services.redactor.redact(outcome.summary)
    output = services.redactor.redact(outcome.output)
    done = await APPROVALS.of(services).finish(filed.id, outcome.ok, summary) or filed
    await services.audit.record(
        "executed", target=filed.target, action=filed.action, request=filed.id,
        who=filed.requester.name, approvers=[a.name for a in filed.approvals],
        steps=list(filed.steps), ok=outcome.ok, summary=summary,
        duration=round(duration, 3), digest=digest(output),
    )  # fmt: skip
    redacted = Outcome(outcome.ok, summary, output, outcome.files)
    if notifier is not None:
        try:
            await report(services, notifier, done, redacted, duration)
        except Exception:  # the action ran; its record is in the store and the audit trail
            log.exception("could not report the result of request %s", filed.id)
    return redacted


async def _locked(
    services: Services,
    filed: Request,
    target: Target,
    owner: str,
    lock: str,
    notifier: Notifier | None,
    sink: ProgressSink | None,
    *,
    recovering: bool = False,
) -> Outcome:
    """The action's run (or recovery) under the target's lock, or why it could not take it."""
    try:
        action = action_of(filed.action)
    except UsageError as exc:
        return Outcome(False, f"failed: {exc}")
    ttl = action.budget(target) + LOCK_TTL_MARGIN
    holder = await services.store.acquire(lock, owner, ttl=ttl)
    if holder is not None and recovering and _request_of(holder) == filed.id:
        await services.store.release(lock, holder)  # the dead run's own lock: taken over
        holder = await services.store.acquire(lock, owner, ttl=ttl)
    if holder is not None:
        return Outcome(False, _busy(holder))
    progress = CardProgress(notifier, filed, pace_of(filed), sink)
    try:
        if recovering:
            return await action.recover(services, filed, target, progress)
        return await action.run(services, filed, target, progress)
    except OpsbotError as exc:
        return Outcome(False, f"failed: {exc}")
    finally:
        await progress.close()
        try:
            await services.store.release(lock, owner)
        except Exception as exc:  # it lapses by itself; the outcome must be recorded
            log.warning("could not release %s: %s", lock, exc)


def _request_of(holder: str) -> str | None:
    try:
        return str(json.loads(holder)["request"])
    except (ValueError, KeyError, TypeError):
        return None


def _busy(holder: str) -> str:
    try:
        info = json.loads(holder)
        ago = int(time.time() - float(info["at"]))
        return f"{info['action']} already running, requested by {info['by']} {ago} s ago"
    except (ValueError, KeyError, TypeError):
        return "another action is already running on this target"
