"""Budgets read from the store: one target's, or every target's with an objective.

A 30-day window is read as its two edges and the whole days between: the day blocks of the
window's first day, yesterday and today (minute by minute), and the daily sums of the days
in between (one small document per target; a day whose sum was never written is read from
its block), so that a budget holds about three blocks while it is read and ``budgets`` of a
fleet reads ``BATCH`` targets at a time (a day block is 17 KB decoded: a thousand targets'
31 days at once were half a gigabyte). A replica killed before it wrote the day's sums
(every ``recording.DAYS_EVERY`` flushes) leaves that day's sum short by those minutes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opsbot.config import Objective, Settings
from opsbot.objectives import sli
from opsbot.objectives.recording import blocks_on, daily
from opsbot.objectives.series import HOUR, Counts, span
from opsbot.state.store import Store

#: Targets whose budgets are read at once.
BATCH = 50


async def spans(
    store: Store, target: str, objective: Objective, at: float
) -> tuple[Counts, Counts, Counts]:
    """The target's counts over its window, the last hour and the last 6 hours."""
    first, last = sli.days_needed(objective, at)
    near = max(first, last - 1)  # yesterday: its daily sum may not be written yet
    between = range(first + 1, near)
    summed = (await daily(store, [target]))[target] if between else {}
    missing = [d for d in between if d not in summed]  # sums not written: the blocks, then
    found = await blocks_on(store, target, sorted({first, *missing, *range(near, last + 1)}))
    window = span(found, at - objective.window, at)
    window = sum((summed[d] for d in between if d in summed), window)
    return window, span(found, at - HOUR, at), span(found, at - 6 * HOUR, at)


async def budget(store: Store, settings: Settings, target: str, at: float) -> sli.Budget | None:
    """The target's budget as of ``at`` (None: it has no objective)."""
    objective = settings.objective(target)
    if objective is None:
        return None
    return sli.Budget(target, objective, *await spans(store, target, objective, at))


async def budgets(
    store: Store, settings: Settings, at: float, targets: Sequence[str] | None = None
) -> list[sli.Budget]:
    """Every (or each named) target's budget, the least budget left first."""
    names = [n for n in (targets or sorted(settings.targets)) if settings.objective(n)]
    found: list[sli.Budget | None] = []
    for start in range(0, len(names), BATCH):
        batch = names[start : start + BATCH]
        found += await asyncio.gather(*(budget(store, settings, n, at) for n in batch))
    return sorted((b for b in found if b is not None), key=_least_left)


def _least_left(b: sli.Budget) -> tuple[int, float, str]:
    left = b.left
    return (1, 0.0, b.target) if left is None else (0, left, b.target)
