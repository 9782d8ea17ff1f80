"""The store's one redaction choke point: what is written holds no secret.

``Services.build`` wraps the configured backend in a ``RedactingStore``, so audit entries (a
token pasted as a /logs filter, a stranger's text), alerts and their event log (webhook
summaries), incidents with their timelines, and silences are redacted before they reach the
SQLite file or Redis, whichever module writes them. Reads pass through untouched.

Two things are written exactly as given: the namespaces in ``EXACT``, whose documents are
instructions or ciphertext rather than text (an approval request's argv runs as stored;
version history and the backups index name images and files; TOTP secrets are encrypted), and
fields named in ``KEEP``, which are keys that other documents point at (an alert's
fingerprint names its document).

The same strings are written over and over (an alert's status, source and summary in its
document and again in the events log, a replica's name in every lease), so short ones are
redacted once and remembered (``MEMO`` of them at most).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opsbot.redact import Redactor
from opsbot.state.store import SCAN_PAGE, Append, JSONDoc, Op, Store, Versioned, Write
from opsbot.state.store.updating import Updating

EXACT = frozenset({
    "requests", "versions", "backups", "backups-index", "totp",
    # the outbox's documents (a backup sent by opt-in) must arrive byte for byte; texts are
    # redacted before they are queued
    "outbox-files",
    # the objectives' counts: compressed numbers, no text (opsbot/objectives/recording.py)
    "slo-minutes", "slo-days",
})
KEEP = frozenset({"fingerprint"})
MEMO = 4096  # strings remembered with their redaction
MEMO_CHARS = 512  # only strings this short are remembered
_PLAIN = frozenset({int, float, bool, type(None)})  # nothing to redact


class RedactingStore(Updating):
    """A ``Store`` that redacts every string of every document and log entry it writes."""

    def __init__(self, inner: Store, redactor: Redactor) -> None:
        self.inner = inner
        self.redactor = redactor
        self._memo: dict[str, str] = {}

    def _clean(self, namespace: str, value: JSONDoc) -> JSONDoc:
        if namespace in EXACT:
            return value
        cleaned: JSONDoc = self._json(value)
        return cleaned

    def _json(self, value: Any) -> Any:
        """As ``Redactor.redact_json`` with ``KEEP``, remembering short strings."""
        if isinstance(value, str):
            return self._text(value)
        if isinstance(value, dict):
            return {
                k: v if k in KEEP or type(v) in _PLAIN else self._json(v) for k, v in value.items()
            }
        if isinstance(value, list):
            return [v if type(v) in _PLAIN else self._json(v) for v in value]
        return value

    def _text(self, text: str) -> str:
        done = self._memo.get(text)
        if done is None:
            done = self.redactor.redact(text)
            if len(text) <= MEMO_CHARS:
                if len(self._memo) >= MEMO:
                    self._memo.clear()
                self._memo[text] = done
        return done

    async def get(self, namespace: str, key: str) -> Versioned | None:
        return await self.inner.get(namespace, key)

    async def create(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> bool:
        return await self.inner.create(namespace, key, self._clean(namespace, value), ttl=ttl)

    async def put(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> int:
        return await self.inner.put(namespace, key, self._clean(namespace, value), ttl=ttl)

    async def swap(
        self,
        namespace: str,
        key: str,
        expected_version: int,
        value: JSONDoc,
        *,
        ttl: float | None = None,
    ) -> int | None:
        cleaned = self._clean(namespace, value)
        return await self.inner.swap(namespace, key, expected_version, cleaned, ttl=ttl)

    async def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Versioned]:
        return await self.inner.get_many(namespace, keys)

    async def commit(self, ops: Sequence[Op]) -> list[int] | None:
        return await self.inner.commit([self._clean_op(op) for op in ops])

    def _clean_op(self, op: Op) -> Op:
        if isinstance(op, Append):
            return Append(op.namespace, op.key, self._clean(op.namespace, op.value), op.keep)
        if isinstance(op, Write):
            value = self._clean(op.namespace, op.value)
            return Write(op.namespace, op.key, value, op.expect, op.ttl)
        return op  # a condition writes nothing

    async def delete(self, namespace: str, key: str) -> bool:
        return await self.inner.delete(namespace, key)

    async def scan(self, namespace: str) -> dict[str, Versioned]:
        return await self.inner.scan(namespace)

    async def scan_page(
        self, namespace: str, cursor: str | None = None, count: int = SCAN_PAGE
    ) -> tuple[dict[str, Versioned], str | None]:
        return await self.inner.scan_page(namespace, cursor, count)

    async def append(
        self, namespace: str, key: str, value: JSONDoc, *, keep: int | None = None
    ) -> None:
        await self.inner.append(namespace, key, self._clean(namespace, value), keep=keep)

    async def tail(self, namespace: str, key: str, limit: int) -> list[JSONDoc]:
        return await self.inner.tail(namespace, key, limit)

    async def acquire(self, name: str, owner: str, ttl: float) -> str | None:
        return await self.inner.acquire(name, owner, ttl)

    async def release(self, name: str, owner: str) -> bool:
        return await self.inner.release(name, owner)

    async def close(self) -> None:
        await self.inner.close()
