"""Which burn-rate rules fire: the SRE workbook's multiwindow, multi-burn-rate alerts.

A rule fires when the budget burns faster than its factor over both its long and its short
window (the long one says it matters, the short one that it is still happening, so the alert
resolves soon after the burn stops). Of the firing rules, the first page wins, else the first
ticket: one alert per target, budget (availability, latency) and severity.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from opsbot.config import BurnRule, Objective
from opsbot.objectives.series import Block, Counts, span, window_begin
from opsbot.objectives.sli import burn_rate, latency_view


@dataclass(frozen=True, slots=True)
class Burning:
    """A rule that fires now, with the rates that made it fire."""

    rule: BurnRule
    long_rate: float
    short_rate: float


Window = Callable[[float], Counts]  # the counts of the last so many seconds


def over(blocks: Mapping[int, Block], at: float) -> Window:
    """The counts of the last so many seconds before ``at``, from day blocks."""
    return lambda seconds: span(blocks, window_begin(seconds, at), at, hist=False)


def over_latency(blocks: Mapping[int, Block], at: float, objective: Objective) -> Window:
    """The timed rounds of the last so many seconds before ``at`` (``sli.latency_view``)."""
    return lambda seconds: latency_view(span(blocks, window_begin(seconds, at), at), objective)


def firing(
    rules: Sequence[BurnRule],
    objective: Objective,
    window: Window,
    *,
    latency: bool = False,
    min_rounds: int = 1,
) -> dict[str, Burning]:
    """Per severity (page, ticket), the first rule that fires now (``latency``: on the
    latency budget, ``window`` giving timed rounds), over a long window of at least
    ``min_rounds`` rounds (one slow first round of two is not a budget burning)."""
    out: dict[str, Burning] = {}
    for rule in rules:
        if rule.severity in out:
            continue
        counts = window(rule.long)
        if counts.total < min_rounds:
            continue
        long_rate = burn_rate(counts, objective, latency=latency)
        short_rate = burn_rate(window(rule.short), objective, latency=latency)
        if long_rate is None or short_rate is None:
            continue
        if long_rate > rule.factor and short_rate > rule.factor:
            out[rule.severity] = Burning(rule, long_rate, short_rate)
    return out


def longest(rules: Sequence[BurnRule]) -> float:
    """The longest window any rule reads (the blocks a tick needs)."""
    return max((rule.long for rule in rules), default=0.0)
