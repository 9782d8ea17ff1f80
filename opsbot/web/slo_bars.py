"""The status page's objectives: each component's availability against its objective, the
error budget left, and a bar per day of the last 90 (as hosted status pages draw them), in
HTML that needs no script and shrinks to a 360 px phone, and in ``/status.json``."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from opsbot.objectives import public as objectives
from opsbot.objectives import sli

CSS = """
.slo{margin:1rem 0 1.5rem}.slo p{margin:.15rem 0}
.bars{display:flex;gap:1px;list-style:none;padding:0;margin:.35rem 0 0;height:2rem}
.bars li{flex:1 1 0;min-width:0;border-radius:1px}
.bars .ok{background:#1a7f37}.bars .warn{background:#bf8700}.bars .fail{background:#cf222e}
.bars .none{background:#d0d7de}
.axis{display:flex;justify-content:space-between;color:#59636e;font-size:.8rem}
.sr{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
"""


def _day(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def as_json(found: objectives.ComponentObjective | None) -> dict[str, object] | None:
    if found is None:
        return None
    b = found.budget
    left = b.left
    return {
        "objective": b.objective.availability,
        "window_days": round(b.objective.window / 86400, 3),
        "availability": _rounded(b.sli),
        "budget_left": _rounded(None if left is None else 100 * left, 1),
        "budget_left_minutes": _rounded(b.left_minutes, 1),
        "burn_rate": {"1h": _rounded(b.burn(b.last_1h), 2), "6h": _rounded(b.burn(b.last_6h), 2)},
        "days": [
            {"date": _day(d.day), "availability": _rounded(d.availability), "grade": d.grade}
            for d in found.days
        ],
    }


_GRADES = {"ok": "objective met", "warn": "objective missed", "fail": "well below objective",
           "none": "no data"}  # fmt: skip


def as_html(name: str, found: objectives.ComponentObjective | None) -> str:
    """The component's SLI and budget in words, and a bar per day of the last 90."""
    if found is None:
        return ""
    b = found.budget
    goal = sli.percent(b.objective.availability)
    window = f"{b.objective.window / 86400:g} days"
    if b.sli is None or b.left is None:
        said = f"No measurements yet (objective {goal} over {window})."
    else:
        left = f"{b.left * 100:.0f} % of the error budget left"
        if b.left <= 0:
            left = "error budget spent"
        said = f"{sli.percent(b.sli)} available over {window} (objective {goal}) · {left}"
    bars = "".join(
        f'<li class="{d.grade}" title="{_day(d.day)}: {_bar_text(d)}">'
        f'<span class="sr">{_day(d.day)}: {_bar_text(d)}</span></li>'
        for d in found.days
    )
    return (
        f'<div class="slo"><h3>{escape(name)}</h3><p>{escape(said)}</p>'
        f'<ol class="bars" aria-label="Availability per day, the last {len(found.days)} days, '
        f'oldest first">{bars}</ol>'
        f'<p class="axis" aria-hidden="true"><span>{len(found.days)} days ago</span>'
        f"<span>today</span></p></div>"
    )


def _bar_text(d: objectives.Day) -> str:
    shown = "no data" if d.availability is None else sli.percent(d.availability)
    return shown if d.grade == "none" else f"{shown}, {_GRADES[d.grade]}"


