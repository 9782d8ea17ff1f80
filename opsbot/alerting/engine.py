"""Alerts: dedup by fingerprint, in-place counters, a per-chat budget, storm digests.

Every ``AlertEvent`` is recorded, whatever happens to delivery:

* ``alerts/{fingerprint}``: the alert document (``Alert``): status, counts, who acked, and the
  delivery state of its message. A fingerprint that fires again after it resolved starts a
  new *occurrence* in the same document (same id, a new message).
* ``alert-ids/{id}``: the short opaque id (8 url-safe characters) → the fingerprint. Buttons
  carry only ``al:ID`` (logs), ``ar:ID`` (restart), ``as:ID`` (silence 1h), ``ak:ID`` (ack).
* ``alert-events/all``: an append-only log; each entry holds up to ``LOG_CHUNK`` events of one
  ``ingest`` call (one entry per event would cost a write per event, too slow in a storm).

Delivery
--------
A new firing alert posts one message; repeats edit it in place (``×37 since 12:03``), at most
once per ``EDIT_INTERVAL`` seconds per alert — ``tick`` flushes what was held back, so the
final count is always shown. A change of status (resolved, acked, silenced, a new severity) is
edited at once, within the budget; only counters wait. A resolve also posts a short
recovery line, except during a storm. Unacknowledged critical alerts are reminded every
``reminder_interval``. Silenced alerts are recorded with ``silenced=true`` and not posted.

Replicas: before any send or edit, a replica claims the alert by a compare-and-set of a short
lease on its document (``lease``/``lease_until``); the loser does nothing. A replica that dies
between claim and send leaves a lease that expires after ``LEASE`` seconds, and ``tick`` on
any replica retries. (A replica that dies after Telegram accepted a send but before it
recorded the message id can cause one duplicate post: there is no two-phase commit with
Telegram.)

The budget (one rule)
---------------------
Every Bot API call the engine makes in a chat — each sendMessage (alert, recovery line,
reminder, digest, silence-ended notice) *and each editMessageText* — takes one slot of that
chat's budget: at most ``alerts.max_messages_per_minute`` slots in any rolling 60 s. Telegram
counts only sends against its 20/min group limit; counting edits too keeps the engine well
under it whatever mix it sends. The slots are shared by replicas through a small document per
chat (``alert-budget/{chat}``: the timestamps of the last minute's calls, updated by
compare-and-set) and a slot is taken *before* the call. Within the budget:

* the last ``reserve = min(2, max - 1)`` slots are kept for the storm digest and silence
  notices, so a storm is announced at once;
* counter-only edits (``×37``) take a slot only while at least half the budget is free, so
  they never crowd out new alerts;
* a 429 from Telegram (any exception with ``retry_after``) pauses the chat's budget for that
  long.

A call that gets no slot is not made: an edit stays pending for ``tick``, a reminder waits,
a recovery line is dropped (the message itself still turns resolved), and a new alert
switches the chat to STORM mode.

Storms
------
In a storm, new alerts get no message of their own (``digested=true``); instead one digest
message per chat (``alert-storms/{chat}``) is posted, then edited at most every
``digest_interval`` seconds, with the counts per target and severity since the storm began.
Every alert is still recorded, listable (``/alerts``) and ackable (``/ack ID``); edits of
messages posted before the storm go on within the budget. The storm ends at the first digest
interval in which no more new alerts arrived than the budget allows for that long
(``(max - reserve) × interval / 60``); the digest is edited one last time to say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import os
import secrets
import socket
import time
import warnings
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal, TypeVar

from opsbot.alerting import silences
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Person, Settings
from opsbot.metrics import Metrics
from opsbot.notify import Notifier
from opsbot.render import Button, Reply
from opsbot.state.budget import WINDOW, ChatBudget
from opsbot.state.store import Store, Versioned

log = logging.getLogger(__name__)

ALERTS = "alerts"
IDS = "alert-ids"
EVENTS = "alert-events"
STORMS = "alert-storms"

EDIT_INTERVAL = 10.0  # seconds between counter edits of one alert's message
LEASE = 60.0  # a claim to post or edit; longer than any Bot API call should take
LOG_CHUNK = 200  # events per entry of the alert-events log
LOG_KEEP = 20_000  # entries kept in the alert-events log
FIRING_TTL = 30 * 86400.0  # a firing alert nobody repeats is forgotten after a month
RESOLVED_TTL = 7 * 86400.0
IDS_TTL = 60 * 86400.0
MAX_FAILURES = 3  # sends or edits of one alert that failed before giving up on it
MAX_SWAPS = 1000
CONCURRENCY = 16  # alert documents recorded at once by one ingest
WRITTEN_CACHE = 50_000  # fingerprints whose last written version a replica remembers

Status = Literal["firing", "resolved"]
T = TypeVar("T")


# --------------------------------------------------------------------------- the alert


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
    silence_id: str | None = None  # the target silence, or None for a mute of this alert
    silenced_until: float | None = None
    # delivery
    message_id: int | None = None
    chat_id: int | None = None
    thread_id: int | None = None
    posted_at: float | None = None
    digested: bool = False  # announced only in a storm digest: no message of its own
    shown: str | None = None  # the text the message shows now
    shown_state: str | None = None  # the status part of it (a change is edited at once)
    last_edit: float | None = None
    failures: int = 0
    recovery: str | None = None  # pending | sent | skipped
    last_reminder: float | None = None
    lease: str | None = None
    lease_until: float = 0.0
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
            f"|{self.silenced_until}"
        )

    def leased(self, now: float) -> bool:
        return self.lease is not None and now < self.lease_until

    @property
    def needs_post(self) -> bool:
        return (
            self.firing
            and not self.silenced
            and self.message_id is None
            and not self.digested
            and self.failures < MAX_FAILURES
        )


_ALERT_FIELDS = tuple(Alert.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class Storm:
    """The storm state of one chat."""

    started: float
    window_start: float
    window_new: int = 0  # new alerts that wanted a message in the current window
    total: int = 0  # firing events since the storm began
    new: int = 0  # new alerts since the storm began
    resolved: int = 0
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # target → severity → n
    message_id: int | None = None
    last_digest: float | None = None
    shown_total: int = -1
    ended: float | None = None
    final_shown: bool = False
    lease: str | None = None
    lease_until: float = 0.0

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Storm:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def active(self) -> bool:
        return self.ended is None


# --------------------------------------------------------------------------- rendering


def hhmm(ts: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(ts))


def span(seconds: float) -> str:
    """4 min, 45 s, 2h 05m, 3 d."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        minutes = round(seconds / 60)
        return f"{minutes // 60}h {minutes % 60:02d}m"
    return f"{round(seconds / 86400)} d"


