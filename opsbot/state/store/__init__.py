"""The state store: one small interface, two backends, one contract suite.

Everything opsbot must remember across restarts and share between replicas goes through it:
approval requests, per-target locks, target version history, the backups index, the audit
trail, and (later) alerts, silences and incidents. The interface is deliberately generic, a
few primitives that both backends can make atomic; the typed meaning lives in the modules
that use it (``approvals.py``, ``audit.py``, ...).

* ``SQLiteStore`` (embedded default): one file under the data dir, for a single replica.
* ``RedisStore``: several replicas sharing one Redis; atomic claims and leased locks.

Primitives
----------
Documents (``get``/``create``/``put``/``swap``/``delete``/``scan``): JSON objects under
``(namespace, key)``, each with a version that grows on every write, and an optional time to
live after which the document is gone. ``swap`` is compare-and-set on that version: of many
concurrent swaps from the same version, exactly one wins. That is how a request is approved
exactly once.

Logs (``append``/``tail``): per ``(namespace, key)`` an append-only list of JSON objects,
optionally capped to the newest ``keep``; ``tail`` returns the newest first.

Locks (``acquire``/``release``): a named lease with an owner and a time to live, so a replica
that dies does not hold a target forever. ``acquire`` returns None when it got the lock, or the
current holder's owner string when it did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

JSONDoc = dict[str, Any]

# What an unreachable store raises: an operational condition to log in one line and ride out,
# not a bug to print a traceback for (redis-py's ConnectionError/TimeoutError, and OSError).
STORE_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Versioned:
    """A document and the version it was read at (pass the version to ``swap``)."""

    value: JSONDoc
    version: int


class Store(Protocol):
    async def get(self, namespace: str, key: str) -> Versioned | None: ...

    async def create(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> bool:
        """Store only if absent (or expired); True when this call created it."""
        ...

    async def put(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> int:
        """Store unconditionally; returns the new version."""
        ...

    async def swap(
        self,
        namespace: str,
        key: str,
        expected_version: int,
        value: JSONDoc,
        *,
        ttl: float | None = None,
    ) -> int | None:
        """Replace only if the stored version is still ``expected_version``.

        Returns the new version, or None when another writer got there first (or the
        document is gone). ``ttl=None`` keeps the document's current expiry.
        """
        ...

    async def delete(self, namespace: str, key: str) -> bool: ...

    async def scan(self, namespace: str) -> dict[str, Versioned]:
        """Every live document of a namespace (small namespaces only: pending requests...)."""
        ...

    async def append(
        self, namespace: str, key: str, value: JSONDoc, *, keep: int | None = None
    ) -> None: ...

    async def tail(self, namespace: str, key: str, limit: int) -> list[JSONDoc]:
        """The newest ``limit`` entries, newest first."""
        ...

    async def acquire(self, name: str, owner: str, ttl: float) -> str | None:
        """Take the lease; None on success, else the current holder's owner string.

        The same owner acquiring again renews its lease.
        """
        ...

    async def release(self, name: str, owner: str) -> bool:
        """Give the lease back, only if ``owner`` still holds it."""
        ...

    async def close(self) -> None: ...
