"""One thing a runbook command says: a ``Sighting`` (what ``recognise`` returns)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from opsbot.onboarding.shell import is_placeholder

What = Literal[
    "target", "mention", "check", "backup", "note", "log", "destructive", "known", "unknown"
]


@dataclass(frozen=True)
class Sighting:
    """``target``: ``kind`` and ``fields`` (``mention``: the same, read-only, creates nothing);
    ``check``/``backup``: ``fields`` is its config and ``near`` the target it belongs to
    (``postgres``, ``redis``, ``bot``; empty: the runbook's main target)."""

    what: What
    kind: str = ""
    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    near: str = ""



def clean(value: str) -> str | None:
    """The value, or None when it is empty or a placeholder (never drafted as a value)."""
    return None if not value or is_placeholder(value) else value


def relative(path: str) -> tuple[str, ...]:
    """The note a relative path gets: the draft keeps it, the user makes it absolute."""
    return () if path.startswith("/") else (f"path: {path} is relative: give the absolute path",)
