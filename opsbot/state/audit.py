"""The audit trail: who asked for what, where, and what came of it.

Every command, refusal, request, approval, denial, execution and result is appended to the
store. A person's act is one entry with who, what and its arguments: a typed command is a
``command`` entry (its words, redacted), a button tap that changes state a ``tap`` entry
(``Audit.tap``, name/value arguments); requests, decisions and executions follow as their own
entries. Everything goes to the store (so every replica writes to one trail), globally and
per target. Entries hold argv, exit status, durations and digests of output, never the
output itself: the trail holds no secret a target printed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opsbot.state.store import Store

log = logging.getLogger("opsbot.audit")

NAMESPACE = "audit"
ALL = "*"
KEEP_ALL = 100_000
KEEP_PER_TARGET = 5_000
#: Seconds the entries held by ``after_reply`` wait before they are written: by then the reply
#: has left, and its delivery (the outbox's reads and claims) did not queue behind them.
AFTER_REPLY = 0.05
ARG_CHARS = 120  # an argument's value is cut to this many characters


def digest(text: str) -> str:
    """A short fingerprint of output, to match an audit entry to what was shown."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def arguments(args: Mapping[str, object] | None) -> dict[str, str]:
    """An entry's arguments as short strings (each value cut to ``ARG_CHARS``)."""
    return {str(k)[:32]: str(v)[:ARG_CHARS] for k, v in (args or {}).items() if v is not None}


def args_text(args: object) -> str:
    """An entry's arguments as /audit shows them: a command's words, or ``name=value``."""
    if isinstance(args, dict):
        return " ".join(f"{k}={v}" for k, v in args.items())
    if isinstance(args, list):
        return " ".join(str(a) for a in args)
    return str(args or "")


Listener = Callable[[dict[str, Any]], Awaitable[None]]

# Entries held while a reply is on its way (see Audit.after_reply); per task, so per update.
_held: ContextVar[list[tuple[str, dict[str, Any]]] | None] = ContextVar(
    "opsbot_audit_held", default=None
)


class Audit:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[Listener] = []  # e.g. incident timelines follow the trail
        self._pending: set[asyncio.Task[None]] = set()
        self._last: asyncio.Task[None] | None = None

    async def record(self, event: str, **fields: Any) -> dict[str, Any]:
        raw = {"ts": round(time.time(), 3), "event": event, **fields}
        entry: dict[str, Any] = json.loads(json.dumps(raw, default=str))
        log.debug("%s", json.dumps(entry, ensure_ascii=False))
        await self.store.append(NAMESPACE, ALL, entry, keep=KEEP_ALL)
        target = fields.get("target")
        if isinstance(target, str):
            await self.store.append(NAMESPACE, target, entry, keep=KEEP_PER_TARGET)
        for listener in self.listeners:
            await listener(entry)
        return entry

    async def tap(
        self,
        what: str,
        who: str,
        *,
        user: int | None = None,
        chat: int | None = None,
        target: str | None = None,
        args: Mapping[str, object] | None = None,
    ) -> dict[str, Any]:
        """One entry for a button tap that changes state: who, what and its arguments.

        ``args`` are short name/value pairs (``{"alert": "A7", "for": "1h"}``); the store
        redacts them on write (``RedactingStore``) like every other field.
        """
        return await self.record(
            "tap", who=who, user=user, chat=chat, target=target, verb=what,
            args=arguments(args),
        )  # fmt: skip

    def record_soon(self, event: str, **fields: Any) -> None:
        """Record in the background, in call order, so a reply never waits for the trail.

        The entry keeps the time of this call; a failure is logged. Reads wait for it.
        """
        fields.setdefault("ts", round(time.time(), 3))
        held = _held.get()
        if held is not None:
            held.append((event, fields))
            return
        self._schedule(event, fields, 0.0)

    def _schedule(self, event: str, fields: dict[str, Any], delay: float) -> None:
        task = asyncio.create_task(self._record_after(self._last, event, fields, delay))
        self._last = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    @contextmanager
    def after_reply(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """Hold this task's ``record_soon`` entries until the block (the reply) is done, then
        write them ``AFTER_REPLY`` seconds later (``flush`` still waits for them). The block
        gets the held entries: cleared, they are not written."""
        held: list[tuple[str, dict[str, Any]]] = []
        token = _held.set(held)
        try:
            yield held
        finally:
            _held.reset(token)
            for event, fields in held:
                self._schedule(event, fields, AFTER_REPLY)

    async def _record_after(
        self,
        previous: asyncio.Task[None] | None,
        event: str,
        fields: dict[str, Any],
        delay: float,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)
        if previous is not None:
            await asyncio.wait([previous])
        try:
            await self.record(event, **fields)
        except Exception:
            log.exception("audit: a %s entry was not recorded", event)

    async def flush(self) -> None:
        """Wait until every ``record_soon`` entry is written (or failed)."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    async def entries(self, target: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first."""
        await self.flush()
        return await self.store.tail(NAMESPACE, target or ALL, limit)

    async def export(self, target: str | None = None) -> str:
        """The trail as JSON lines, oldest first."""
        entries = await self.entries(target, KEEP_ALL)
        return "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in reversed(entries))
