"""Budgets read from the store: one target's, or every target's with an objective."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from opsbot.config import Settings
from opsbot.objectives import sli
from opsbot.objectives.recording import blocks
from opsbot.state.store import Store


async def budget(store: Store, settings: Settings, target: str, at: float) -> sli.Budget | None:
    """The target's budget as of ``at`` (None: it has no objective)."""
    objective = settings.objective(target)
    if objective is None:
        return None
    first, last = sli.days_needed(objective, at)
    return sli.budget(target, objective, await blocks(store, target, first, last), at)


async def budgets(
    store: Store, settings: Settings, at: float, targets: Sequence[str] | None = None
) -> list[sli.Budget]:
    """Every (or each named) target's budget, the least budget left first."""
    names = [n for n in (targets or sorted(settings.targets)) if settings.objective(n)]
    found = await asyncio.gather(*(budget(store, settings, n, at) for n in names))
    return sorted((b for b in found if b is not None), key=_least_left)


def _least_left(b: sli.Budget) -> tuple[int, float, str]:
    left = b.left
    return (1, 0.0, b.target) if left is None else (0, left, b.target)
