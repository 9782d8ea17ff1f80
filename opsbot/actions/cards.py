"""The approval card, as a person would write it: what will run (once), who asked, where it
stands, and, when it failed, the next steps as buttons.

A card is rendered from the request alone (any replica, any time); the next-step buttons of a
failed card are worked out by ``next_steps`` from the configuration, since only it knows
whether the target has logs to read or a rollback to fall back on.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from opsbot.actions.approvals import Request, Status
from opsbot.config import ContainerTarget, K8sTarget, Settings, Target
from opsbot.reach.checks import TargetHealth
from opsbot.reach.targets import logs_argv
from opsbot.render import Button, Reply, elapsed, moment, short_duration

HEADS = {
    Status.pending: "⚠️",
    Status.approved: "🔄",
    Status.denied: "🚫",
    Status.expired: "⌛",
    Status.done: "✅",
    Status.failed: "❌",
}

#: Button keys of a failed card's next steps (registered in actions/verbs.py).
RETRY, ROLLBACK, DECLARE = "rt", "rb", "ri"


def card(
    request: Request,
    progress: str = "",
    next_steps: tuple[Button, ...] = (),
    now: float | None = None,
) -> Reply:
    """The approval card: what will run, who asked, and where it stands.

    The steps (argv or API call) are shown once: in the note when it already names them
    ("restart quizbot on vps-1: pm2 restart quizbot"), else as the block below.
    """
    title = f"{HEADS[request.status]} {request.action} {request.target}"
    if request.status is Status.pending:
        title += " — approval needed"
    elif request.status is Status.approved:
        title += " — running"
    else:
        title += f" — {request.status.value}"
    lines = [title, f"requested by {request.requester.name} · id {request.id}"]
    if request.note:
        lines.append(request.note)
    if request.status is Status.pending:
        lines.append(f"expires {moment(request.expires, now)}")
    if request.approvals:
        lines.append("approved by " + ", ".join(a.name for a in request.approvals))
    if request.denied_by is not None:
        lines.append(f"{request.status.value} by {request.denied_by.name}")
    if progress:
        lines.append(progress)
    if request.result:
        lines.append(request.result)
    buttons: tuple[Button, ...] = ()
    if request.status is Status.pending:
        buttons = (Button("✅ Approve", f"a:{request.id}"), Button("✖️ Deny", f"d:{request.id}"))
    elif request.status is Status.failed:
        buttons = next_steps
    shown = all(step in request.note for step in request.steps)
    return Reply(
        text="\n".join(lines),
        block="" if shown else "\n".join(request.steps),
        buttons=buttons,
        request_id=request.id if request.status is Status.pending else None,
    )


def took(request: Request, seconds: float | None) -> str:
    """The final card's "took 12 s", unless its result already says how long it took."""
    if seconds is None:
        return ""
    result = request.result or ""
    if result.startswith(("healthy after", "still failing after")):
        return ""
    return f"took {short_duration(seconds) if seconds < 60 else elapsed(seconds)}"  # 40 ms


def next_steps(
    settings: Settings, request: Request, incidents: bool, falls_back: bool = False
) -> tuple[Button, ...]:
    """What a failed card offers, only what exists for its target: Logs, Retry (the same
    request filed again, through the same approval policy), Rollback (after an action that
    ``falls_back``, a restart, where the target has one) and Declare incident (where
    incidents are on)."""
    target = settings.targets.get(request.target)
    if target is None:  # gone from the configuration: nothing here can act on it
        return ()
    buttons = []
    if has_logs(target):
        buttons.append(Button("📜 Logs", f"l:{request.target}"))
    buttons.append(Button("🔁 Retry", f"{RETRY}:{request.id}"))
    if falls_back and has_rollback(target):
        buttons.append(Button("⏪ Rollback", f"{ROLLBACK}:{request.target}"))
    if incidents:
        buttons.append(Button("🚨 Declare incident", f"{DECLARE}:{request.id}"))
    return tuple(buttons)


def has_logs(target: Target) -> bool:
    return isinstance(target, ContainerTarget) or logs_argv(target, 1) is not None


def has_rollback(target: Target) -> bool:
    """A rollback can be planned at all (a container's still needs a known-good version)."""
    return target.actions.rollback is not None or isinstance(target, ContainerTarget | K8sTarget)


def proof(health: TargetHealth) -> str:
    """The check that proved it healthy, in a person's words: " (http /health → 200)"."""
    if not health.checks:
        return ""
    shown = next((c for c in health.checks if c.name.startswith("http ")), health.checks[0])
    name, detail = shown.name, shown.detail
    if name.startswith("http "):
        url = urlsplit(name.removeprefix("http "))
        name = "http " + (url.path or "/")
        detail = detail.removeprefix("HTTP ")
    more = len(health.checks) - 1
    others = f"; {more} more {'check' if more == 1 else 'checks'} OK" if more else ""
    return f" ({name} → {detail}{others})"

