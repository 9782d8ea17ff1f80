"""Secret redaction for everything that leaves the process: chat messages, documents, logs.

Targets print secrets more often than anyone likes (a crash dump with the DSN, a debug line with
the bot token, an ``env`` in a runbook). Every piece of text opsbot sends passes through
``Redactor.redact`` first, and the logging filter applies it to log records too.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[REDACTED]"

_SECRET_WORDS = (
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASS|PWD|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?"
    r"|AUTH|SIGNING_?KEY|DSN|SESSION_?KEY|CLIENT_?SECRET|WEBHOOK_?SECRET|SECRET_?KEY"
)

# (pattern, replacement) pairs; groups keep the harmless part so the reader knows what was hidden.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys, whole block.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----",
            re.S,
        ),
        MASK,
    ),
    # Telegram bot tokens: 123456789:AA... (35 characters after the colon).
    (re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,40}(?![A-Za-z0-9_-])"), MASK),
    # AWS access key ids.
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b"), MASK),
    # Authorization headers and bearer tokens.
    (re.compile(r"(?i)\b(bearer|token|basic)(\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1\2{MASK}"),
    # user:password@ in URLs and DSNs (postgres://, redis://, amqp://, https://...).
    (re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^:/\s@]*:)([^@\s/]+)(@)"), rf"\1{MASK}\3"),
    # .env style KEY=value / KEY: value lines whose (upper-case, as env vars are) key names a
    # secret: STRIPE_SECRET_KEY=..., DATABASE_PASSWORD: ...
    (
        re.compile(
            rf"(?m)^(\s*(?:export\s+)?[A-Z0-9_]*(?:{_SECRET_WORDS})[A-Z0-9_]*\s*[=:]\s*)(\S.*)$"
        ),
        rf"\1{MASK}",
    ),
    # key=value pairs inside a line whose key ENDS with a secret word: password=...,
    # api_key: ..., "secret": "..." (JSON). Ending, so "authbot: 330 critical" is left alone.
    (
        re.compile(
            rf"(?i)(\"?\b[a-z0-9_]*(?:{_SECRET_WORDS})\"?\s*[=:]\s*\"?)"
            r"([^\s\"',;&]{3,})"
        ),
        rf"\1{MASK}",
    ),
]


class Redactor:
    """Hides known secret shapes and the literal values of opsbot's own secrets."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is hidden whole.
        unique = {s for s in literals if len(s) >= 4}
        self._literals = sorted(unique, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for literal in self._literals:
            text = text.replace(literal, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        return self.redact(data.decode("utf-8", errors="replace")).encode()


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's final message (args included)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self._redactor.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
