"""Alert records: one document per fingerprint, its short id, the events log, the leases.

See ``opsbot.alerting.engine`` for the whole story. Every ``AlertEvent`` is folded into its
alert document by compare-and-set (``record``); a replica claims an alert's lease before any
send or edit (``claim``) and gives it back with what it did (``settle``).
"""

from __future__ import annotations

import contextlib
import heapq
import os
import secrets
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from opsbot.alerting import silences
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.reach.checks import check_phrase
from opsbot.state import ids
from opsbot.state.store import Append, JSONDoc, Op, Store, Versioned, Write

ALERTS = "alerts"
IDS = "alert-ids"
EVENTS = "alert-events"
STORMS = "alert-storms"

LOG_CHUNK = 200  # events per entry of the alert-events log
LOG_KEEP = 20_000  # entries kept in the alert-events log
FIRING_TTL = 30 * 86400.0  # a firing alert nobody repeats is forgotten after a month
RESOLVED_TTL = 7 * 86400.0
IDS_TTL = 60 * 86400.0
MAX_SWAPS = 1000
WRITTEN_CACHE = 10_000  # fingerprints whose last written version a replica remembers (the
# newest; one it forgot is read back from the store before it is folded)

Status = Literal["firing", "resolved"]


@dataclass(frozen=True, slots=True)
class Alert:
    id: str
    fingerprint: str
    source: str
    target: str | None
    severity: Severity
    summary: str
    status: Status
    first_seen: float
    last_seen: float
    count: int = 1  # firing events of this occurrence
    labels: dict[str, str] = field(default_factory=dict)
    occurrence: int = 1
    resolved_at: float | None = None
    acked_by: str | None = None
    acked_at: float | None = None
    silenced: bool = False
    silence_id: str | None = None  # the silence covering it (shown on its card until it ends)
    silenced_until: float | None = None
    silenced_by: str | None = None
    silence_scope: str | None = None  # alert | target | all (silences.Silence.scope)
    # delivery
    message_id: int | None = None
    chat_id: int | None = None
    thread_id: int | None = None
    posted_at: float | None = None
    digested: bool = False  # announced only in a storm digest: no message of its own
    shown: str | None = None  # the text the message shows now
    shown_state: str | None = None  # the status part of it (a change is edited at once)
    last_edit: float | None = None
    recovery: str | None = None  # pending | sent | skipped
    last_reminder: float | None = None
    id_refreshed: float = 0.0

    def to_doc(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict deep-copies and was a sixth of a storm's cost.
        doc = {name: getattr(self, name) for name in _ALERT_FIELDS}
        doc["labels"] = dict(self.labels)
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Alert:
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in doc.items() if k in known}
        return cls(**{**values, "severity": Severity(doc["severity"])})

    @property
    def firing(self) -> bool:
        return self.status == "firing"

    @property
    def state(self) -> str:
        """What an unthrottled edit is for: status, severity, ack, silence."""
        return (
            f"{self.status}|{self.severity.value}|{self.acked_by}|{self.silenced}"
            f"|{self.silenced_until}|{self.silence_id}"
        )

    @property
    def identity(self) -> str:
        """What makes it this alert and no other, for people: "quizbot · http /health"."""
        who = self.target or self.labels.get("target") or self.source
        check = self.labels.get("check")
        what = (
            (check and check_phrase(check))
            or self.labels.get("alertname")
            or (self.summary.splitlines() or [""])[0][:60]
        )
        return f"{who} · {what}" if what else who

    @property
    def needs_post(self) -> bool:
        return (
            self.firing
            and not self.silenced
            and self.message_id is None
            and not self.digested
        )


_ALERT_FIELDS = tuple(Alert.__dataclass_fields__)

#: Alert ids are typed on phones (``/ack 9PWX3H7T``): many are alive at once, hence 8 chars.
ID_LENGTH = 8


def new_alert_id() -> str:
    return ids.new_id(ID_LENGTH)


def canonical_id(typed: str) -> str:
    return ids.canonical(typed, ID_LENGTH)


