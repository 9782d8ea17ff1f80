"""Destructive actions end to end, Telegram-free: plan → card → decision → lock → run → verify.

``request`` plans an action and either runs it (when the policy needs no approval) or files
an approval request and answers with its card. ``decide`` records an Approve/Deny tap; for the
one tap that approves, it hands back the coroutine that performs the action, which takes the
target's lock, edits the card with live progress and the verified result, and copies the
result to the incident chat. Messages go out through the ``Notifier`` port.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from opsbot.actions import kinds as actions
from opsbot.actions.approvals import Request, Status
from opsbot.actions.backups import methods as backup_methods
from opsbot.actions.backups import records as backups
from opsbot.actions.cards import card, elapsed, next_steps, took
from opsbot.config import Backup, ContainerTarget, Person, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.notify import Notifier, ProgressSink
from opsbot.reach.executors import Executor
from opsbot.reach.targets import container_name
from opsbot.render import Button, Document, Reply, plural
from opsbot.services import Services
from opsbot.state.audit import digest
from opsbot.state.outbox_notifier import edit_at
from opsbot.state.pace import Priority

log = logging.getLogger(__name__)

LOCK_TTL_MARGIN = 120.0
REAP_GRACE = 15.0  # an approved request not started after this long is taken over
RUN_LEASE = 15.0  # a running action renews its lease; a dead replica's lapses this fast


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    summary: str
    output: str = ""
    files: tuple[Path, ...] = ()  # small backups to send to the chat (spec.send_max_bytes)


# --------------------------------------------------------------------------- planning


async def plan(
    services: Services, action: str, name: str, target: Target, args: tuple[str, ...]
) -> tuple[tuple[str, ...], str, dict[str, object]]:
    """(steps shown on the card, a note, the payload that pins exactly what will run)."""
    if action == "rollback" and args:  # /rollback TARGET REVISION (k8s)
        if len(args) != 1 or not args[0].isdigit():
            raise UsageError(f"usage: /rollback {name} [list | REVISION]")
        planned = await actions.plan_rollback(
            name, target, services, services.store, revision=int(args[0])
        )
        return planned.steps, planned.note, {"plan": asdict(planned)}
    if action in ("restart", "rollback"):
        planner = actions.plan_restart if action == "restart" else actions.plan_rollback
        planned = await planner(name, target, services, services.store)
        return planned.steps, planned.note, {"plan": asdict(planned)}
    if action == "backup":
        if not target.backups:
            raise UsageError(f"{name} has no backups configured")
        steps = tuple(f"{spec.type}: {backups.source_of(spec)}" for spec in target.backups)
        count = plural(len(steps), "backup")
        return steps, f"back up {name}: {count}, verified and checksummed", {}
    if action == "restore":
        record = await _find_backup(services, name, args)
        spec = _spec_for(target, record.kind)
        steps = (
            f"{spec.type}: restore {backups.describe(record)}",
            f"over {backups.source_of(spec)} (the current data is replaced)",
        )
        return steps, f"restores {record.name} over the live data", {"record": record.to_doc()}
    raise UsageError(f"unknown action {action}")


async def _find_backup(
    services: Services, name: str, args: tuple[str, ...]
) -> backups.BackupRecord:
    if len(args) != 1:
        raise UsageError(f"usage: /backup {name} restore NAME (see /backup {name} list)")
    for record in await backups.list_backups(name, services.store):
        if record.name == args[0]:
            return record
    raise UsageError(f"no backup named {args[0][:80]!r} for {name}; see /backup {name} list")


def _spec_for(target: Target, kind: str) -> Backup:
    for spec in target.backups:
        if spec.type == kind:
            return spec
    raise UsageError(f"the target no longer has a {kind} backup configured")


# --------------------------------------------------------------------------- requesting


async def request(
    services: Services,
    person: Person,
    action: str,
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
    steps, note, payload = await plan(services, action, name, target, args)
    approvals = services.approvals
    filed = await approvals.create(
        action=action,
        target=name,
        args=args,
        steps=steps,
        note=note,
        payload=payload,
        requester=person,
        chat_id=chat_id,
        thread_id=thread_id,
    )
    await services.audit.record(
        "requested", who=person.name, user=person.id, chat=chat_id, target=name,
        action=action, request=filed.id, args=_args(services, args), steps=list(steps),
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
    shown = card(done, took(done, time.monotonic() - began), offered(services, done))
    return _with_output(shown, name, outcome)


def _args(services: Services, args: tuple[str, ...]) -> list[str]:
    """An action's arguments for the audit trail: redacted, each cut short."""
    return [services.redactor.redact(a)[:64] for a in args]


