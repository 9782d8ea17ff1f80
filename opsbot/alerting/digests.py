"""Storms: when the chat has no room, new alerts are counted into one digest per chat.

The storm document (``alert-storms/{chat}``) holds the counts per target and severity, and
names the critical alerts it holds (a person must see those even when they got no message
of their own). The digest's ref is derived from the storm, so replicas queue one message;
it is kept current: each change is queued (at most every ``refresh`` seconds) as the
message's newest text, which the outbox coalesces (and puts into the send while that is
still queued), and its edits carry the document's version, so the outbox keeps the newest.
See ``opsbot.alerting.engine``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from opsbot.alerting.delivery import AlertDelivery, message_ref, named
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.records import MAX_SWAPS, Alert, AlertRecords
from opsbot.config import Settings
from opsbot.render import Reply, hhmm, span
from opsbot.state.pace import Priority
from opsbot.state.store import JSONDoc

log = logging.getLogger(__name__)

STORMS = "alert-storms"
NAMED = 20  # critical alerts a storm names (the first ones; the rest are counted)
SHOWN_CRITICAL = 5  # of those, in the digest's text


def refresh(interval: float) -> float:
    """Seconds between two texts of a digest: current within seconds, not one per event."""
    return min(5.0, interval / 4)


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
    shown_critical: int = 0
    ended: float | None = None
    final_shown: bool = False
    criticals: list[list[str]] = field(default_factory=list)  # [id, what, summary], NAMED
    critical: int = 0  # critical alerts the storm holds (without a message of their own)

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Storm:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in known})

    @property
    def active(self) -> bool:
        return self.ended is None


def storm_text(storm: Storm, now: float, top: int = 12) -> str:
    end = storm.ended if storm.ended is not None else now
    head = "🌤 alert storm over" if storm.ended is not None else "🌩 alert storm"
    lines = [
        f"{head}: {storm.total:,} alerts ({storm.new:,} new) in {span(end - storm.started)}"
        f" since {hhmm(storm.started)}"
        + (f", {storm.resolved:,} resolved" if storm.resolved else "")
    ]
    if storm.critical:
        icon = Severity.critical.icon
        lines.append(f"{icon} {storm.critical:,} critical without a message of their own:")
        for alert_id, what, summary in storm.criticals[:SHOWN_CRITICAL]:
            lines.append(f"{what}: {summary} (id {alert_id})")
        if storm.critical > SHOWN_CRITICAL:
            lines.append(f"… {storm.critical - SHOWN_CRITICAL:,} more critical: /alerts")
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


class StormDigests:
    """The storm of each chat: begin, count, digest, end."""

    def __init__(self, records: AlertRecords, delivery: AlertDelivery, settings: Settings) -> None:
        self.records = records
        self.delivery = delivery
        self.store = records.store
        self.clock = records.clock
        self.settings = settings

    async def current(self, chat: int) -> Storm | None:
        stored = await self.store.get(STORMS, str(chat))
        return Storm.from_doc(stored.value) if stored else None

    async def change(
        self, chat: int, change: Callable[[Storm | None], Storm | None]
    ) -> Storm | None:
        """Compare-and-set on the chat's storm document; ``change`` returning None: no write."""

        def apply(doc: JSONDoc | None) -> JSONDoc | None:
            updated = change(Storm.from_doc(doc) if doc is not None else None)
            return updated.to_doc() if updated is not None else None

        done = await self.store.update(STORMS, str(chat), apply, ttl=86400.0, attempts=MAX_SWAPS)
        if done is None:
            return None
        after = done.after if done.after is not None else done.before
        return Storm.from_doc(after) if after is not None else None

    async def begin(self, chat: int) -> None:
        now = self.clock()

        mine: list[Storm] = []

        def begin(current: Storm | None) -> Storm | None:
            if current is not None and current.active:
                return None
            mine.append(Storm(started=now, window_start=now))
            return mine[-1]

        began = await self.change(chat, begin)
        if mine and began is mine[-1]:  # this replica began it: one log line, not one each
            log.warning("alerts: chat %s is full: storm mode", chat)

    async def tally(
        self, chat: int, events: list[AlertEvent], new: int, digested: Sequence[Alert] = ()
    ) -> None:
        """Count ``events`` and ``new`` digested alerts into the storm; name the critical
        ones among ``digested``."""
        if not events and not new:
            return
        critical = [a for a in digested if a.severity is Severity.critical]
        names = [[a.id, named(a.target, a.labels) or a.source, a.summary[:120]]
                 for a in critical]  # fmt: skip
        counts: dict[str, dict[str, int]] = {}
        firing = resolved = 0
        for event in events:
            if event.status == "resolved":
                resolved += 1
                continue
            firing += 1
            by_severity = counts.setdefault(named(event.target, event.labels) or "other", {})
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
                criticals=[*current.criticals, *names][:NAMED],
                critical=current.critical + len(critical),
            )

        await self.change(chat, add)

    async def digest(self, chat: int) -> None:
        """Post or edit the storm digest when due."""
        now = self.clock()
        interval = self.settings.alerts.digest_interval
        stored = await self.store.get(STORMS, str(chat))
        storm = Storm.from_doc(stored.value) if stored else None
        if stored is None or storm is None:
            return
        if storm.active:
            last = storm.last_digest or 0.0
            changed = storm.total != storm.shown_total or storm.critical != storm.shown_critical
            if storm.message_id is not None and not (changed and now - last >= refresh(interval)):
                return
        elif storm.message_id is None or storm.final_shown:
            return
        reply = Reply(text=storm_text(storm, now))
        if storm.message_id is None:  # what a storm holds is shown first: as a critical alert
            ref = message_ref("storm", chat, storm.started)
            await self.delivery.send(chat, reply, self.delivery.thread_id, ref, critical=True)
        else:  # kept current ahead of the alerts it stands for (a storm fills their share);
            # a critical alert it names for the first time goes as a person's reply would
            ref = storm.message_id
            named_new = storm.critical != storm.shown_critical
            priority = Priority.reply if named_new else Priority.final
            await self.delivery.replace_text(chat, ref, reply, stamp=stored.version, urgent=True,
                                             priority=priority)  # fmt: skip

        def shown(current: Storm | None) -> Storm | None:
            if current is None or current.started != storm.started:
                return None
            return replace(
                current,
                message_id=ref,
                last_digest=now,
                shown_total=max(current.shown_total, storm.total),
                shown_critical=max(current.shown_critical, storm.critical),
                final_shown=current.final_shown or storm.ended is not None,
            )

        await self.change(chat, shown)

    async def tick(self, chat: int) -> bool:
        """Close the digest window; end the storm after a quiet one. True while it lasts."""
        now = self.clock()
        interval = self.settings.alerts.digest_interval
        allowance = self.delivery.allowance(interval)

        def roll(current: Storm | None) -> Storm | None:
            if current is None or not current.active or now - current.window_start < interval:
                return None
            if current.window_new <= allowance:
                log.warning("alerts: storm in chat %s is over", chat)
                return replace(current, ended=now)
            return replace(current, window_start=now, window_new=0)

        storm = await self.change(chat, roll)
        if storm is not None and (storm.active or not storm.final_shown):
            await self.digest(chat)
        return storm is not None and storm.active