def silence_fields(silence: silences.Silence | None) -> dict[str, Any]:
    """The alert's silence fields for ``silence`` (None: not silenced). A resolved alert keeps
    them: its card still shows the silence, which still covers its next firing."""
    if silence is None:
        return {"silenced": False, "silence_id": None, "silenced_until": None,
                "silenced_by": None, "silence_scope": None}  # fmt: skip
    return {"silenced": True, "silence_id": silence.id, "silenced_until": silence.ends,
            "silenced_by": silence.created_by, "silence_scope": silence.scope}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Listing:
    """What /alerts shows: the first ``shown`` alerts in its order, and counts of them all."""

    shown: list[Alert]
    listed: int  # the alerts the list is of (firing ones, or every recorded one)
    firing: int
    critical: int  # of the firing ones
    acked: int
    silenced: int


def _rank(doc: JSONDoc) -> tuple[bool, int, float]:
    """``list``'s order read off a document, highest first: firing, most severe, newest."""
    firing = doc.get("status") == "firing"
    rank = Severity(doc["severity"]).rank if firing else 0
    return (firing, rank, float(doc.get("last_seen") or 0.0))


def may_have_work(doc: JSONDoc) -> bool:
    """Whether a tick may have something to do for this alert (post, edit, recovery line,
    reminder): only alerts with a message, or firing ones without one that are neither
    silenced nor digested; in a storm that leaves out the thousands counted into a digest."""
    if doc.get("message_id") is not None:
        return True
    return doc.get("status") == "firing" and not doc.get("silenced") and not doc.get("digested")


