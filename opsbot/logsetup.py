"""Logging to stderr, as text for people or JSON lines for log shippers; always redacted.

Libraries log at WARNING unless opsbot runs at DEBUG: APScheduler would otherwise write two
INFO lines per job run (every 3 s), asyncssh one per channel. httpx stays at WARNING even at
DEBUG, because Bot API URLs contain the token.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Literal

from opsbot.config import Settings
from opsbot.redact import Redactor, install_log_redaction

LogFormat = Literal["text", "json"]
CHATTY = ("apscheduler", "asyncssh", "telegram.ext", "aiohttp.access", "docker", "urllib3")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (ISO 8601 UTC), level, logger, message[, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def setup_logging(settings: Settings, fmt: LogFormat = "text") -> None:
    """Log to stderr; every line (tracebacks included) passes through the redactor."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    # Messages, exception text and tracebacks alike; uncaught exceptions too (sys.excepthook).
    install_log_redaction(Redactor(settings.secrets()))
    libraries = logging.DEBUG if settings.log_level == "DEBUG" else logging.WARNING
    for name in CHATTY:
        logging.getLogger(name).setLevel(libraries)
    logging.getLogger("httpx").setLevel(logging.WARNING)
