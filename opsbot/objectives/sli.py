"""The arithmetic: SLIs, error budgets and burn rates from recorded counts.

* SLI: good rounds / rounds, over the window (availability); rounds within the objective's
  latency / timed rounds (latency).
* Error budget: the share of rounds allowed to be bad, ``1 - objective``. Left: ``1 -
  (1 - SLI) / (1 - objective)`` (negative once overspent); in minutes, of ``window × (1 -
  objective)``.
* Burn rate over a span: its error rate / ``(1 - objective)``: 1× spends the budget exactly
  over the window, 14.4× spends 2 % of a 30-day budget in an hour.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from opsbot.config import Objective
from opsbot.objectives.series import DAY, MINUTE, Block, Counts, span

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class Budget:
    """One target's objective over its window, as of ``at``."""

    target: str
    objective: Objective
    window: Counts
    last_1h: Counts
    last_6h: Counts

    @property
    def allowed(self) -> float:
        """The share of rounds allowed to fail."""
        return 1 - self.objective.availability / 100

    @property
    def sli(self) -> float | None:
        """Percent of good rounds over the window (None: no rounds recorded)."""
        return availability(self.window)

    @property
    def latency_sli(self) -> float | None:
        timed = sum(self.window.hist)
        return 100 * self.window.fast(self.objective.latency) / timed if timed else None

    @property
    def left(self) -> float | None:
        """Share of the budget left: 1.0 untouched, 0 spent, negative overspent."""
        sli = self.sli
        return None if sli is None else 1 - (1 - sli / 100) / self.allowed

    @property
    def budget_minutes(self) -> float:
        return self.objective.window / MINUTE * self.allowed

    @property
    def left_minutes(self) -> float | None:
        left = self.left
        return None if left is None else left * self.budget_minutes

    @property
    def latency_left(self) -> float | None:
        """Share of the latency budget left (the rounds allowed over ``latency``)."""
        sli = self.latency_sli
        allowed = 1 - self.objective.latency_target / 100
        return None if sli is None else 1 - (1 - sli / 100) / allowed

    def burn(self, counts: Counts) -> float | None:
        return burn_rate(counts, self.objective)

    def latency_burn(self, counts: Counts) -> float | None:
        return burn_rate(latency_view(counts, self.objective), self.objective, latency=True)

    @property
    def gone_in(self) -> float | None:
        """Seconds until the budget is spent at the last hour's burn rate (None: not burning
        or already spent)."""
        return self._gone(self.left, self.burn(self.last_1h))

    @property
    def latency_gone_in(self) -> float | None:
        return self._gone(self.latency_left, self.latency_burn(self.last_1h))

    def _gone(self, left: float | None, rate: float | None) -> float | None:
        if left is None or rate is None or rate <= 0 or left <= 0:
            return None
        return left * self.objective.window / rate


def availability(counts: Counts) -> float | None:
    return 100 * counts.good / counts.total if counts.total else None


def burn_rate(counts: Counts, objective: Objective, *, latency: bool = False) -> float | None:
    """How many times faster than allowed the budget burned over ``counts`` (None: no
    rounds). ``latency``: the latency budget, ``counts`` being timed rounds with those
    within the objective as good (``latency_view``)."""
    if not counts.total:
        return None
    goal = objective.latency_target if latency else objective.availability
    return (counts.bad / counts.total) / (1 - goal / 100)


def latency_view(counts: Counts, objective: Objective) -> Counts:
    """The timed rounds of ``counts`` as rounds, those within the objective's latency good."""
    return Counts(sum(counts.hist), counts.fast(objective.latency))


def budget(target: str, objective: Objective, blocks: Mapping[int, Block], at: float) -> Budget:
    return Budget(
        target,
        objective,
        window=span(blocks, at - objective.window, at),
        last_1h=span(blocks, at - HOUR, at),
        last_6h=span(blocks, at - 6 * HOUR, at),
    )


def days_needed(objective: Objective, at: float) -> tuple[int, int]:
    """The first and last UTC day whose blocks ``budget`` reads."""
    return int((at - objective.window) // DAY), int(at // DAY)


# --------------------------------------------------------------------------- words


def percent(value: float) -> str:
    """99.93 %, 100 %, 87.5 %: two decimals where they matter, no trailing zeros."""
    text = f"{math.floor(value * 100) / 100:.2f}".rstrip("0").rstrip(".")
    return f"{text} %"


def times(rate: float) -> str:
    return f"{rate:.1f}×" if rate < 100 else f"{rate:.0f}×"


def duration(seconds: float) -> str:
    """"9 days", "5 h", "40 min"."""
    if seconds >= 2 * DAY:
        return f"{seconds / DAY:.0f} days"
    if seconds >= 2 * HOUR:
        return f"{seconds / HOUR:.0f} h"
    return f"{max(1, round(seconds / MINUTE))} min"


def span_name(seconds: float) -> str:
    """A rule's window: "5 min", "1 h", "3 d"."""
    for unit, size in (("d", DAY), ("h", HOUR)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds / MINUTE:g} min"


def verdict(b: Budget) -> str:
    """"quizbot: 99.93 % of 99.9 %, 31 % of the budget left, burning 2.1× — gone in 9 days
    at this rate"."""
    goal = percent(b.objective.availability)
    sli, left = b.sli, b.left
    if sli is None or left is None:
        return f"{b.target}: no rounds recorded yet (objective {goal})"
    head = f"{b.target}: {percent(sli)} of {goal}, "
    if left <= 0:
        head += f"budget spent ({percent(-left * 100).replace(' %', '')} % over)"
    else:
        head += f"{left * 100:.0f} % of the budget left"
    rate = b.burn(b.last_1h)
    if rate is None:
        return head + ", no rounds in the last hour"
    if rate == 0:
        return head + ", not burning"
    head += f", burning {times(rate)}"
    gone = b.gone_in
    if gone is not None:
        head += f" — gone in {duration(gone)} at this rate"
    return head


def details(b: Budget) -> list[str]:
    """The lines under the verdict: budget in minutes, burn rates, latency."""
    lines = []
    left_minutes = b.left_minutes
    window_days = f"{b.objective.window / DAY:g} d"
    if left_minutes is not None:
        lines.append(
            f"budget: {max(0.0, left_minutes):.0f} of {b.budget_minutes:.0f} min left "
            f"({window_days}, {b.window.bad} of {b.window.total} rounds failed)"
        )
    rates = [
        f"{name} {times(rate)}" if (rate := b.burn(counts)) is not None else f"{name} –"
        for name, counts in (("1 h", b.last_1h), ("6 h", b.last_6h))
    ]
    lines.append("burn rate: " + ", ".join(rates))
    latency = b.latency_sli
    if latency is not None:
        goal = percent(b.objective.latency_target)
        p95 = b.window.quantile(0.95)
        shown = "> 30 s" if p95 == float("inf") else f"≤ {p95:g} s" if p95 is not None else "–"
        lines.append(
            f"latency: {percent(latency)} of rounds ≤ {b.objective.latency:g} s "
            f"(objective {goal}), p95 {shown}"
        )
    return lines
