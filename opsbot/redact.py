"""Secret redaction for everything that leaves the process: chat, documents, logs, the store.

Targets print secrets more often than anyone likes (a crash dump with the DSN, a debug line with
the bot token, an ``env`` in a runbook), and people paste them into the chat. Each sink has one
choke point that passes text through ``Redactor.redact``:

- chat messages, documents and captions: ``Reply.redacted`` (render.py), applied by the verbs'
  dispatch and by every ``Notifier``;
- the store: ``RedactingStore`` (store/redacting.py) wraps the store the application uses, so
  audit entries, alerts and their events, incidents, timelines and silences are redacted
  before they are written;
- logs: ``install_log_redaction`` wraps every root handler's formatter in a
  ``RedactingFormatter`` (the final text, exception and traceback included) and replaces
  ``sys.excepthook`` / ``threading.excepthook``.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import traceback
from collections.abc import Iterable
from types import TracebackType
from typing import Any, TextIO

MASK = "[REDACTED]"
MEMO_SHORTEST = 64  # shorter texts are redacted afresh: hashing them saves nothing
MEMO_SIZE = 256  # texts remembered as already redacted

_SECRET_WORDS = (
    r"SECRET|TOKEN|PASSWORD|PASSWD|PASS|PWD|API_?KEY|PRIVATE_?KEY|ACCESS_?KEY|CREDENTIALS?"
    r"|AUTH|SIGNING_?KEY|DSN|SESSION_?KEY|CLIENT_?SECRET|WEBHOOK_?SECRET|SECRET_?KEY"
)

# (pattern, replacement) pairs; groups keep the harmless part so the reader knows what was hidden.
_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    # PEM private keys, whole block; a block cut short is hidden to the end of the text.
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.S,
        ),
        MASK,
    ),
    # Telegram bot tokens: 123456789:AA... (35 characters after the colon).
    (re.compile(r"(?<!\d)\d{6,12}:[A-Za-z0-9_-]{30,40}(?![A-Za-z0-9_-])"), MASK),
    # AWS access key ids.
    (re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[A-Z0-9]{16}\b"), MASK),
    # JSON Web Tokens: base64url header and payload (both JSON objects, "eyJ…") and a signature.
    (re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"), MASK),
    # GitHub (ghp_, gho_, ghu_, ghs_, ghr_, github_pat_), GitLab (glpat-) and Slack (xoxb-,
    # xoxp-, …) tokens, by their documented prefixes.
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{40,})"), MASK),
    (re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}"), MASK),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), MASK),
    # A bare AWS secret access key: exactly 40 base64 characters mixing upper, lower and digits
    # (a git SHA is lower-case hex, a path has dots or is cut by them).
    (
        re.compile(
            r"(?<![A-Za-z0-9/+=])(?=[A-Za-z0-9/+]{0,39}[A-Z])(?=[A-Za-z0-9/+]{0,39}[a-z])"
            r"(?=[A-Za-z0-9/+]{0,39}[0-9])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])"
        ),
        MASK,
    ),
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

# A fragment of every word in _SECRET_WORDS (none with an "i": under re.IGNORECASE a dotless
# "ı" matches "i", and no folding of the text turns it into one).
_SECRET_HINTS = ("secret", "token", "pass", "pwd", "key", "credent", "auth", "dsn")

# Per pattern: the shortest text it can match, and substrings (lower case) of which one must be
# present for it to match at all. Most text has none, so redaction costs a few ``in`` tests.
_HINTS: list[tuple[int, tuple[str, ...]]] = [
    (30, ("-----begin",)),
    (37, (":",)),
    (20, ("akia", "asia", "agpa", "aida", "aroa")),
    (40, ("eyj",)),
    (30, ("gh",)),
    (26, ("glpat-",)),
    (14, ("xox",)),
    (40, ()),
    (9, ("bearer", "token", "basic")),
    (6, ("://",)),
    (4, _SECRET_HINTS),
    (4, _SECRET_HINTS),
]
assert len(_HINTS) == len(_PATTERNS)
# The patterns whose matches hold no whitespace: for them, ``shortest`` bounds the longest word.
_ONE_WORD = frozenset({1, 2, 3, 4, 5, 6, 7, 9})


class Redactor:
    """Hides known secret shapes and the literal values of opsbot's own secrets."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        # Longest first, so a secret that contains another is hidden whole.
        unique = {s for s in literals if len(s) >= 4}
        self._literals = sorted(unique, key=len, reverse=True)
        # Texts this redactor returned lately. A reply passes several choke points on its way
        # out (the verb's dispatch, the notifier, the store): redaction is idempotent, so a
        # text it produced is returned as it is instead of being scanned again.
        self._clean: dict[str, None] = {}

    def redact(self, text: str) -> str:
        if len(text) < MEMO_SHORTEST:
            return self._redact(text)
        if text in self._clean:
            return text
        text = self._redact(text)
        if len(self._clean) >= MEMO_SIZE:
            self._clean.clear()  # a bounded memo: cheaper to start over than to track age
        self._clean[text] = None
        return text

    def _redact(self, text: str) -> str:
        for literal in self._literals:
            text = text.replace(literal, MASK)
        # Case-folded, so what IGNORECASE patterns match ("ſ" for "s", "K" for "k") shows too.
        lowered = text.lower() if text.isascii() else text.casefold()
        longest: int | None = None  # the longest word, measured when first needed
        for index, ((pattern, replacement), (shortest, hints)) in enumerate(
            zip(_PATTERNS, _HINTS, strict=True)
        ):
            if len(text) < shortest or (hints and not any(h in lowered for h in hints)):
                continue
            if index in _ONE_WORD:
                if longest is None:
                    longest = max(map(len, text.split()), default=0)
                if longest < shortest:
                    continue
            redacted = pattern.sub(replacement, text)
            if redacted is not text:  # words may have changed (a hidden PEM block joins two)
                text, longest = redacted, None
        return text

    def redact_bytes(self, data: bytes) -> bytes:
        return self.redact(data.decode("utf-8", errors="replace")).encode()

    def redact_json(self, value: Any, keep: frozenset[str] = frozenset()) -> Any:
        """Every string inside a JSON value redacted; fields named in ``keep`` left exact."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {k: v if k in keep else self.redact_json(v, keep) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_json(v, keep) for v in value]
        return value


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


class RedactingFormatter(logging.Formatter):
    """Wraps a formatter and redacts its whole output: message, exception text, traceback."""

    def __init__(self, inner: logging.Formatter | None, redactor: Redactor) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor.redact(self.inner.format(record))


def install_log_redaction(redactor: Redactor, stream: TextIO | None = None) -> None:
    """Redact every root handler's output, and uncaught exceptions (main thread and others).

    Call it after the handlers are configured; calling it again re-wraps nothing twice.
    """
    for handler in logging.getLogger().handlers:
        current = handler.formatter
        if isinstance(current, RedactingFormatter):
            current.redactor = redactor
        else:
            handler.setFormatter(RedactingFormatter(current, redactor))

    def excepthook(
        kind: type[BaseException], exc: BaseException, tb: TracebackType | None
    ) -> None:
        text = "".join(traceback.format_exception(kind, exc, tb))
        out = stream or sys.stderr
        out.write(redactor.redact(text))
        out.flush()

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_value is not None:
            excepthook(args.exc_type, args.exc_value, args.exc_traceback)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
