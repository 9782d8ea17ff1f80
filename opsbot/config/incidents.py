"""The incident wing's settings: the status page, on-call, escalation, the post-mortem."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from string import Template
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    field_validator,
)

from opsbot.config.base import (
    Minutes,
    Name,
    _Model,
)


class StatusComponent(_Model):
    """One public component of the status page: a name and the targets behind it."""

    name: str = Field(min_length=1, max_length=64, description="Shown on the page.")
    description: str = Field(default="", max_length=200, description="Shown on the page.")
    targets: Annotated[list[Name], Field(min_length=1)] = Field(
        description="Never shown: the component's state is the worst of theirs."
    )


class StatusPageSettings(_Model):
    """The public status page on the web server: /status, /status.json, /status.atom."""

    title: str = Field(default="Service status", min_length=1, max_length=100)
    public: bool = Field(default=True, description="false: behind web.token (Bearer or Basic).")
    refresh: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=60, description="Seconds between the page's automatic reloads."
    )
    components: list[StatusComponent] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.components)


class Rotation(_Model):
    """Who is on call: ``people`` take turns; the next one in the list is the secondary."""

    people: Annotated[list[str], Field(min_length=1)] = Field(description="Names from people.")
    handover: Literal["daily", "weekly"] = "weekly"
    at: str = Field(
        default="09:00",
        pattern=r"^([01]?\d|2[0-3]):[0-5]\d$",
        description="Local handover time, HH:MM (quote it in YAML).",
    )
    timezone: str = "UTC"
    start: date = Field(
        default=date(2024, 1, 1),
        description="The first person's first shift begins on this day (weekly: the weekday).",
    )

    @field_validator("at", mode="before")
    @classmethod
    def _sexagesimal(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted 9:30 as the number 570 (base 60): take it back."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return f"{value // 60:02d}:{value % 60:02d}"
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (like Europe/Berlin)") from None
        return value


class EscalationPolicy(_Model):
    """Minutes after which an unacknowledged incident or alert pages each step (null: never)."""

    primary: Minutes | None = 15
    secondary: Minutes | None = 30
    contacts: Minutes | None = 60
    resolve_within: Minutes | None = Field(
        default=None, description="Not resolved by then (acked or not): page the contacts."
    )


class Escalation(_Model):
    P0: EscalationPolicy = EscalationPolicy(primary=5, secondary=15, contacts=30)
    P1: EscalationPolicy = EscalationPolicy(
        primary=15, secondary=30, contacts=60, resolve_within=120
    )
    critical: EscalationPolicy = Field(
        default=EscalationPolicy(primary=10, secondary=20, contacts=40),
        description="Critical alerts.",
    )


class OnCallSettings(_Model):
    """The on-call rotation and the escalation policy; pages are private messages."""

    rotation: Rotation
    contacts: list[str] = Field(
        default_factory=list, description="Escalation contacts (names from people), in order."
    )
    escalation: Escalation = Escalation()


#: The placeholders a post-mortem template may use (``opsbot.incidents.postmortem`` fills
#: them); the blocks (timeline, measures, actions_taken) end with a newline when not empty.
POSTMORTEM_FIELDS = (
    "id", "title", "date", "duration", "severity", "status", "commander", "declared_by",
    "targets", "timeline", "measures", "resolution", "actions_taken",
)  # fmt: skip


class IncidentSettings(_Model):
    postmortem_template: Path | None = Field(
        default=None,
        description=(
            "A Markdown file replacing the post-mortem draft's template: string.Template "
            "placeholders ($id, $title, $timeline, ...; $$ for a dollar sign). Default: the "
            "runbooks' sections shipped with opsbot (opsbot/incidents/postmortem.md)."
        ),
    )

    @field_validator("postmortem_template")
    @classmethod
    def _fillable(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        try:
            template = Template(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, 'strerror', None) or exc
            raise ValueError(f"cannot read {path}: {reason}") from None
        if not template.is_valid():
            raise ValueError(f"{path}: a $ that is no placeholder (write $$ for a dollar sign)")
        unknown = sorted(set(template.get_identifiers()) - set(POSTMORTEM_FIELDS))
        if unknown:
            raise ValueError(
                f"{path}: unknown placeholder(s) {', '.join('$' + u for u in unknown)}; "
                f"known: {', '.join('$' + f for f in POSTMORTEM_FIELDS)}"
            )
        return path
