"""The incident as stored: ``Incident`` and its timeline ``Entry``, ids, limits, durations."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

NAMESPACE = "incidents"
COUNTER = "incident-counter"
PREFIX = "INC-"

SEVERITIES = ("P0", "P1", "P2", "P3")
ICONS = {"P0": "🔴", "P1": "🟠", "P2": "🟡", "P3": "🔵"}
STATES = ("open", "acknowledged", "mitigated", "resolved")
KINDS = (
    "declared", "ack", "update", "severity", "assign", "mitigated", "resolved", "reopened",
    "command", "approval", "action", "alert", "recovery", "public", "escalation",
)  # fmt: skip

EDIT_INTERVAL = 10.0  # seconds between card edits caused by automatic timeline entries
REFRESH_INTERVAL = 60.0  # the card's duration and health are refreshed at most this often
CARD_RETRY = 60.0  # a card that could not be posted is retried by tick after this long
HEALTH_TIMEOUT = 20.0
MAX_TIMELINE = 500  # entries kept per incident (the first, "declared", always stays)
MAX_TEXT = 500  # characters of one timeline entry
MAX_TITLE = 200
CARD_ENTRIES = 6  # latest timeline entries shown on the card
MAX_SWAPS = 1000
CONVERGE = 5  # re-reads after a card edit, while concurrent changes keep coming

State = Literal["open", "acknowledged", "mitigated", "resolved"]
Health = Callable[[Sequence[str]], Awaitable[str]]
_ID = re.compile(r"^(?:INC-?|#)?(\d{1,9})$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Entry:
    """One timeline entry; ``kind`` is one of ``KINDS``."""

    at: float
    actor: str
    kind: str
    text: str

    def to_doc(self) -> dict[str, Any]:
        return {"at": self.at, "actor": self.actor, "kind": self.kind, "text": self.text}

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Entry:
        return cls(float(doc["at"]), str(doc["actor"]), str(doc["kind"]), str(doc["text"]))


@dataclass(frozen=True, slots=True)
class Incident:
    id: str
    severity: str
    title: str
    targets: tuple[str, ...]
    state: State
    commander: str
    declared_by: str
    created: float
    acked_at: float | None = None
    mitigated_at: float | None = None
    resolved_at: float | None = None
    chat_id: int | None = None
    thread_id: int | None = None
    card_message_id: int | None = None
    summary: str | None = None
    last_update: str | None = None
    last_reminder: float | None = None
    timeline: tuple[Entry, ...] = ()
    dropped: int = 0  # timeline entries dropped beyond MAX_TIMELINE
    first_severity: str | None = None
    # the card
    card_text: str | None = None  # what the card shows (or is about to show)
    card_edited_at: float = 0.0
    card_dirty: bool = False  # an automatic entry is not on the card yet
    card_retry_at: float | None = None
    health: str | None = None
    health_at: float = 0.0

    def to_doc(self) -> dict[str, Any]:
        doc = {name: getattr(self, name) for name in _FIELDS}
        doc["targets"] = list(self.targets)
        doc["timeline"] = [e.to_doc() for e in self.timeline]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Incident:
        values = {k: v for k, v in doc.items() if k in _FIELDS}
        values["targets"] = tuple(doc.get("targets", ()))
        values["timeline"] = tuple(Entry.from_doc(e) for e in doc.get("timeline", ()))
        return cls(**values)

    @property
    def resolved(self) -> bool:
        return self.state == "resolved"

    @property
    def number(self) -> int:
        return int(self.id.removeprefix(PREFIX))

    def duration(self, now: float) -> float:
        end = self.resolved_at if self.resolved_at is not None else now
        return max(0.0, end - self.created)

    def add(self, *entries: Entry) -> Incident:
        """The incident with entries appended (the oldest but the first dropped past the cap)."""
        timeline = (*self.timeline, *entries)
        dropped = self.dropped
        if len(timeline) > MAX_TIMELINE:
            cut = len(timeline) - MAX_TIMELINE
            timeline = (timeline[0], *timeline[1 + cut :])
            dropped += cut
        return replace(self, timeline=timeline, dropped=dropped)


_FIELDS = tuple(Incident.__dataclass_fields__)


def normalize_id(word: str) -> str | None:
    """``INC-7``, ``inc-7``, ``#7`` or ``7`` → ``INC-7``; None for anything else."""
    match = _ID.match(word.strip())
    return f"{PREFIX}{int(match.group(1))}" if match else None


def normalize_severity(word: str) -> str | None:
    upper = word.strip().upper()
    return upper if upper in SEVERITIES else None


def short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