def _since(alert: Alert) -> str:
    if alert.last_seen - alert.first_seen > 20 * 3600:
        return time.strftime("%b %d %H:%M UTC", time.gmtime(alert.first_seen))
    return hhmm(alert.first_seen)


def alert_text(alert: Alert) -> str:
    """The alert's message; depends only on the document, so replicas render alike."""
    sev = alert.severity
    who = (alert.target or alert.source)[:64]
    summary = alert.summary[:600] or "(no summary)"
    if alert.firing:
        lines = [f"{sev.icon} {sev.value.upper()} · {who}", summary]
        seen = f"since {_since(alert)}"
        if alert.count > 1:
            seen = f"×{alert.count} {seen} · last {hhmm(alert.last_seen)}"
    else:
        lines = [f"✅ RESOLVED · {who} (was {sev.icon} {sev.value})", summary]
        took = span((alert.resolved_at or alert.last_seen) - alert.first_seen)
        seen = f"✅ resolved after {took} · ×{alert.count} since {_since(alert)}"
    lines.append(f"{seen} · {alert.source} · id {alert.id}")
    if alert.acked_by:
        lines.append(f"👀 acked by {alert.acked_by} at {hhmm(alert.acked_at or 0)}")
    if alert.silenced and alert.firing:
        until = f" until {hhmm(alert.silenced_until)}" if alert.silenced_until else ""
        lines.append(f"🔕 silenced{until}")
    return "\n".join(lines)


def alert_reply(alert: Alert, settings: Settings) -> Reply:
    buttons: list[Button] = []
    if alert.firing:
        if alert.target is not None and alert.target in settings.targets:
            buttons += [
                Button("📜 Logs", f"al:{alert.id}"),
                Button("🔄 Restart", f"ar:{alert.id}"),
            ]
        if not alert.silenced:
            buttons.append(Button("🔕 Silence 1h", f"as:{alert.id}"))
        if not alert.acked_by:
            buttons.append(Button("👀 Ack", f"ak:{alert.id}"))
        buttons.append(Button("🚨 Declare incident", f"ai:{alert.id}"))
    return Reply(text=alert_text(alert), buttons=tuple(buttons))


