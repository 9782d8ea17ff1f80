"""``/deploy TARGET history``: who deployed what, when, from → to, and how it ended.

Per target, an append-only log in the store (``deploys/<target>``, newest first on read, the
newest ``KEEP`` kept), written once by the run that performed the deploy.
"""

from __future__ import annotations

import time
from typing import Any

from opsbot.render import Reply
from opsbot.state.store import Store

NAMESPACE = "deploys"
KEEP = 100
SHOWN = 15


async def record(store: Store, target: str, entry: dict[str, Any]) -> None:
    await store.append(NAMESPACE, target, entry, keep=KEEP)


async def recent(store: Store, target: str, limit: int = SHOWN) -> list[dict[str, Any]]:
    return list(await store.tail(NAMESPACE, target, limit))


def line(entry: dict[str, Any]) -> str:
    """``2026-12-07 23:41 oscar (bob) quizbot:2.0 → quizbot:2.1 ✗ back to 2.0``."""
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(float(entry.get("at") or 0)))
    who = str(entry.get("who") or "?")
    approvers = entry.get("approvers") or []
    if approvers:
        who += f" ({', '.join(str(a) for a in approvers)})"
    mark = "✓" if entry.get("ok") else "✗"
    outcome = str(entry.get("outcome") or "")
    text = f"{when} {who} {entry.get('from')} → {entry.get('to')} {mark} {outcome}".rstrip()
    if entry.get("override"):
        text += f" [override: {str(entry['override'])[:60]}]"
    return text


def render(target: str, entries: list[dict[str, Any]]) -> Reply:
    if not entries:
        return Reply(text=f"🕘 {target}: no deploys recorded yet")
    return Reply(
        text=f"🕘 {target}: the last {len(entries)} deploys, newest first (UTC)",
        block="\n".join(line(e) for e in entries),
    )
