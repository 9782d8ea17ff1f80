"""The objectives of a status page component: one budget and 90 daily bars for its targets.

A component's objective is the strictest of its targets' (the highest availability; then the
longest window); its rounds are all of theirs together. Target names never leave here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from opsbot.config import Objective, Settings
from opsbot.objectives import reading, sli
from opsbot.objectives.recording import combined, daily
from opsbot.objectives.series import DAY, Counts
from opsbot.state.store import Store

BARS = 90


@dataclass(frozen=True, slots=True)
class Day:
    day: int  # UTC days since the epoch
    availability: float | None  # None: no rounds that day
    grade: str  # ok (met the objective) | warn | fail | none


@dataclass(frozen=True, slots=True)
class ComponentObjective:
    budget: sli.Budget
    days: tuple[Day, ...]  # the last BARS days, oldest first


def strictest(objectives: Sequence[Objective]) -> Objective | None:
    return max(objectives, key=lambda o: (o.availability, o.window), default=None)


def grade(availability: float | None, objective: Objective) -> str:
    """ok: met; warn: missed by up to ten budgets; fail: worse; none: no rounds."""
    if availability is None:
        return "none"
    if availability >= objective.availability:
        return "ok"
    allowed = 100 - objective.availability
    return "warn" if availability >= 100 - 10 * allowed else "fail"


async def component(
    store: Store, settings: Settings, name: str, targets: Sequence[str], at: float
) -> ComponentObjective | None:
    """The component's budget and bars (None: none of its targets has an objective)."""
    measured = [t for t in targets if settings.objective(t) is not None]
    objective = strictest([o for t in measured if (o := settings.objective(t)) is not None])
    if objective is None:
        return None
    totals = [Counts(), Counts(), Counts()]  # window, last hour, last 6 h
    for start in range(0, len(measured), reading.BATCH):
        batch = measured[start : start + reading.BATCH]
        for found in await asyncio.gather(
            *(reading.spans(store, t, objective, at) for t in batch)
        ):
            totals = [a + b for a, b in zip(totals, found, strict=True)]
    budget = sli.Budget(name, objective, *totals)
    sums = combined((await daily(store, measured)).values())
    today = int(at // DAY)
    days = []
    for day in range(today - BARS + 1, today + 1):
        value = sli.availability(sums.get(day, Counts()))
        days.append(Day(day, value, grade(value, objective)))
    return ComponentObjective(budget, tuple(days))