def offered(services: Services, done: Request) -> tuple[Button, ...]:
    """The next-step buttons a failed card offers (none on any other card)."""
    return next_steps(services.settings, done, incidents=services.incidents is not None)


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
    old = await services.approvals.get(request_id)
    if old is None:
        raise UsageError(f"no request {request_id.upper()[:16]}")
    if old.status not in (Status.failed, Status.expired):
        raise UsageError(f"{old.id} is {old.status.value}: only a failed or expired one retries")
    target = services.settings.targets.get(old.target)
    if target is None:
        raise UsageError(f"{old.target} is no longer configured")
    return await request(
        services, person, old.action, old.target, target, old.args,
        chat_id=chat_id, thread_id=thread_id, progress=progress,
    )  # fmt: skip


async def declare_from(services: Services, person: Person, request_id: str) -> str:
    """Declare incident on a failed card: P2, titled after what failed, its target
    involved; the answer is the tap's toast."""
    incidents = services.incidents
    failed = await services.approvals.get(request_id)
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


def _files(outcome: Outcome) -> list[Document]:
    return [Document(f.name, f.read_bytes(), raw=True) for f in outcome.files if f.exists()]


def _with_output(reply: Reply, name: str, outcome: Outcome) -> Reply:
    if len(outcome.output) > 3000:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        return Reply(
            text=reply.text,
            block=reply.block,
            buttons=reply.buttons,
            document=Document(f"{name}-{stamp}.log", outcome.output.encode()),
        )
    block = outcome.output.strip() or reply.block  # what ran is in the note or the output
    files = _files(outcome)
    return Reply(
        text=reply.text, block=block, buttons=reply.buttons,
        document=files[0] if files else None,
    )  # fmt: skip


# --------------------------------------------------------------------------- deciding


Runner = Callable[[], Awaitable[None]]


async def decide(
    services: Services,
    person: Person,
    request_id: str,
    approve: bool,
    notifier: Notifier,
) -> tuple[str, Runner | None]:
    """Record a tap; returns the toast to show and, for the winning approval, the runner."""
    decision = await services.approvals.decide(request_id, person, approve)
    filed = decision.request
    outcome = ("approved" if approve else "denied") if decision.changed else "refused"
    services.metrics.approvals_total.labels(decision=outcome).inc()
    if decision.changed and filed is not None:
        await services.audit.record(
            "approved" if approve else "denied", who=person.name, user=person.id,
            target=filed.target, action=filed.action, request=filed.id,
            args=_args(services, filed.args), status=filed.status.value,
        )  # fmt: skip
        await _show(notifier, filed, "starting…" if decision.execute else "")
    elif filed is not None:
        await services.audit.record(
            "refused", who=person.name, user=person.id, target=filed.target,
            request=filed.id, reason=decision.message,
        )  # fmt: skip
    if not decision.execute or filed is None:
        return decision.message, None

    async def run() -> None:
        await perform(services, filed, notifier)

    return decision.message, run


async def _show(
    notifier: Notifier | None,
    filed: Request,
    progress: str = "",
    next_steps: tuple[Button, ...] = (),
    priority: Priority = Priority.reply,
) -> None:
    """Queue the card's new state; a failure to queue it never stops the action."""
    if notifier is not None and filed.chat_id is not None and filed.message_id is not None:
        try:
            shown = card(filed, progress, next_steps)
            await edit_at(notifier, filed.chat_id, filed.message_id, shown, priority)
        except Exception:
            log.exception("could not update the card of request %s", filed.id)


#: A run's progress shows from this many seconds on (then every 2 s, or 3 s in a group).
PROGRESS_AFTER = 1.0


