"""/slo [TARGET]: each target's objective, budget and burn rate, as one verdict line;
/report [7d|30d]: the objectives report with its chart; /latency TARGET (an old /health card's
📈 button too): the target's p95 latency over the last 24 h, as a PNG file (/health TARGET
shows it inline)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from opsbot.config import Role
from opsbot.errors import UsageError
from opsbot.objectives import clock, day_chart, reading, report, sli
from opsbot.render import Reply
from opsbot.verbs.registry import (
    LISTED,
    ButtonSpec,
    Caller,
    Verb,
    parse_target,
    register,
    register_buttons,
)

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
    chart = await day_chart.latency(services, name, clock.now())
    if chart is None:
        raise UsageError(f"{name} has no objective (objectives off, or its monitor is off)")
    text, document = chart
    return Reply(text=text, document=document)


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
