"""Service level objectives: what each target promises, how budget burn pages, the report.

Every target has an objective (``objectives.default``, overridden per target by its own
``objective:`` keys): availability (percent of the monitor's rounds that are not failing) and
latency (percent of rounds whose slowest check answered within ``latency``) over ``window``.
``latency`` is one of ``LATENCY_BUCKETS``: the rounds are recorded in those fixed buckets.
"""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from opsbot.config.base import Duration, _Model

#: The latency histogram's upper bounds in seconds (a last bucket holds the slower rounds).
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
DAY = 86400.0


def check_percent(value: float) -> float:
    if not 50 <= value < 100:
        raise ValueError(f"an objective is a percentage from 50 up to 100 (excluded), not {value}")
    return value


def check_window(value: float | None) -> float | None:
    if value is not None and not 7 * DAY <= value <= 90 * DAY:
        raise ValueError("the window is from 7d to 90d")
    return value


def check_bucket(value: float | None) -> float | None:
    if value is not None and value not in LATENCY_BUCKETS:
        shown = ", ".join(f"{b:g}" for b in LATENCY_BUCKETS)
        raise ValueError(f"latency is one of the recorded bounds ({shown} s), not {value:g}")
    return value


class Objective(_Model):
    """One target's objectives (all defaults: 99.9 % available, 95 % of rounds under 2 s, 30d)."""

    availability: float = Field(
        default=99.9, description="Percent of rounds not failing, over the window."
    )
    latency: float = Field(
        default=2.0, description=f"Seconds a round may take to count as fast: {LATENCY_BUCKETS}."
    )
    latency_target: float = Field(default=95.0, description="Percent of rounds under latency.")
    window: Duration = Field(default=30 * DAY, description="7d to 90d.")

    @field_validator("availability", "latency_target")
    @classmethod
    def _percent(cls, value: float) -> float:
        return check_percent(value)

    @field_validator("latency")
    @classmethod
    def _bucket(cls, value: float) -> float:
        return check_bucket(value) or value

    @field_validator("window")
    @classmethod
    def _window(cls, value: float) -> float:
        return check_window(value) or value


class ObjectiveOverride(_Model):
    """A target's own objective keys; what it leaves out comes from ``objectives.default``."""

    enabled: bool = Field(default=True, description="false: no objective for this target.")
    availability: float | None = None
    latency: float | None = None
    latency_target: float | None = None
    window: Duration | None = None

    @field_validator("availability", "latency_target")
    @classmethod
    def _percent(cls, value: float | None) -> float | None:
        return None if value is None else check_percent(value)

    @field_validator("latency")
    @classmethod
    def _bucket(cls, value: float | None) -> float | None:
        return check_bucket(value)

    @field_validator("window")
    @classmethod
    def _window(cls, value: float | None) -> float | None:
        return check_window(value)

    def over(self, default: Objective) -> Objective:
        keys = ("availability", "latency", "latency_target", "window")
        own = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        return default.model_copy(update=own)


class BurnRule(_Model):
    """Alert when the budget burns faster than ``factor`` over ``long`` and over ``short``."""

    severity: Literal["page", "ticket"]
    long: Duration
    short: Duration
    factor: Annotated[float, Field(gt=0, le=1000)]

    @model_validator(mode="after")
    def _short_is_shorter(self) -> BurnRule:
        if self.short >= self.long:
            raise ValueError("short must be shorter than long")
        if self.long > 30 * DAY:
            raise ValueError("long is at most 30d")
        return self


#: The SRE workbook's multiwindow, multi-burn-rate alerts (chapter 5, table 5-8).
WORKBOOK_RULES = (
    BurnRule(severity="page", long=3600, short=300, factor=14.4),
    BurnRule(severity="page", long=6 * 3600, short=1800, factor=6),
    BurnRule(severity="ticket", long=DAY, short=2 * 3600, factor=3),
    BurnRule(severity="ticket", long=3 * DAY, short=6 * 3600, factor=1),
)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ReportSchedule(_Model):
    """When the objectives report goes to the ops chat by itself."""

    every: Literal["off", "daily", "weekly"] = "off"
    day: Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"] = Field(
        default="mon", description="weekly: the day."
    )
    at: str = Field(
        default="09:00", pattern=r"^([01]?\d|2[0-3]):[0-5]\d$", description="HH:MM, local."
    )
    timezone: str = "UTC"
    chat_id: int | None = Field(default=None, description="Default: the ops chat.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown timezone {value!r} (e.g. Europe/Berlin, UTC)") from None
        return value


class ObjectiveSettings(_Model):
    """``objectives``: recording, defaults, burn-rate alerts and the report."""

    enabled: bool = Field(default=True, description="Record the monitor's rounds as SLIs.")
    default: Objective = Objective()
    alerts: bool = Field(default=True, description="Burn-rate alerts through the alert engine.")
    burn_rules: list[BurnRule] = Field(
        default_factory=lambda: list(WORKBOOK_RULES),
        description="Default: the SRE workbook's 14.4x 1h/5m, 6x 6h/30m (page), "
        "3x 1d/2h, 1x 3d/6h (ticket).",
    )
    min_rounds: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=10,
        description="A burn-rate rule fires only when its long window holds at least this "
        "many rounds: a target's first rounds (a cold connection, a fleet's start) prove "
        "little.",
    )
    report: ReportSchedule = ReportSchedule()