class _Progress:
    """Shows the latest progress line on the card with the time the run has taken.

    Edits go out at most every ``interval`` seconds; a ticker shows a line that arrived
    in between once the interval is over (so the card always ends on the latest state) and
    keeps the elapsed time moving through a long step. The outbox keeps only the newest
    queued text of a card, so a slow chat never sees stale states either.
    """

    def __init__(
        self,
        notifier: Notifier | None,
        filed: Request,
        interval: float = 2.0,
        sink: ProgressSink | None = None,
    ) -> None:
        self.notifier, self.filed, self.interval, self.sink = notifier, filed, interval, sink
        self.started = time.monotonic()
        self._text = ""
        self._shown = ""
        # Nothing is shown in the first second: a quick run goes straight to its result.
        self._last_at = self.started - interval + PROGRESS_AFTER
        self._lock = asyncio.Lock()  # edits are queued in order: the newest is queued last
        self._ticker: asyncio.Task[None] | None = None

    async def __call__(self, text: str) -> None:
        self._text = text
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick(), name="opsbot-card-progress")
        if time.monotonic() - self._last_at >= self.interval:
            await self._flush()

    async def close(self) -> None:
        """Stop the ticker (before the final card is shown)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker

    async def _flush(self) -> None:
        async with self._lock:
            now = time.monotonic()
            line = f"{self._text} · {elapsed(now - self.started)}"
            if line == self._shown:
                return
            self._shown, self._last_at = line, now
            if self.sink is not None:  # the card is not posted yet: the caller's message
                self.sink(card(self.filed, line))
            else:
                # a progress line gives way to everything else in the chat's window
                await _show(self.notifier, self.filed, line, priority=Priority.progress)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(max(self._last_at + self.interval - time.monotonic(), 0.05))
            if time.monotonic() - self._last_at >= self.interval:
                await self._flush()


# --------------------------------------------------------------------------- performing


def _run_ttl(target: Target | None) -> float:
    """How long a run may hold its locks: its deadlines plus a margin."""
    if target is None:
        return LOCK_TTL_MARGIN
    ttl = target.verify_deadline + max((b.timeout for b in target.backups), default=0)
    return ttl + LOCK_TTL_MARGIN


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
    owner = json.dumps({"action": filed.action, "by": filed.requester.name, "at": time.time(),
                        "request": filed.id})  # fmt: skip
    run_lease = f"run:{filed.id}"
    if await services.store.acquire(run_lease, owner, ttl=RUN_LEASE) is not None:
        return Outcome(False, "already running")
    renewing = asyncio.create_task(_renew(services, run_lease, owner))
    try:
        started = await services.approvals.start(filed.id)
        if started is None:
            return Outcome(False, "already started")
        return await _perform(services, started, target, owner, notifier, sink)
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
) -> Outcome:
    started = time.monotonic()
    lock = f"target:{filed.target}"
    holder = None
    if target is None:
        outcome = Outcome(False, f"target {filed.target} is no longer configured")
    else:
        holder = await services.store.acquire(lock, owner, ttl=_run_ttl(target))
        if holder is not None:
            outcome = Outcome(False, _busy(holder))
        else:
            pace = 2.0 if (filed.chat_id or 0) > 0 else 3.0
            progress = _Progress(notifier, filed, pace, sink)
            try:
                outcome = await _run(services, filed, target, progress)
            except OpsbotError as exc:
                outcome = Outcome(False, f"failed: {exc}")
            finally:
                await progress.close()
                try:
                    await services.store.release(lock, owner)
                except Exception as exc:  # it lapses by itself; the outcome must be recorded
                    log.warning("could not release %s: %s", lock, exc)
    duration = time.monotonic() - started
    summary = services.redactor.redact(outcome.summary)
    output = services.redactor.redact(outcome.output)
    done = await services.approvals.finish(filed.id, outcome.ok, summary) or filed
    await services.audit.record(
        "executed", target=filed.target, action=filed.action, request=filed.id,
        who=filed.requester.name, approvers=[a.name for a in filed.approvals],
        steps=list(filed.steps), ok=outcome.ok, summary=summary,
        duration=round(duration, 3), digest=digest(output),
    )  # fmt: skip
    redacted = Outcome(outcome.ok, summary, output, outcome.files)
    if notifier is not None:
        try:
            await _report(services, notifier, done, redacted, duration)
        except Exception:  # the action ran; its record is in the store and the audit trail
            log.exception("could not report the result of request %s", filed.id)
    return redacted


def _busy(holder: str) -> str:
    try:
        info = json.loads(holder)
        ago = int(time.time() - float(info["at"]))
        return f"{info['action']} already running, requested by {info['by']} {ago} s ago"
    except (ValueError, KeyError, TypeError):
        return "another action is already running on this target"


async def _report(
    services: Services,
    notifier: Notifier,
    done: Request,
    outcome: Outcome,
    duration: float | None = None,
) -> None:
    final = card(done, took(done, duration), offered(services, done))
    reply = _with_output(final, done.target, outcome)
    if done.chat_id is not None and done.message_id is not None:
        # owed: ahead of progress, behind replies
        shown = Reply(reply.text, reply.block, buttons=reply.buttons)
        await edit_at(notifier, done.chat_id, done.message_id, shown, Priority.final)
        documents = [reply.document] if reply.document else []
        documents += _files(outcome)
        for document in documents:
            caption = f"{done.action} {done.target}: {document.filename}"
            await notifier.send(done.chat_id, Reply(caption, document=document),
                                thread_id=done.thread_id)  # fmt: skip
    telegram = services.settings.telegram
    incident_chat = telegram.incident_chat_id or telegram.ops_chat_id
    if incident_chat is not None and incident_chat != done.chat_id:
        icon = "✅" if outcome.ok else "❌"
        text = f"{icon} {done.action} {done.target}: {outcome.summary}"
        text += f"\nrequested by {done.requester.name}"
        if done.approvals:
            text += ", approved by " + ", ".join(a.name for a in done.approvals)
        await notifier.send(incident_chat, Reply(text), thread_id=telegram.incident_thread_id)


async def _run(services: Services, filed: Request, target: Target, progress: _Progress) -> Outcome:
    name = filed.target
    if filed.action in ("restart", "rollback"):
        planned = actions.Plan.from_doc(filed.payload["plan"])
        result = await actions.execute(
            planned, name, target, services, store=services.store, progress=progress
        )
        return Outcome(result.ok, result.summary, _join(result.output, result.last_logs))
    executor = backup_executor(services, name, target)
    if filed.action == "backup":
        lines, ok, files = [], True, []
        for spec in target.backups:
            await progress(f"backing up ({spec.type})…")
            try:
                record = await backup_methods.run_backup(
                    name, spec, executor, services.store, services.backups_dir, progress=progress
                )
                lines.append(backups.describe(record))
                if record.local_path and record.size <= spec.send_max_bytes:
                    files.append(Path(record.local_path))
            except OpsbotError as exc:
                ok = False
                lines.append(f"{spec.type}: failed: {exc}")
        return Outcome(ok, "\n".join(lines), files=tuple(files))
    if filed.action == "restore":
        record = backups.BackupRecord.from_doc(filed.payload["record"])
        await progress(f"restoring {record.name}…")
        spec = _spec_for(target, record.kind)
        said = await backup_methods.restore_backup(name, spec, record, executor)
        return Outcome(True, f"restored {record.name}", said)
    return Outcome(False, f"unknown action {filed.action}")


def backup_executor(services: Services, name: str, target: Target) -> Executor:
    """Backups of a container run inside it; others on the target's endpoint."""
    if isinstance(target, ContainerTarget):
        return services.docker(target.endpoint).executor(container_name(name, target))
    return services.executor(target.endpoint)


