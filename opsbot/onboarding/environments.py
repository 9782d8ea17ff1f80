"""Which other environment (staging, DR, local development) a runbook command is about, if any.

A runbook often shows the same commands against a staging copy, a DR site or a developer's
machine; their URLs, hosts, namespaces and compose files are not production's and must not
become checks or fields of the target. A command is elsewhere when a value it names says so (a
host label ``staging.``/``-dev.``, a namespace or context ``bot-staging``, a compose file
``docker-compose.dev.yml``), or when its section heading or the comment just above it does
(``## Staging``, ``# deploy to staging first``, ``# switch DNS to the DR site``). A text that
names production as well (``## Staging and production``) says nothing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from opsbot.onboarding.markdown import Command
from opsbot.onboarding.sighting import Sighting

#: A label of a host, namespace or file name → the environment it names.
_LABELS = {
    "staging": "staging", "stage": "staging", "stg": "staging", "preprod": "staging",
    "uat": "staging", "qa": "staging", "test": "test", "testing": "test", "sandbox": "test",
    "dev": "local-dev", "develop": "local-dev", "development": "local-dev",
    "local": "local-dev", "dr": "DR",
}  # fmt: skip

_TEXT = (
    ("staging", r"\b(?:staging|pre-?prod(?:uction)?|uat)\b|\bstage (?:environment|server)\b"),
    ("local-dev", r"\blocal(?:ly)?[- ]?dev(?:elopment)?\b|\bdevelopment\b"
                  r"|\bdev (?:server|environment|env|cluster|setup|machine)\b"),
    ("DR", r"\b(?:DR|disaster[- ]recovery) (?:site|cluster|environment|env|region|server|host)"),
    ("test", r"\bsandbox\b|\btest (?:environment|server|cluster)\b"),
)  # fmt: skip
_PRODUCTION = re.compile(r"\bprod(?:uction)?\b", re.IGNORECASE)

#: The fields whose values name where a command runs (not paths, not databases).
_WHERE = ("url", "namespace", "context", "host", "file", "compose_command")
_WHERE_OPTIONS = {"-h", "--host", "-n", "--namespace", "--context", "-f", "-p"}


def environment(sighting: Sighting, command: Command) -> str:
    """``staging``, ``DR``, ``local-dev``, ``test``, or ``""`` for production (the default)."""
    for value in _where(sighting.fields):
        found = _of_value(value)
        if found:
            return found
    for text in (command.comment, re.sub(r"\([^)]*\)", " ", command.heading)):
        found = _of_text(text)
        if found:
            return found
    return ""


def _where(fields: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for key in _WHERE:
        value = fields.get(key)
        if key == "url" and isinstance(value, str):
            found.append(urlsplit(value).hostname or "")
        elif key == "compose_command" and isinstance(value, list):
            found += [v for i, v in enumerate(value) if i and value[i - 1] == "-p"]
        elif key == "file" and isinstance(value, str):
            found.append(value.rsplit("/", 1)[-1])
        elif isinstance(value, str):
            found.append(value)
    argv = fields.get("argv") or []
    found += [v for i, v in enumerate(argv) if i and argv[i - 1] in _WHERE_OPTIONS]
    return found


def _of_value(value: str) -> str:
    labels = re.split(r"[-_.:/]+", value.lower())
    for label in labels:
        if label in _LABELS:
            return _LABELS[label]
    return ""


def _of_text(text: str) -> str:
    if not text or _PRODUCTION.search(text):
        return ""
    for name, pattern in _TEXT:
        if re.search(pattern, text, re.IGNORECASE):
            return name
    return ""
