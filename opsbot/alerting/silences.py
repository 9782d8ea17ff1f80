"""Silences and maintenance windows, as documents in the store (namespace ``silences``).

A silence covers one alert's identity (its ``fingerprint``: target and check for the monitor
and backups, the label set for Alertmanager), one target by name, or every target with ``*``,
from ``starts`` to ``ends``. An alert's Silence button makes the first kind, so a different
failure of the same target is still posted; a typed ``/silence TARGET`` makes the second.
Covered alerts are still recorded (``silenced=true``) but not posted. Each
document lives until a day after its end (its ttl), so a silence that just ended can still be
announced and listed.

``expire`` is how the end of a silence is announced exactly once across replicas: it flips
``announced_end`` by compare-and-set, and only the replica whose swap won gets the silence
back. ``remove`` ends a silence early; a removed silence is not announced (whoever removed it
got the answer).
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

from opsbot.alerting.event import Severity
from opsbot.config import Person
from opsbot.errors import UsageError
from opsbot.state import ids
from opsbot.state.store import JSONDoc, Store

NAMESPACE = "silences"
KEEP_AFTER_END = 86400.0
MIN_SECONDS = 60
MAX_SECONDS = 30 * 86400
EVERY_TARGET = "*"
ID_LENGTH = 6  # typed: /unsilence K7M2QX

_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:\d{1,6}[wdhms])+$")
_PART = re.compile(r"(\d{1,6})([wdhms])")


@dataclass(frozen=True, slots=True)
class Silence:
    id: str
    target: str  # a target name, or "*" for every target
    starts: float
    ends: float
    reason: str
    created_by: str
    announced_end: bool = False
    removed_by: str | None = None
    fingerprint: str | None = None  # one alert's identity; None: the whole target (or *)
    alert_id: str | None = None  # the alert whose button made it
    matches: str = ""  # what that identity is, for people: "quizbot · http /health"
    up_to: str | None = None  # an alert's silence: the severity it had; a worse one breaks it

    def active(self, now: float) -> bool:
        return self.starts <= now < self.ends

    def covers(
        self, target: str | None, fingerprint: str | None = None, severity: str | None = None
    ) -> bool:
        """Whether it covers an alert of ``target`` with ``fingerprint`` at ``severity``: a
        warning silenced from its card is posted again once it turns critical."""
        if self.fingerprint is not None:
            return fingerprint == self.fingerprint and not _worse(severity, self.up_to)
        return self.target == EVERY_TARGET or (target is not None and self.target == target)

    @property
    def scope(self) -> str:
        """alert | target | all: how much it covers."""
        if self.fingerprint is not None:
            return "alert"
        return "all" if self.target == EVERY_TARGET else "target"

    @property
    def what(self) -> str:
        """What it matches, for people: "every alert of quizbot", "alert X only (…)"."""
        if self.fingerprint is not None:
            worse = f", while {self.up_to}" if self.up_to not in (None, "critical") else ""
            return f"alert {self.alert_id} only ({self.matches or self.target}){worse}"
        if self.target == EVERY_TARGET:
            return "every alert of every target"
        return f"every alert of {self.target}"

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Silence:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in doc.items() if k in known})


def parse_duration(text: str, *, minimum: int = MIN_SECONDS, maximum: int = MAX_SECONDS) -> int:
    """``1h30m``, ``90m``, ``2d``, ``45s``, ``1w`` → seconds, within [minimum, maximum]."""
    word = text.strip().lower()
    if not _DURATION.match(word):
        shown = text if len(text) <= 20 else text[:20] + "…"
        raise UsageError(f"a duration looks like 90m, 1h30m, 2d or 45s, not {shown!r}")
    units = [unit for _, unit in _PART.findall(word)]
    if len(units) != len(set(units)):
        raise UsageError(f"a duration names each unit once, not {word!r}")
    seconds = sum(int(number) * _UNITS[unit] for number, unit in _PART.findall(word))
    if not minimum <= seconds <= maximum:
        raise UsageError(
            f"a duration must be from {describe(minimum)} to {describe(maximum)}, not {word}"
        )
    return seconds


def describe(seconds: float) -> str:
    """A short human duration: 45s, 90 → 1m30s, 5400 → 1h30m, 2d."""
    rest = max(0, round(seconds))
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size or (unit == "s" and not parts):
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts[:2])


def _worse(severity: str | None, than: str | None) -> bool:
    if severity is None or than is None:
        return False
    return Severity(severity).rank > Severity(than).rank


def _name(person: Person | str) -> str:
    return person.name if isinstance(person, Person) else str(person)


async def add(
    store: Store,
    target: str,
    seconds: float,
    reason: str,
    person: Person | str,
    *,
    now: float | None = None,
    fingerprint: str | None = None,
    alert_id: str | None = None,
    matches: str = "",
    up_to: str | None = None,
) -> Silence:
    """A new silence of ``target`` (or ``*``) from now for ``seconds``; with ``fingerprint``,
    of that one alert identity only (``target`` is then only shown)."""
    if not 1 <= seconds <= MAX_SECONDS:
        raise UsageError(f"a silence lasts from 1s to {describe(MAX_SECONDS)}")
    now = time.time() if now is None else now
    while True:
        silence = Silence(
            id=ids.new_id(ID_LENGTH),
            target=target,
            starts=now,
            ends=now + seconds,
            reason=reason[:200],
            created_by=_name(person),
            fingerprint=fingerprint,
            alert_id=alert_id,
            matches=matches[:120],
            up_to=up_to,
        )
        if await store.create(NAMESPACE, silence.id, silence.to_doc(), ttl=_ttl(silence, now)):
            return silence


def _ttl(silence: Silence, now: float) -> float:
    return max(silence.ends - now, 0.0) + KEEP_AFTER_END


async def get(store: Store, silence_id: str) -> Silence | None:
    stored = await store.get(NAMESPACE, ids.canonical(silence_id, ID_LENGTH))
    return Silence.from_doc(stored.value) if stored else None


async def remove(
    store: Store, silence_id: str, person: Person | str, *, now: float | None = None
) -> Silence | None:
    """End an active silence now; None when there is no such active silence."""
    now = time.time() if now is None else now
    silence_id = ids.canonical(silence_id, ID_LENGTH)

    def end(doc: JSONDoc | None) -> JSONDoc | None:
        silence = Silence.from_doc(doc) if doc is not None else None
        if silence is None or silence.ends <= now:
            return None
        ended = replace(
            silence, ends=max(silence.starts, now), announced_end=True, removed_by=_name(person)
        )
        return ended.to_doc()

    done = await store.update(
        NAMESPACE, silence_id, end, ttl=lambda doc: _ttl(Silence.from_doc(doc), now)
    )
    return Silence.from_doc(done.after) if done is not None and done.after is not None else None


async def _all(store: Store) -> list[Silence]:
    return [Silence.from_doc(v.value) for v in (await store.scan(NAMESPACE)).values()]


async def active(store: Store, now: float) -> list[Silence]:
    """The silences in force at ``now``, ending soonest first."""
    return sorted((s for s in await _all(store) if s.active(now)), key=lambda s: s.ends)


def matching(
    silences: list[Silence],
    target: str | None,
    now: float,
    fingerprint: str | None = None,
    severity: str | None = None,
) -> Silence | None:
    """The silence among ``silences`` covering an alert of ``target`` with ``fingerprint`` and
    ``severity`` at ``now`` (the longest one)."""
    found = [s for s in silences if s.active(now) and s.covers(target, fingerprint, severity)]
    return max(found, key=lambda s: s.ends) if found else None


async def matches(
    store: Store, target: str | None, now: float, fingerprint: str | None = None
) -> Silence | None:
    """The active silence covering an alert of ``target`` with ``fingerprint``, if any."""
    return matching(await active(store, now), target, now, fingerprint)


async def expire(store: Store, now: float) -> list[Silence]:
    """Silences that have ended and were not announced yet: each is returned to exactly one
    caller across replicas (the one whose compare-and-set marked it announced)."""
    ended: list[Silence] = []
    for key, stored in (await store.scan(NAMESPACE)).items():
        silence = Silence.from_doc(stored.value)
        if silence.announced_end or silence.ends > now:
            continue
        marked = replace(silence, announced_end=True)
        if await store.swap(NAMESPACE, key, stored.version, marked.to_doc()):
            ended.append(marked)
    return sorted(ended, key=lambda s: s.ends)
