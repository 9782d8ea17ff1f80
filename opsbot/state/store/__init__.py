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
Documents (``get``/``create``/``put``/``swap``/``delete``/``scan``/``scan_page``): JSON objects
under ``(namespace, key)``, each with a version that grows on every write, and an optional time
to live after which the document is gone. ``scan`` reads a small namespace whole; ``scan_page``
(and ``scan_pages`` over it) a large one a page at a time, so that reading 50,000 alerts holds
one page of them, not all. ``swap`` is compare-and-set on that version: of many
concurrent swaps from the same version, exactly one wins. That is how a request is approved
exactly once.

``update`` is the compare-and-set loop written once: it reads a document, hands it to a pure
function and writes the result back with ``create`` or ``swap``, again from a fresh read when
another writer got there first, up to a bound.

Batches (``commit``/``get_many``): several writes and log appends applied atomically in one
round trip, all or none (each write may carry a condition: absent, or a version, as ``create``
and ``swap`` do, and conditions may stand alone: a document, or a whole namespace as ``scan``
saw it, is unchanged), and several documents read in one. A webhook alert costs one
``commit``: what it was decided from (the silences, the storm) is re-read only when changed.

Logs (``append``/``tail``): per ``(namespace, key)`` an append-only list of JSON objects,
optionally capped to the newest ``keep``; ``tail`` returns the newest first.

Locks (``acquire``/``release``): a named lease with an owner and a time to live, so a replica
that dies does not hold a target forever. ``acquire`` returns None when it got the lock, or the
current holder's owner string when it did not.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

JSONDoc = dict[str, Any]

# What an unreachable store raises: an operational condition to log in one line and ride out,
# not a bug to print a traceback for. ``STORE_UNREACHABLE`` can only come from the store;
# ``STORE_DOWN`` adds OSError, for code where nothing but a store call can raise it.
STORE_UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
STORE_DOWN = (*STORE_UNREACHABLE, OSError)


@dataclass(frozen=True, slots=True)
class Versioned:
    """A document and the version it was read at (pass the version to ``swap``)."""

    value: JSONDoc
    version: int


@dataclass(frozen=True, slots=True)
class Write:
    """A document write of a ``commit``: ``expect`` is ``"absent"`` (as ``create``), ``"any"``
    (as ``put``) or the version the document must still have (as ``swap``, which keeps the
    document's expiry when ``ttl`` is None)."""

    namespace: str
    key: str
    value: JSONDoc
    expect: int | Literal["absent", "any"] = "any"
    ttl: float | None = None


@dataclass(frozen=True, slots=True)
class Append:
    """A log entry of a ``commit`` (as ``append``)."""

    namespace: str
    key: str
    value: JSONDoc
    keep: int | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """A condition of a ``commit`` that writes nothing: the document still has ``version``
    (or, with ``"absent"``, there is none)."""

    namespace: str
    key: str
    version: int | Literal["absent"]


@dataclass(frozen=True, slots=True)
class ExpectScan:
    """A condition of a ``commit`` that writes nothing: the namespace's live documents are
    still exactly ``versions`` (key → version), as a ``scan`` returned them."""

    namespace: str
    versions: Mapping[str, int]


Op = Write | Append | Expect | ExpectScan

#: Documents a ``scan_page`` reads by default.
SCAN_PAGE = 500

#: How often ``update`` reads again after losing a compare-and-set before it gives up.
UPDATE_ATTEMPTS = 1000

#: What ``update`` hands its change: the live document (None when there is none); the change
#: returns the document to write, or None to write nothing.
Change = Callable[[JSONDoc | None], JSONDoc | None]


@dataclass(frozen=True, slots=True)
class Updated:
    """What an ``update`` read and wrote: ``after`` is None when the change wrote nothing."""

    before: JSONDoc | None
    after: JSONDoc | None


def check_ops(ops: Sequence[Op]) -> None:
    """Refuse what no backend could apply: a bad ttl or keep, one document written twice."""
    seen: set[tuple[str, str]] = set()
    for op in ops:
        if isinstance(op, Expect | ExpectScan):
            continue
        if isinstance(op, Append):
            if op.keep is not None and op.keep < 1:
                raise ValueError(f"keep must be at least 1, not {op.keep}")
            continue
        if op.ttl is not None and op.ttl <= 0:
            raise ValueError(f"ttl must be positive, not {op.ttl}")
        if (op.namespace, op.key) in seen:
            raise ValueError(f"{op.namespace}/{op.key} is written twice in one commit")
        seen.add((op.namespace, op.key))


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

    async def update(
        self,
        namespace: str,
        key: str,
        change: Change,
        *,
        ttl: float | Callable[[JSONDoc], float] | None = None,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> Updated | None:
        """Compare-and-set ``change`` onto the document, retried from a fresh read when another
        writer got there first; None when ``attempts`` were all lost.

        ``change`` must be pure (it may run once per attempt) and may raise to refuse. A new
        document is created with ``ttl``; a replaced one keeps its expiry when ``ttl`` is None.
        ``ttl`` may be a function of the document written.
        """
        ...

    async def delete(self, namespace: str, key: str) -> bool: ...

    async def scan(self, namespace: str) -> dict[str, Versioned]:
        """Every live document of a namespace (small namespaces only: pending requests...)."""
        ...

    async def scan_page(
        self, namespace: str, cursor: str | None = None, count: int = SCAN_PAGE
    ) -> tuple[dict[str, Versioned], str | None]:
        """About ``count`` live documents of a namespace from ``cursor`` (None: the start), and
        the cursor of the next page (None: that was the last). A document live throughout a
        walk of pages is returned by one of them (on Redis, a namespace that grows meanwhile
        may return a key twice); one written or deleted meanwhile may or may not be."""
        ...

    def scan_pages(
        self, namespace: str, count: int = SCAN_PAGE
    ) -> AsyncIterator[dict[str, Versioned]]:
        """Every live document of a namespace, a ``scan_page`` at a time."""
        ...

    async def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Versioned]:
        """The live documents among ``keys`` (the others are left out), in one round trip."""
        ...

    async def commit(self, ops: Sequence[Op]) -> list[int] | None:
        """Apply every op, atomically, or none: None when a write's ``expect`` did not hold.

        Returns each op's new version (0 for an ``Append`` or a condition). Conditions are
        checked against the state before the commit, so one document may be written once per
        commit.
        """
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