def plural(count: int, word: str) -> str:
    """1 alert, 2 alerts."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


class AlertRecords:
    """The alert documents in the store, shared by every replica."""

    def __init__(self, store: Store, clock: Callable[[], float]) -> None:
        self.store = store
        self.clock = clock
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        # this replica's last write per fingerprint, the WRITTEN_CACHE newest
        # (as Alerts: 10,000 storm alerts hold ~13 MB, as parsed documents ~35 MB)
        self._written: OrderedDict[str, tuple[Alert, int]] = OrderedDict()
        self._forgot = False  # the cache has dropped a fingerprint: a miss may be a known one

    async def record(
        self,
        events: Sequence[AlertEvent],
        now: float,
        in_force: list[silences.Silence],
        in_storm: bool,
        *,
        expect: Sequence[Op] = (),
        fresh: bool = False,
    ) -> dict[str, tuple[Alert | None, Alert]] | None:
        """Fold the events into their alert documents and log them, in one atomic commit.

        Returns (before, after) per fingerprint, or None when the commit failed (someone
        wrote one of the documents, or a condition in ``expect`` no longer held): call again
        with ``fresh``. Unless ``fresh``, each document is folded from this replica's own
        last write of it, or, for one it never wrote, from nothing (a new alert): no read.
        """
        groups: dict[str, list[AlertEvent]] = {}
        for event in events:
            groups.setdefault(event.fingerprint, []).append(event)
        known: dict[str, tuple[Alert, int] | None]
        if fresh:
            known = dict.fromkeys(groups)
            known.update(_alerts(await self.store.get_many(ALERTS, list(groups))))
        else:
            known = {fingerprint: self._written.get(fingerprint) for fingerprint in groups}
            missed = [fingerprint for fingerprint, stored in known.items() if stored is None]
            if missed and self._forgot:  # maybe forgotten, not new: read rather than fail
                known.update(_alerts(await self.store.get_many(ALERTS, missed)))
        ops: list[Op] = list(expect)
        folded: dict[str, tuple[Alert | None, Alert, int]] = {}  # and its write's index
        for fingerprint, evs in groups.items():
            stored = known[fingerprint]
            before = None if stored is None else stored[0]
            if before is None:
                alert_id = new_alert_id()
                ops.append(Write(IDS, alert_id, {"fingerprint": fingerprint},
                                 expect="absent", ttl=IDS_TTL))  # fmt: skip
            else:
                alert_id = before.id
            after = self._fold(before, alert_id, evs, now, in_force, in_storm)
            if now - after.id_refreshed > 7 * 86400:  # keep the short id alive
                ops.append(Write(IDS, alert_id, {"fingerprint": fingerprint}, ttl=IDS_TTL))
                after = replace(after, id_refreshed=now)
            condition: int | Literal["absent"] = "absent" if stored is None else stored[1]
            folded[fingerprint] = (before, after, len(ops))
            ops.append(Write(ALERTS, fingerprint, after.to_doc(), condition, _ttl(after)))
        ids = {fingerprint: after.id for fingerprint, (_, after, _) in folded.items()}
        ops += self._log(events, ids, now)
        versions = await self.store.commit(ops)
        if versions is None:
            for fingerprint in groups:
                self._written.pop(fingerprint, None)
            return None
        for fingerprint, (_, after, index) in folded.items():
            self._remember(fingerprint, (after, versions[index]))
        return {fp: (before, after) for fp, (before, after, _) in folded.items()}

    def _remember(self, fingerprint: str, stored: tuple[Alert, int]) -> None:
        self._written[fingerprint] = stored
        self._written.move_to_end(fingerprint)
        while len(self._written) > WRITTEN_CACHE:
            self._written.popitem(last=False)
            self._forgot = True

    def _fold(
        self,
        alert: Alert | None,
        alert_id: str,
        events: list[AlertEvent],
        now: float,
        in_force: list[silences.Silence],
        in_storm: bool,
    ) -> Alert:
        for event in events:
            alert = self._apply(alert, alert_id, event, now, in_force, in_storm)
        assert alert is not None
        return alert

    @staticmethod
    def _apply(
        alert: Alert | None,
        alert_id: str,
        event: AlertEvent,
        now: float,
        in_force: list[silences.Silence],
        in_storm: bool,
    ) -> Alert:
        silence = silences.matching(in_force, event.target, now, event.fingerprint, event.severity)
        covered = silence_fields(silence)
        started = (
            event.starts_at if event.starts_at is not None and event.starts_at <= now else now
        )
        fields: dict[str, Any] = {
            "source": event.source,
            "target": event.target,
            "severity": event.severity,
            "summary": event.summary[:1000],
            "labels": dict(event.labels),
            "last_seen": now,
        }
        if alert is None or (event.status == "firing" and not alert.firing):
            # a new occurrence: same id, a new message
            base = Alert(
                id=alert_id,
                fingerprint=event.fingerprint,
                first_seen=started,
                status=event.status,
                count=1 if event.status == "firing" else 0,
                occurrence=alert.occurrence + 1 if alert is not None else 1,
                **covered,
                # a critical alert may still get a message in a storm: delivery decides
                digested=in_storm
                and silence is None
                and event.status == "firing"
                and event.severity is not Severity.critical,
                resolved_at=now if event.status == "resolved" else None,
                id_refreshed=alert.id_refreshed if alert is not None else now,
                **fields,
            )
            return base
        if event.status == "firing":
            return replace(alert, count=alert.count + 1, **covered, **fields)
        if alert.firing:
            recovery = "pending" if alert.message_id is not None and not alert.silenced else None
            return replace(
                alert,
                status="resolved",
                resolved_at=now,
                recovery=recovery,
                last_seen=now,
                summary=fields["summary"] or alert.summary,
            )
        return replace(alert, last_seen=now)

    def _log(
        self, events: Sequence[AlertEvent], ids: dict[str, str], now: float
    ) -> list[Op]:
        """The alert-events log entries of one ``record``, LOG_CHUNK events each."""
        entries: list[Op] = []
        for start in range(0, len(events), LOG_CHUNK):
            chunk = [
                {
                    "id": ids.get(e.fingerprint),
                    "fingerprint": e.fingerprint,
                    "status": e.status,
                    "severity": e.severity.value,
                    "target": e.target,
                    "source": e.source,
                    "summary": e.summary[:200],
                }
                for e in events[start : start + LOG_CHUNK]
            ]
            entry = {"at": now, "replica": self.owner, "events": chunk}
            entries.append(Append(EVENTS, "all", entry, keep=LOG_KEEP))
        return entries

    async def update(self, alert_id: str, change: Callable[[Alert], Alert | str]) -> Alert | str:
        """Change an alert by id (compare-and-set); ``change`` may refuse with a message."""
        alert_id = canonical_id(alert_id)
        gone = "This alert is no longer known."
        fingerprint = await self.fingerprint(alert_id)
        if fingerprint is None:
            return gone
        refused: list[str] = []

        def apply(doc: JSONDoc | None) -> JSONDoc | None:
            refused.clear()
            if doc is None or doc.get("id") != alert_id:
                refused.append(gone)
                return None
            result = change(Alert.from_doc(doc))
            if isinstance(result, str):
                refused.append(result)
                return None
            return result.to_doc()

        done = await self.store.update(ALERTS, fingerprint, apply, attempts=MAX_SWAPS)
        if refused:
            return refused[0]
        if done is None or done.after is None:
            return "Too many concurrent changes; try again."
        return Alert.from_doc(done.after)

    async def fingerprint(self, alert_id: str) -> str | None:
        if not alert_id or len(alert_id) > 64:
            return None
        stored = await self.store.get(IDS, canonical_id(alert_id))
        return str(stored.value["fingerprint"]) if stored else None

    async def get(self, alert_id: str) -> Alert | None:
        alert_id = canonical_id(alert_id)
        fingerprint = await self.fingerprint(alert_id)
        if fingerprint is None:
            return None
        stored = await self.store.get(ALERTS, fingerprint)
        if stored is None or stored.value.get("id") != alert_id:
            return None
        return Alert.from_doc(stored.value)

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest entries of the alert-events log (each holds up to LOG_CHUNK events)."""
        return await self.store.tail(EVENTS, "all", limit)

    async def note(self, what: str, alert: Alert, name: str, now: float) -> None:
        entry = {"at": now, "replica": self.owner, what: alert.id, "by": name}
        with contextlib.suppress(Exception):
            await self.store.append(EVENTS, "all", entry, keep=LOG_KEEP)

    async def listing(self, firing_only: bool = True, limit: int = 50) -> Listing:
        """``list``'s first ``limit`` alerts and counts of them all, read a page at a time:
        only the ``limit`` kept so far and one page are held, however many are recorded."""
        kept: list[tuple[tuple[bool, int, float], int, JSONDoc]] = []  # a heap, lowest on top
        listed = firing = critical = acked = silenced = 0
        async for page in self.store.scan_pages(ALERTS):
            for stored in page.values():
                doc = stored.value
                if doc.get("status") == "firing":
                    firing += 1
                    critical += doc.get("severity") == Severity.critical.value
                    acked += bool(doc.get("acked_by"))
                    silenced += bool(doc.get("silenced"))
                elif firing_only:
                    continue
                listed += 1
                entry = (_rank(doc), listed, doc)
                if len(kept) < limit:
                    heapq.heappush(kept, entry)
                elif limit > 0 and entry[0] > kept[0][0]:
                    heapq.heapreplace(kept, entry)
        shown = [Alert.from_doc(doc) for _, _, doc in sorted(kept, reverse=True)]
        return Listing(shown, listed, firing, critical, acked, silenced)

    async def matching(self, keep: Callable[[JSONDoc], bool]) -> list[Alert]:
        """The alerts whose documents ``keep`` keeps, read a page at a time."""
        return [
            Alert.from_doc(stored.value)
            async for page in self.store.scan_pages(ALERTS)
            for stored in page.values()
            if keep(stored.value)
        ]

    async def list(self, firing_only: bool = True, limit: int = 50) -> list[Alert]:
        """Firing alerts first (most severe, newest), then the others, newest first."""
        return (await self.listing(firing_only, limit)).shown


def _alerts(read: dict[str, Versioned]) -> dict[str, tuple[Alert, int] | None]:
    return {key: (Alert.from_doc(doc.value), doc.version) for key, doc in read.items()}


def _ttl(alert: Alert) -> float:
    return FIRING_TTL if alert.firing else RESOLVED_TTL


def count_events(entries: Iterable[dict[str, Any]]) -> int:
    """How many events a slice of the alert-events log holds."""
    return sum(len(e.get("events", ())) for e in entries)
