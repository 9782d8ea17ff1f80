"""What a tap's handler could not settle: expiries, and approved requests a replica left.

An approved request that never started is run (``spawn``ed, once: ``perform`` claims it).
One that started on a replica that died since is handed to its action's ``recover`` when the
action ``recovers`` (a deploy finishes its checks and rolls back what is not healthy), else
marked failed, never run a second time.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable

from opsbot.actions.action import Outcome
from opsbot.actions.approvals import APPROVALS, Request, Status
from opsbot.actions.cards import offered, report, show
from opsbot.actions.declared import ACTIONS
from opsbot.actions.lifecycle import needs_step_up, perform, resume
from opsbot.notify import Notifier
from opsbot.services import Services

log = logging.getLogger(__name__)

REAP_GRACE = 15.0  # an approved request not started after this long is taken over


async def reap(
    services: Services,
    notifier: Notifier,
    spawn: Callable[[Awaitable[Outcome]], object],
    now: float | None = None,
) -> None:
    """Expire pending requests at their expiry; take over approved requests left without a
    run (the replica died in between)."""
    now = time.time() if now is None else now
    approvals = APPROVALS.of(services)
    for request in await approvals.open_requests():
        if request.status is Status.pending:
            if now > request.expires and (expired := await approvals.expire(request.id, now)):
                await services.audit.record(
                    "expired", target=expired.target, action=expired.action, request=expired.id
                )
                await show(notifier, expired)
            continue
        if request.started is None and now - request.approved_at < REAP_GRACE:
            continue  # its tap's handler is about to run it
        if request.started is None and needs_step_up(services, request):
            # Held for the approver's TOTP code (handlers/stepup.py): never run from here. If
            # the replica holding the challenge died, the code never comes: fail it.
            waited = services.settings.approvals.step_up_timeout + REAP_GRACE
            if now - request.approved_at > waited:
                why = "no step-up code in time: not run"
                await _settle_unrun(services, notifier, request, why)
            continue
        probe = f"reaper:{secrets.token_hex(4)}"
        if await services.store.acquire(f"run:{request.id}", probe, ttl=30) is not None:
            continue  # running now
        try:
            current = await approvals.get(request.id)
            if current is None or current.status is not Status.approved:
                continue
            if current.started is not None:
                action = ACTIONS.get(current.action)
                if action is not None and action.recovers:
                    spawn(resume(services, current, notifier))  # it takes the run lease
                else:
                    await _abandoned(services, notifier, current)
                continue
        finally:
            await services.store.release(f"run:{request.id}", probe)
        log.warning("request %s was approved but never run: running it now", current.id)
        spawn(perform(services, current, notifier))


async def _settle_unrun(
    services: Services, notifier: Notifier, request: Request, reason: str
) -> None:
    """Mark a request that never ran as failed, with the reason on its card."""
    done = await APPROVALS.of(services).finish(request.id, False, reason)
    if done is not None:
        log.warning("request %s: %s", done.id, reason)
        await show(notifier, done, next_steps=offered(services, done))


async def _abandoned(services: Services, notifier: Notifier, request: Request) -> None:
    reason = (
        "failed: opsbot stopped while this was running, so its outcome is unknown;"
        " check the target before trying again"
    )
    done = await APPROVALS.of(services).finish(request.id, False, reason)
    if done is None:
        return
    log.warning("request %s was running on a replica that died: marked failed", request.id)
    await services.audit.record(
        "executed", target=done.target, action=done.action, request=done.id,
        who=done.requester.name, ok=False, summary=reason,
    )  # fmt: skip
    await report(services, notifier, done, Outcome(False, reason))