def _join(*parts: str | None) -> str:
    return "\n\n".join(p for p in parts if p)


# --------------------------------------------------------------------------- reaping


async def reap(
    services: Services,
    notifier: Notifier,
    spawn: Callable[[Awaitable[Outcome]], object],
    now: float | None = None,
) -> None:
    """Settle what a tap's handler could not: expire pending requests at their expiry, and
    take over approved requests left without a run (the replica died in between).

    An approved request that never started is run (``spawn``ed, once: ``perform`` claims it).
    One that started on a replica that died since is marked failed, never run a second time.
    """
    now = time.time() if now is None else now
    approvals = services.approvals
    for request in await approvals.open_requests():
        if request.status is Status.pending:
            if now > request.expires and (expired := await approvals.expire(request.id, now)):
                await services.audit.record(
                    "expired", target=expired.target, action=expired.action, request=expired.id
                )
                await _show(notifier, expired)
            continue
        if request.started is None and now - request.approved_at < REAP_GRACE:
            continue  # its tap's handler is about to run it
        if request.started is None and approvals.needs_step_up(request):
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
    done = await services.approvals.finish(request.id, False, reason)
    if done is not None:
        log.warning("request %s: %s", done.id, reason)
        await _show(notifier, done, next_steps=offered(services, done))


async def _abandoned(services: Services, notifier: Notifier, request: Request) -> None:
    reason = (
        "failed: opsbot stopped while this was running, so its outcome is unknown;"
        " check the target before trying again"
    )
    done = await services.approvals.finish(request.id, False, reason)
    if done is None:
        return
    log.warning("request %s was running on a replica that died: marked failed", request.id)
    await services.audit.record(
        "executed", target=done.target, action=done.action, request=done.id,
        who=done.requester.name, ok=False, summary=reason,
    )  # fmt: skip
    await _report(services, notifier, done, Outcome(False, reason))
