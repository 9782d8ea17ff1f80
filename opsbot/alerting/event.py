"""What every alert source produces: the monitor, Alertmanager, generic webhooks, bot checks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal


class Severity(StrEnum):
    info = "info"
    warning = "warning"
    critical = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    @property
    def icon(self) -> str:
        return {"info": "ℹ️", "warning": "⚠️", "critical": "🔥"}[self.value]

    @classmethod
    def parse(cls, value: str | None) -> Severity:
        """Lenient: Alertmanager labels say 'page', 'error', 'warn'..."""
        word = (value or "").lower()
        if word in ("critical", "crit", "page", "error", "high", "p0", "p1"):
            return cls.critical
        if word in ("warning", "warn", "medium", "p2"):
            return cls.warning
        return cls.info if word in ("info", "low", "p3", "none") else cls.warning


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One observation: a fingerprint firing or resolved. Repeats of a fingerprint dedup."""

    source: str  # monitor | alertmanager | webhook | telegram
    fingerprint: str
    status: Literal["firing", "resolved"]
    severity: Severity
    summary: str
    target: str | None = None
    starts_at: float | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @staticmethod
    def make_fingerprint(*parts: str) -> str:
        return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:16]
