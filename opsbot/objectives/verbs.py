"""/slo [TARGET]: each target's objective, budget and burn rate, as one verdict line;
/report [7d|30d]: the objectives report with its chart; /latency TARGET (and /health TARGET's
📈 button): the target's p95 latency over the last 24 h, as a PNG."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.objectives import charts, clock, reading, report, sli
from opsbot.objectives.recording import blocks
from opsbot.objectives.series import DAY, span
from opsbot.render import Document, Reply
from opsbot.verbs.registry import (
    LISTED,
    ButtonSpec,
    Caller,
    Verb,
    parse_target,
    register,
    register_buttons,
)

STEP = 600.0  # the latency chart's points: p95 per 10 minutes

if TYPE_CHECKING:
    from opsbot.services import Services


async def slo(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/slo [TARGET]"""
    settings = services.settings
    if len(args) > 1:
        raise UsageError("usage: /slo [TARGET]")
    now = clock.now()
    if args:
        name, _ = parse_target(services, args[0])
        found = await reading.budget(services.store, settings, name, now)
        if found is None:
            raise UsageError(f"{name} has no objective (objectives off, or its monitor is off)")
        return Reply(text="\n".join([sli.verdict(found), *sli.details(found)]))
    budgets = await reading.budgets(services.store, settings, now)
    if not budgets:
        return Reply(text="No target has an objective (objectives.enabled, a monitored target).")
    spent = sum(1 for b in budgets if b.left is not None and b.left <= 0)
    head = f"Objectives of {len(budgets)} targets, least budget left first"
    head += f" ({spent} spent):" if spent else ":"
    lines = [sli.verdict(b) for b in budgets[:LISTED]]
    if len(budgets) > LISTED:
        lines.append(f"… {len(budgets) - LISTED} more: /slo TARGET")
    return Reply(text="\n".join([head, *lines]))


async def report_(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/report [7d|30d]"""
    try:
        period = report.parse_period(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return await report.build(services, period)


async def latency(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/latency TARGET"""
    if len(args) != 1:
        raise UsageError("usage: /latency TARGET")
    name, _ = parse_target(services, args[0])
    objective = services.settings.objective(name)
    if objective is None:
        raise UsageError(f"{name} has no objective (objectives off, or its monitor is off)")
    now = clock.now()
    days = await blocks(services.store, name, int((now - DAY) // DAY), int(now // DAY))
    start = (now - DAY) // STEP * STEP
    points = []
    for step in range(int(DAY // STEP) + 1):
        at = start + step * STEP
        p95 = span(days, at, at + STEP).quantile(0.95)
        points.append((at + STEP / 2, 60.0 if p95 == float("inf") else p95))
    day = span(days, now - DAY, now)
    timed = sum(day.hist)
    p95 = day.quantile(0.95)
    shown = "p95 > 30 s" if p95 == float("inf") else f"p95 ≤ {p95:g} s"
    text = f"{name}: last 24 h, no timed rounds"
    if p95 is not None and timed:
        fast = sli.percent(100 * day.fast(objective.latency) / timed)
        goal = sli.percent(objective.latency_target)
        text = f"{name}: last 24 h, {shown}; {fast} of rounds ≤ {objective.latency:g} s "
        text += f"(objective {goal})"
    png = await asyncio.to_thread(charts.latency, name, points, objective.latency)
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M")
    return Reply(text=text, document=Document(f"{name}-latency-{stamp}.png", png, raw=True))


register(
    Verb("latency", Role.viewer, "/latency TARGET", "a target's latency chart, last 24 h",
         latency, reads_only=True),
    Verb("report", Role.viewer, "/report [7d|30d]", "objectives report with a chart", report_,
         reads_only=True),
    Verb("slo", Role.viewer, "/slo [TARGET]", "objectives: budget left, burn rate", slo,
         reads_only=True),
)  # fmt: skip
register_buttons(
    ButtonSpec("lc", Role.viewer, "a target's latency chart, last 24 h (lc:TARGET)",
               verb="latency"),
)  # fmt: skip
