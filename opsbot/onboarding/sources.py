"""What ``discover ENDPOINT`` names: a configured endpoint, ``ssh://user@host[:port]``, a
Docker URL (``unix:///…``, ``tcp://host:port``) or ``local``, made into an endpoint config.

A word that is none of these is refused before anything runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from opsbot.config import Settings
from opsbot.config.targets import DockerEndpoint, LocalEndpoint, SSHEndpoint
from opsbot.errors import UsageError
from opsbot.onboarding.draft import target_name

EndpointConfig = SSHEndpoint | DockerEndpoint | LocalEndpoint

_USER = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$", re.IGNORECASE)
_HOST = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,252})$|^\[[0-9a-f:.]+\]$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Source:
    """One endpoint to discover: its name in the draft, its config, and where it came from."""

    word: str
    name: str
    config: EndpointConfig
    #: The configuration's other endpoints (a bastion, the ssh host of a docker endpoint).
    endpoints: dict[str, EndpointConfig]


def parse_source(word: str, settings: Settings | None = None) -> Source:
    """The endpoint a word names; UsageError (one line) if it names none."""
    known = dict(settings.all_endpoints) if settings is not None else {}
    known.setdefault("local", LocalEndpoint(type="local"))
    if word in known:
        return Source(word, word, known[word], known)
    shown = word if len(word) <= 60 else word[:60] + "…"
    if word.startswith("ssh://"):
        parts = urlsplit(word)
        try:
            port = parts.port or 22
        except ValueError:
            raise UsageError(f"{shown}: the port must be a number from 1 to 65535") from None
        host, user = parts.hostname or "", parts.username or ""
        if not _USER.match(user) or not _HOST.match(host) or parts.path not in ("", "/"):
            raise UsageError(f"{shown}: expected ssh://user@host[:port]")
        ssh = SSHEndpoint(type="ssh", host=host, port=port, user=user)
        return Source(word, _free_name(target_name(host), known), ssh, known)
    if word.startswith(("unix:///", "tcp://")):
        parts = urlsplit(word)
        if word.startswith("tcp://") and (not parts.hostname or not _port_ok(word)):
            raise UsageError(f"{shown}: expected tcp://host:port")
        name = "docker" if word.startswith("unix:") else target_name(f"{parts.hostname}-docker")
        config = DockerEndpoint(type="docker", url=word)
        return Source(word, _free_name(name, known), config, known)
    names = ", ".join(sorted(known))
    raise UsageError(
        f"unknown endpoint {shown!r}: name one of the config's ({names}), "
        "or ssh://user@host[:port], a Docker URL (unix:///path, tcp://host:port), or local"
    )


def _port_ok(url: str) -> bool:
    try:
        return urlsplit(url).port is not None
    except ValueError:
        return False


def _free_name(name: str, taken: dict[str, EndpointConfig]) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate = f"{name[:29]}-{n}"
        n += 1
    return candidate
