"""One thing a runbook command says: a ``Sighting`` (what ``recognise`` returns)."""

from __future__ import annotations

import re
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
    (``postgres``, ``redis``, ``bot``; empty: the runbook's main target); ``through`` says
    which way of running it the check needs when it runs inside a container."""

    what: What
    kind: str = ""
    name: str = ""
    fields: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    near: str = ""
    #: a check or backup run inside a container: how, and in what (``docker:web``,
    #: ``compose:redis``, ``kubectl:deploy/bot``)
    through: str = ""



#: Name parts of a database, cache, broker or proxy: reading its logs is looking, not operating.
INFRASTRUCTURE = frozenset(
    (
        "postgres", "postgresql", "pg", "db", "database", "mysql", "mariadb", "mongo", "mongodb",
        "redis", "cache", "memcached", "nginx", "traefik", "caddy", "haproxy", "proxy", "rabbitmq",
        "kafka", "zookeeper", "elasticsearch", "certbot", "ingress"
    )
)  # fmt: skip


def infrastructure(name: str) -> bool:
    """Whether a service's name says it is a database, cache, broker or proxy (``tgbot-db``)."""
    return any(part in INFRASTRUCTURE for part in re.split(r"[-_.@]+", name.lower()))


def clean(value: str) -> str | None:
    """The value, or None when it is empty or a placeholder (never drafted as a value)."""
    return None if not value or is_placeholder(value) else value


def relative(path: str) -> tuple[str, ...]:
    """The note a relative path gets: the draft keeps it, the user makes it absolute."""
    return () if path.startswith("/") else (f"path: {path} is relative: give the absolute path",)
