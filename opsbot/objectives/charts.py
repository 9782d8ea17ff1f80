"""PNG charts with matplotlib's Agg backend (no display): the report's and /health's.

Drawn for a phone: large type, one colour per target, at most ``MAX_LINES`` targets (the
report names the worst ones), the objective as a dashed line. matplotlib is imported on first
use only, so opsbot starts as fast as before.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

REPORT_SIZE = (1080, 1350)  # pixels: a phone's portrait, 4:5
LATENCY_SIZE = (1080, 540)  # pixels: /health TARGET's strip
DPI = 150
MAX_LINES = 8
_lock = threading.Lock()  # pyplot's state is global: one figure at a time


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def _dates() -> Any:
    from matplotlib import dates

    return dates


def _png(figure: Any, pyplot: Any) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    pyplot.close(figure)
    return out.getvalue()


def _date(day: int) -> datetime:
    return datetime.fromtimestamp(day * 86400, UTC)


def report(
    days: Sequence[int],
    availability: Mapping[str, Sequence[float | None]],
    p95: Mapping[str, Sequence[float | None]],
    objective: float | None,
    title: str,
) -> bytes:
    """Availability (%) and p95 latency (s) per day, one line per target."""
    with _lock:
        pyplot = _pyplot()
        width, height = REPORT_SIZE
        figure, (upper, lower) = pyplot.subplots(
            2, 1, figsize=(width / DPI, height / DPI), sharex=True, layout="constrained"
        )
        dates = [_date(d) for d in days]
        for name in list(availability)[:MAX_LINES]:
            shown = [v if v is not None else float("nan") for v in availability[name]]
            upper.plot(dates, shown, marker="o", linewidth=2, label=name)
            slow = [v if v is not None else float("nan") for v in p95.get(name, ())]
            lower.plot(dates, slow, marker="o", linewidth=2, label=name)
        if objective is not None:
            upper.axhline(objective, color="0.4", linestyle="--", linewidth=1.5,
                          label=f"objective {objective:g} %")  # fmt: skip
        upper.set_title(title, fontsize=15)
        upper.set_ylabel("available (%)", fontsize=13)
        lower.set_ylabel("p95 latency (s)", fontsize=13)
        for axes in (upper, lower):
            axes.grid(True, alpha=0.3)
            axes.tick_params(labelsize=11)
        upper.legend(fontsize=11, loc="lower left")
        lower.xaxis.set_major_formatter(_dates().DateFormatter("%b %d"))
        figure.autofmt_xdate()
        return _png(figure, pyplot)


def latency(
    target: str, minutes: Sequence[tuple[float, float | None]], objective: float | None
) -> bytes:
    """A target's p95 latency per 10 minutes over the last 24 h (at, seconds)."""
    with _lock:
        pyplot = _pyplot()
        width, height = LATENCY_SIZE
        figure, axes = pyplot.subplots(figsize=(width / DPI, height / DPI), layout="constrained")
        dates = [datetime.fromtimestamp(at, UTC) for at, _ in minutes]
        values = [v if v is not None else float("nan") for _, v in minutes]
        axes.plot(dates, values, linewidth=2, color="#0550ae")
        if objective is not None:
            axes.axhline(objective, color="#b42318", linestyle="--", linewidth=1.5,
                         label=f"objective {objective:g} s")  # fmt: skip
            axes.legend(fontsize=10, loc="upper left")
        axes.set_title(f"{target}: p95 latency, last 24 h (UTC)", fontsize=13)
        axes.set_ylabel("seconds", fontsize=11)
        axes.grid(True, alpha=0.3)
        axes.xaxis.set_major_formatter(_dates().DateFormatter("%H:%M"))
        figure.autofmt_xdate()
        return _png(figure, pyplot)
