"""The audit trail: who asked for what, where, and what came of it, as JSON lines.

Every command, refusal and result is appended. Entries hold argv and digests of output, never
the output itself, so the trail holds no secrets a target printed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("opsbot.audit")


def digest(text: str) -> str:
    """A short fingerprint of output, to match an audit entry to what was shown."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Audit:
    def __init__(self, path: Path) -> None:
        self.path = path

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        entry = {"ts": round(time.time(), 3), "event": event, **fields}
        line = json.dumps(entry, default=str, ensure_ascii=False)
        log.debug("%s", line)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")
        return entry

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line]