def storm_text(storm: Storm, now: float, top: int = 12) -> str:
    end = storm.ended if storm.ended is not None else now
    head = "🌤 alert storm over" if storm.ended is not None else "🌩 alert storm"
    lines = [
        f"{head}: {storm.total:,} alerts ({storm.new:,} new) in {span(end - storm.started)}"
        f" since {hhmm(storm.started)}"
        + (f", {storm.resolved:,} resolved" if storm.resolved else "")
    ]
    ranked = sorted(storm.counts.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    order = [s.value for s in sorted(Severity, key=lambda s: -s.rank)]
    for target, by_severity in ranked[:top]:
        parts = [f"{by_severity[s]:,} {s}" for s in order if by_severity.get(s)]
        lines.append(f"{target}: " + ", ".join(parts))
    if len(ranked) > top:
        rest = sum(sum(v.values()) for _, v in ranked[top:])
        lines.append(f"… {len(ranked) - top} more targets: {rest:,} alerts")
    lines.append("/alerts to list · /ack ID")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the engine


class AlertEngine:
    def __init__(
        self,
        store: Store,
        settings: Settings,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.notifier = notifier
        self.clock = clock
        self.metrics = metrics
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._leases = itertools.count(1)
        self._written: dict[str, Versioned] = {}  # this replica's last write per fingerprint
        config = settings.alerts
        self.budget = ChatBudget(store, config.max_messages_per_minute, clock)

    # ----------------------------------------------------------------------- where

    @property
    def chat_id(self) -> int | None:
        telegram = self.settings.telegram
        return self.settings.alerts.chat_id or telegram.incident_chat_id or telegram.ops_chat_id

    @property
    def thread_id(self) -> int | None:
        if self.settings.alerts.chat_id is not None:
            return self.settings.alerts.thread_id
        if self.settings.telegram.incident_chat_id is not None:
            return self.settings.alerts.thread_id or self.settings.telegram.incident_thread_id
        return self.settings.alerts.thread_id

    # ----------------------------------------------------------------------- ingest

    async def ingest(self, events: Sequence[AlertEvent]) -> None:
        """Record every event, then deliver what changed (see the module docstring)."""
        if not events:
            return
        now = self.clock()
        chat = self.chat_id
        in_force = await silences.active(self.store, now)
        storm = await self._storm(chat) if chat is not None else None
        in_storm = storm is not None and storm.active
        groups: dict[str, list[AlertEvent]] = {}
        for event in events:
            groups.setdefault(event.fingerprint, []).append(event)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def record(fingerprint: str, evs: list[AlertEvent]) -> tuple[Alert | None, Alert]:
            async with gate:
                return await self._record(fingerprint, evs, now, in_force, in_storm)

        recorded = await asyncio.gather(*(record(fp, evs) for fp, evs in groups.items()))
        ids = {after.fingerprint: after.id for _, after in recorded}
        await self._log(events, ids, now)
        if chat is None:
            return
        new_digested = sum(
            1
            for before, after in recorded
            if after.digested and (before is None or before.occurrence != after.occurrence)
        )
        posts = [after for _, after in recorded if after.needs_post]
        digested = await self._deliver_new(chat, posts, in_storm)
        in_storm = in_storm or digested is not None
        for _, after in recorded:
            if after.message_id is not None:
                await self._edit(after, urgent_only=False)
            if after.recovery == "pending":
                await self._recover(after, in_storm)
        if in_storm:
            counted = [e for e in events if silences.matching(in_force, e.target, now) is None]
            await self._tally(chat, counted, new_digested + (digested or 0))
            await self._digest(chat)

    async def _record(
        self,
        fingerprint: str,
        events: list[AlertEvent],
        now: float,
        in_force: list[silences.Silence],
        in_storm: bool,
    ) -> tuple[Alert | None, Alert]:
        """Fold the events into the alert document (compare-and-set); (before, after).

        The first attempt swaps against this replica's own last write, when it remembers one,
        saving a read per fingerprint; if anyone wrote since, the swap fails and it reads.
        """
        stored = self._written.pop(fingerprint, None)
        for _ in range(MAX_SWAPS):
            if stored is None:
                stored = await self.store.get(ALERTS, fingerprint)
            if stored is None:
                new_id = await self._new_id(fingerprint, now)
                after = self._fold(None, new_id, events, now, in_force, in_storm)
                after = replace(after, id_refreshed=now)
                if await self.store.create(ALERTS, fingerprint, after.to_doc(), ttl=_ttl(after)):
                    return None, after
                await self.store.delete(IDS, new_id)
                continue
            before = Alert.from_doc(stored.value)
            after = self._fold(before, before.id, events, now, in_force, in_storm)
            if now - after.id_refreshed > 7 * 86400:
                await self.store.put(IDS, after.id, {"fingerprint": fingerprint}, ttl=IDS_TTL)
                after = replace(after, id_refreshed=now)
            doc = after.to_doc()
            version = await self.store.swap(
                ALERTS, fingerprint, stored.version, doc, ttl=_ttl(after)
            )
            if version is not None:
                self._remember(fingerprint, Versioned(doc, version))
                return before, after
            stored = None
        raise RuntimeError(f"alert {fingerprint}: too many concurrent writers")

    def _remember(self, fingerprint: str, stored: Versioned) -> None:
        if len(self._written) >= WRITTEN_CACHE:
            self._written.clear()
        self._written[fingerprint] = stored

    async def _new_id(self, fingerprint: str, now: float) -> str:
        while True:
            alert_id = secrets.token_urlsafe(6)
            if await self.store.create(IDS, alert_id, {"fingerprint": fingerprint}, ttl=IDS_TTL):
                return alert_id

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
        silence = silences.matching(in_force, event.target, now)
        if silence is not None:
            silenced, silence_id, until = True, silence.id, silence.ends
        elif (
            alert is not None
            and alert.silence_id is None
            and alert.silenced_until is not None
            and now < alert.silenced_until
        ):  # this alert alone was muted from its Silence button
            silenced, silence_id, until = True, None, alert.silenced_until
        else:
            silenced, silence_id, until = False, None, None
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
                silenced=silenced,
                silence_id=silence_id,
                silenced_until=until,
                digested=in_storm and not silenced and event.status == "firing",
                resolved_at=now if event.status == "resolved" else None,
                lease=alert.lease if alert is not None else None,
                lease_until=alert.lease_until if alert is not None else 0.0,
                id_refreshed=alert.id_refreshed if alert is not None else now,
                **fields,
            )
            return base
        if event.status == "firing":
            return replace(
                alert,
                count=alert.count + 1,
                silenced=silenced,
                silence_id=silence_id,
                silenced_until=until,
                **fields,
            )
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

    async def _log(self, events: Sequence[AlertEvent], ids: dict[str, str], now: float) -> None:
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
            await self.store.append(EVENTS, "all", entry, keep=LOG_KEEP)

    # ----------------------------------------------------------------------- leases

    async def _claim(self, fingerprint: str, wanted: Callable[[Alert], bool]) -> Alert | None:
        """Take the alert's lease if ``wanted`` holds and nobody holds it; the claimed alert."""
        for _ in range(MAX_SWAPS):
            now = self.clock()
            stored = await self.store.get(ALERTS, fingerprint)
            if stored is None:
                return None
            alert = Alert.from_doc(stored.value)
            if alert.leased(now) or not wanted(alert):
                return None
            token = f"{self.owner}/{next(self._leases)}"
            claimed = replace(alert, lease=token, lease_until=now + LEASE)
            if await self.store.swap(ALERTS, fingerprint, stored.version, claimed.to_doc()):
                return claimed
        return None

    async def _settle(self, claimed: Alert, change: Callable[[Alert], Alert]) -> Alert | None:
        """Record what the claim did (only on the same occurrence) and give the lease back."""
        for _ in range(MAX_SWAPS):
            stored = await self.store.get(ALERTS, claimed.fingerprint)
            if stored is None:
                return None
            alert = Alert.from_doc(stored.value)
            if alert.occurrence == claimed.occurrence:
                alert = change(alert)
            if alert.lease == claimed.lease:
                alert = replace(alert, lease=None, lease_until=0.0)
            if await self.store.swap(ALERTS, claimed.fingerprint, stored.version, alert.to_doc()):
                return alert
        return None

    async def _update(self, alert_id: str, change: Callable[[Alert], Alert | str]) -> Alert | str:
        """Change an alert by id (compare-and-set); ``change`` may refuse with a message."""
        for _ in range(MAX_SWAPS):
            fingerprint = await self._fingerprint(alert_id)
            stored = await self.store.get(ALERTS, fingerprint) if fingerprint else None
            if fingerprint is None or stored is None or stored.value.get("id") != alert_id:
                return "This alert is no longer known."
            result = change(Alert.from_doc(stored.value))
            if isinstance(result, str):
                return result
            if await self.store.swap(ALERTS, fingerprint, stored.version, result.to_doc()):
                return result
        return "Too many concurrent changes; try again."

    async def _call(self, chat: int, what: str, call: Awaitable[T]) -> T | None:
        """Make one Bot API call; a failure is logged (and a 429 pauses the chat)."""
        try:
            return await call
        except Exception as exc:
            with warnings.catch_warnings():  # PTB deprecates reading it as an int
                warnings.simplefilter("ignore")
                retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, timedelta):
                retry_after = retry_after.total_seconds()
            if isinstance(retry_after, int | float):
                await self.budget.pause(chat, float(retry_after))
            log.warning("alerts: %s in chat %s failed: %s", what, chat, exc)
            return None

    # ----------------------------------------------------------------------- delivery

    async def _deliver_new(self, chat: int, posts: list[Alert], in_storm: bool) -> int | None:
        """Post new alerts, most severe first. Once the budget says no, the storm begins and
        the rest are digested: returns how many were, or None when none was."""
        digested: int | None = None
        for alert in sorted(posts, key=lambda a: -a.severity.rank):
            if in_storm or digested is not None:
                if await self._mark_digested(alert):
                    digested = (digested or 0) + 1
                continue
            if await self._post(chat, alert) == "no-budget":
                await self._begin_storm(chat)
                digested = 1
        return digested

    async def _mark_digested(self, alert: Alert) -> bool:
        """In a storm a new alert gets no message: one compare-and-set, no lease needed."""
        for _ in range(MAX_SWAPS):
            stored = await self.store.get(ALERTS, alert.fingerprint)
            if stored is None:
                return False
            current = Alert.from_doc(stored.value)
            if current.leased(self.clock()) or not current.needs_post:
                return False
            marked = replace(current, digested=True)
            if await self.store.swap(ALERTS, alert.fingerprint, stored.version, marked.to_doc()):
                self._count_suppressed("storm")
                return True
        return False

    def _count_suppressed(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.alerts_suppressed_total.labels(reason=reason).inc()

    async def _post(self, chat: int, alert: Alert) -> str:
        claimed = await self._claim(alert.fingerprint, lambda a: a.needs_post)
        if claimed is None:
            return "skipped"
        if not await self.budget.take(chat, "alert"):
            await self._settle(claimed, lambda a: replace(a, digested=True))
            self._count_suppressed("storm")
            return "no-budget"
        reply = alert_reply(claimed, self.settings)
        thread = self.thread_id
        sent = await self._call(chat, "alert", self.notifier.send(chat, reply, thread_id=thread))
        now = self.clock()
        if sent is None:
            await self._settle(claimed, lambda a: replace(a, failures=a.failures + 1))
            return "failed"
        await self._settle(
            claimed,
            lambda a: replace(
                a,
                message_id=sent,
                chat_id=chat,
                thread_id=thread,
                posted_at=now,
                shown=reply.text,
                shown_state=claimed.state,
                last_edit=now,
                failures=0,
            ),
        )
        if self.metrics is not None:
            self.metrics.alerts_sent_total.inc()
        return "posted"

    def _edit_due(self, alert: Alert, now: float, urgent_only: bool) -> str | None:
        """'status' or 'counter' when the message should be edited now, else None."""
        if alert.message_id is None or alert.chat_id is None or alert.failures >= MAX_FAILURES:
            return None
        if alert_text(alert) == alert.shown:
            return None
        if alert.state != alert.shown_state:
            return "status"
        if urgent_only or now - (alert.last_edit or 0.0) < EDIT_INTERVAL:
            return None
        return "counter"

    async def _edit(self, alert: Alert, *, urgent_only: bool) -> bool:
        """Edit the alert's message if due; False when the budget said no."""
        kind = self._edit_due(alert, self.clock(), urgent_only)
        if kind is None or alert.chat_id is None:
            return True
        chat = alert.chat_id
        budget = "alert" if kind == "status" else "counter"
        if not await self.budget.free(chat, budget):
            return False
        claimed = await self._claim(
            alert.fingerprint, lambda a: self._edit_due(a, self.clock(), urgent_only) is not None
        )
        if claimed is None or claimed.message_id is None or claimed.chat_id is None:
            return True
        if not await self.budget.take(chat, budget):
            await self._settle(claimed, lambda a: a)
            return False
        reply = alert_reply(claimed, self.settings)
        done = await self._call(
            chat, "edit", _true(self.notifier.edit(chat, claimed.message_id, reply))
        )
        now = self.clock()
        if done is None:
            await self._settle(
                claimed, lambda a: replace(a, failures=a.failures + 1, last_edit=now)
            )
        else:
            await self._settle(
                claimed,
                lambda a: replace(a, shown=reply.text, shown_state=claimed.state, last_edit=now),
            )
        return True

    async def _recover(self, alert: Alert, in_storm: bool) -> None:
        """The short recovery line after a resolve (not in a storm, only within budget)."""
        chat = alert.chat_id
        claimed = await self._claim(alert.fingerprint, lambda a: a.recovery == "pending")
        if claimed is None:
            return
        if chat is None or in_storm or not await self.budget.take(chat, "alert"):
            await self._settle(claimed, lambda a: replace(a, recovery="skipped"))
            return
        who = claimed.target or claimed.source
        took = span((claimed.resolved_at or claimed.last_seen) - claimed.first_seen)
        count = f", ×{claimed.count}" if claimed.count > 1 else ""
        summary = claimed.summary[:200]
        reply = Reply(text=f"✅ {who} recovered after {took}{count}: {summary} (id {claimed.id})")
        sent = await self._call(
            chat, "recovery", self.notifier.send(chat, reply, thread_id=claimed.thread_id)
        )
        outcome = "sent" if sent is not None else "skipped"
        await self._settle(claimed, lambda a: replace(a, recovery=outcome))

    def _reminder_due(self, alert: Alert, now: float) -> bool:
        interval = self.settings.alerts.reminder_interval
        last = alert.last_reminder or alert.posted_at
        return (
            alert.firing
            and alert.severity is Severity.critical
            and not alert.acked_by
            and not alert.silenced
            and alert.message_id is not None
            and alert.chat_id is not None
            and last is not None
            and now - last >= interval
        )

    async def _remind(self, alert: Alert) -> bool:
        """Remind of an unacknowledged critical alert; False when the budget said no."""
        chat = alert.chat_id
        if chat is None or not await self.budget.free(chat, "alert"):
            return False
        claimed = await self._claim(
            alert.fingerprint, lambda a: self._reminder_due(a, self.clock())
        )
        if claimed is None:
            return True
        if not await self.budget.take(chat, "alert"):
            await self._settle(claimed, lambda a: a)
            return False
        now = self.clock()
        who = claimed.target or claimed.source
        reply = Reply(
            text=(
                f"⏰ still firing after {span(now - claimed.first_seen)}, not acknowledged: "
                f"{claimed.severity.icon} {who}: {claimed.summary[:200]} (×{claimed.count}, "
                f"id {claimed.id})"
            ),
            buttons=(Button("👀 Ack", f"ak:{claimed.id}"),),
        )
        await self._call(
            chat, "reminder", self.notifier.send(chat, reply, thread_id=claimed.thread_id)
        )
        await self._settle(claimed, lambda a: replace(a, last_reminder=now))
        return True

    # ----------------------------------------------------------------------- storms

    async def _storm(self, chat: int) -> Storm | None:
        stored = await self.store.get(STORMS, str(chat))
        return Storm.from_doc(stored.value) if stored else None

    async def _change_storm(
        self, chat: int, change: Callable[[Storm | None], Storm | None]
    ) -> Storm | None:
        """Compare-and-set on the chat's storm document; ``change`` returning None: no write."""
        key = str(chat)
        for _ in range(MAX_SWAPS):
            stored = await self.store.get(STORMS, key)
            current = Storm.from_doc(stored.value) if stored else None
            updated = change(current)
            if updated is None:
                return current
            if stored is None:
                if await self.store.create(STORMS, key, updated.to_doc(), ttl=86400.0):
                    return updated
            elif await self.store.swap(STORMS, key, stored.version, updated.to_doc(), ttl=86400.0):
                return updated
        return None

    async def _begin_storm(self, chat: int) -> None:
        now = self.clock()

        def begin(current: Storm | None) -> Storm | None:
            if current is not None and current.active:
                return None
            log.warning("alerts: budget exhausted in chat %s: storm mode", chat)
            return Storm(started=now, window_start=now)

        await self._change_storm(chat, begin)

    async def _tally(self, chat: int, events: list[AlertEvent], new: int) -> None:
        if not events and not new:
            return
        counts: dict[str, dict[str, int]] = {}
        firing = resolved = 0
        for event in events:
            if event.status == "resolved":
                resolved += 1
                continue
            firing += 1
            by_severity = counts.setdefault(event.target or "other", {})
            by_severity[event.severity.value] = by_severity.get(event.severity.value, 0) + 1

        def add(current: Storm | None) -> Storm | None:
            if current is None or not current.active:
                return None
            merged = {t: dict(v) for t, v in current.counts.items()}
            for target, by_severity in counts.items():
                into = merged.setdefault(target, {})
                for severity, n in by_severity.items():
                    into[severity] = into.get(severity, 0) + n
            return replace(
                current,
                total=current.total + firing,
                resolved=current.resolved + resolved,
                new=current.new + new,
                window_new=current.window_new + new,
                counts=merged,
            )

        await self._change_storm(chat, add)

    async def _digest(self, chat: int) -> None:
        """Post or edit the storm digest when due (one replica claims it)."""
        now = self.clock()
        interval = self.settings.alerts.digest_interval

        def due(storm: Storm) -> bool:
            if storm.lease is not None and now < storm.lease_until:
                return False
            if storm.active:
                if storm.message_id is None:
                    return True
                last = storm.last_digest or 0.0
                return storm.total != storm.shown_total and now - last >= interval
            return storm.message_id is not None and not storm.final_shown

        token = f"{self.owner}/{next(self._leases)}"

        def claim(current: Storm | None) -> Storm | None:
            if current is None or not due(current):
                return None
            return replace(current, lease=token, lease_until=now + LEASE)

        claimed = await self._change_storm(chat, claim)
        if claimed is None or claimed.lease != token:
            return
        sent: int | None = None
        ok = await self.budget.take(chat, "priority")
        if ok:
            reply = Reply(text=storm_text(claimed, now))
            if claimed.message_id is None:
                sent = await self._call(
                    chat, "digest", self.notifier.send(chat, reply, thread_id=self.thread_id)
                )
            else:
                edited = await self._call(
                    chat, "digest", _true(self.notifier.edit(chat, claimed.message_id, reply))
                )
                sent = claimed.message_id if edited else None
        done_at = self.clock()

        def settle(current: Storm | None) -> Storm | None:
            if current is None or current.lease != token:
                return None
            if sent is None:
                return replace(current, lease=None, lease_until=0.0)
            return replace(
                current,
                lease=None,
                lease_until=0.0,
                message_id=sent,
                last_digest=done_at,
                shown_total=claimed.total,
                final_shown=claimed.ended is not None,
            )

        await self._change_storm(chat, settle)

    async def _storm_tick(self, chat: int) -> bool:
        """Close the digest window; end the storm after a quiet one. True while it lasts."""
        now = self.clock()
        interval = self.settings.alerts.digest_interval
        allowance = math.floor(self.budget.alert_slots * interval / WINDOW)

        def roll(current: Storm | None) -> Storm | None:
            if current is None or not current.active or now - current.window_start < interval:
                return None
            if current.window_new <= allowance:
                log.warning("alerts: storm in chat %s is over", chat)
                return replace(current, ended=now)
            return replace(current, window_start=now, window_new=0)

        storm = await self._change_storm(chat, roll)
        if storm is not None and (storm.active or not storm.final_shown):
            await self._digest(chat)
        return storm is not None and storm.active

    # ----------------------------------------------------------------------- tick

    async def tick(self) -> None:
        """Flush held-back edits, digests, reminders, retries and silence notices."""
        chat = self.chat_id
        if chat is not None:
            in_storm = await self._storm_tick(chat)
            await self._tick_alerts(chat, in_storm)
        await self._announce_expired(chat)

    async def _tick_alerts(self, chat: int, in_storm: bool) -> None:
        now = self.clock()
        alerts = [Alert.from_doc(v.value) for v in (await self.store.scan(ALERTS)).values()]
        alerts = [a for a in alerts if not a.leased(now)]
        # status edits first (resolved, acked), then retried posts, counters, reminders
        by_severity = sorted(alerts, key=lambda a: (-a.severity.rank, a.first_seen))
        for alert in by_severity:
            if self._edit_due(alert, now, urgent_only=True) and not await self._edit(
                alert, urgent_only=True
            ):
                break
        retries = [a for a in by_severity if a.needs_post]
        digested = await self._deliver_new(chat, retries, in_storm) if retries else None
        if digested:
            await self._tally(chat, [], digested)
            in_storm = True
        for alert in by_severity:
            if alert.recovery == "pending":
                await self._recover(alert, in_storm)
        for alert in sorted(alerts, key=lambda a: a.last_edit or 0.0):
            if self._edit_due(alert, now, urgent_only=False) and not await self._edit(
                alert, urgent_only=False
            ):
                break
        if not in_storm:
            for alert in by_severity:
                if self._reminder_due(alert, now) and not await self._remind(alert):
                    break

    async def _announce_expired(self, chat: int | None) -> None:
        """Announce silences that ended, once across replicas, in one message."""
        now = self.clock()
        if chat is not None and not await self.budget.free(chat, "priority"):
            return  # try again at the next tick, before anyone marks them announced
        ended = await silences.expire(self.store, now)
        if not ended or chat is None:
            return
        alerts = [Alert.from_doc(v.value) for v in (await self.store.scan(ALERTS)).values()]
        lines = []
        for silence in ended:
            firing = sum(1 for a in alerts if a.firing and a.silence_id == silence.id)
            what = "every target" if silence.target == silences.EVERY_TARGET else silence.target
            note = f" — {silence.reason}" if silence.reason else ""
            still = f"; {firing} alert(s) still firing, /alerts" if firing else ""
            by = f"by {silence.created_by}, id {silence.id}"
            lines.append(f"🔔 silence of {what} ended ({by}){note}{still}")
        if not await self.budget.take(chat, "priority"):
            log.warning("alerts: no budget to announce %d ended silence(s)", len(ended))
            return
        await self._call(
            chat, "silence notice",
            self.notifier.send(chat, Reply(text="\n".join(lines)), thread_id=self.thread_id),
        )  # fmt: skip

    # ----------------------------------------------------------------------- people

    async def _fingerprint(self, alert_id: str) -> str | None:
        if not alert_id or len(alert_id) > 64:
            return None
        stored = await self.store.get(IDS, alert_id)
        return str(stored.value["fingerprint"]) if stored else None

    async def get(self, alert_id: str) -> Alert | None:
        fingerprint = await self._fingerprint(alert_id)
        if fingerprint is None:
            return None
        stored = await self.store.get(ALERTS, fingerprint)
        if stored is None or stored.value.get("id") != alert_id:
            return None
        return Alert.from_doc(stored.value)

    async def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest entries of the alert-events log (each holds up to LOG_CHUNK events)."""
        return await self.store.tail(EVENTS, "all", limit)

    async def list(self, firing_only: bool = True, limit: int = 50) -> list[Alert]:
        """Firing alerts first (most severe, newest), then the others, newest first."""
        alerts = [Alert.from_doc(v.value) for v in (await self.store.scan(ALERTS)).values()]
        if firing_only:
            alerts = [a for a in alerts if a.firing]
        alerts.sort(key=lambda a: (not a.firing, -a.severity.rank if a.firing else 0,
                                   -a.last_seen))  # fmt: skip
        return alerts[: max(0, limit)]

    async def storm(self) -> Storm | None:
        """The alert chat's storm, while one is going on."""
        chat = self.chat_id
        storm = await self._storm(chat) if chat is not None else None
        return storm if storm is not None and storm.active else None

    async def ack(self, alert_id: str, person: Person | str) -> str:
        """Acknowledge: reminders stop, the message says who. Returns the toast text."""
        name = person.name if isinstance(person, Person) else str(person)
        now = self.clock()

        def change(alert: Alert) -> Alert | str:
            if not alert.firing:
                return "Already resolved."
            if alert.acked_by:
                return f"Already acked by {alert.acked_by}."
            return replace(alert, acked_by=name, acked_at=now)

        result = await self._update(alert_id, change)
        if isinstance(result, str):
            return result
        await self._note("ack", result, name, now)
        await self._edit(result, urgent_only=True)
        return f"Acked by {name}: reminders stop."

    async def silence_alert(
        self, alert_id: str, person: Person | str, seconds: float = 3600
    ) -> str:
        """Silence the alert's target (or, without a target, this alert alone)."""
        name = person.name if isinstance(person, Person) else str(person)
        now = self.clock()
        alert = await self.get(alert_id)
        if alert is None:
            return "This alert is no longer known."
        silence = None
        if alert.target is not None:
            reason = f"from alert {alert.id}: {alert.summary[:100]}"
            silence = await silences.add(self.store, alert.target, seconds, reason, name, now=now)

        def change(current: Alert) -> Alert | str:
            return replace(
                current,
                silenced=current.firing,
                silence_id=silence.id if silence else None,
                silenced_until=now + seconds,
            )

        result = await self._update(alert_id, change)
        if isinstance(result, str):
            return result
        await self._note("silence", result, name, now)
        await self._edit(result, urgent_only=True)
        what = alert.target if alert.target is not None else "this alert"
        return (
            f"🔕 {what} silenced for {silences.describe(seconds)} (until {hhmm(now + seconds)})."
        )

    async def _note(self, what: str, alert: Alert, name: str, now: float) -> None:
        entry = {"at": now, "replica": self.owner, what: alert.id, "by": name}
        with contextlib.suppress(Exception):
            await self.store.append(EVENTS, "all", entry, keep=LOG_KEEP)


def _ttl(alert: Alert) -> float:
    return FIRING_TTL if alert.firing else RESOLVED_TTL


async def _true(call: Awaitable[object]) -> bool:
    await call
    return True


def count_events(entries: Iterable[dict[str, Any]]) -> int:
    """How many events a slice of the alert-events log holds."""
    return sum(len(e.get("events", ())) for e in entries)
