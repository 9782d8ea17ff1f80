"""A target's latency over the last 24 h: the chart /latency sends and /health shows inline,
and its one line of words (p95, the share of rounds within the objective)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from opsbot.objectives import charts, sli
from opsbot.objectives.recording import blocks
from opsbot.objectives.series import DAY, span
from opsbot.render import Document
from opsbot.services import Services

STEP = 600.0  # the chart's points: p95 per 10 minutes


async def latency(
    services: Services, name: str, now: float, *, photo: bool = False
) -> tuple[str, Document] | None:
    """(the words, the PNG) of the target's last 24 h (None: it has no objective, so no
    rounds are recorded). ``photo``: shown in the chat rather than attached as a file, and
    only once there is something to draw (None: no timed round in the last 24 h)."""
    objective = services.settings.objective(name)
    if objective is None:
        return None
    days = await blocks(services.store, name, int((now - DAY) // DAY), int(now // DAY))
    day = span(days, now - DAY, now)
    timed = sum(day.hist)
    if photo and not timed:
        return None
    start = (now - DAY) // STEP * STEP
    points = []
    for step in range(int(DAY // STEP) + 1):
        at = start + step * STEP
        p95 = span(days, at, at + STEP).quantile(0.95)
        points.append((at + STEP / 2, 60.0 if p95 == float("inf") else p95))
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
    return text, Document(f"{name}-latency-{stamp}.png", png, raw=True, photo=photo)
