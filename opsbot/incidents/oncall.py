"""Who is on call: the rotation in ``oncall.rotation`` plus overrides kept in the store.

The rotation hands over daily or weekly at a local time in a time zone. Shifts are counted in
local calendar days from ``rotation.start``, so a handover stays at 09:00 local across a DST
change (that shift is an hour shorter or longer in real time). Shift ``k`` has
``people[k % n]`` as primary and the next person in the list as secondary.

An override (``/oncall override NAME 4h [secondary]``) replaces the primary (or secondary)
until it ends; it is a store document with a time to live and an explicit ``until``, so it
expires by itself on every replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from opsbot.config import OnCallSettings, Person, Rotation, Settings
from opsbot.errors import UsageError
from opsbot.state.store import Store

OVERRIDES = "oncall-overrides"
Role = Literal["primary", "secondary"]
ROLES: tuple[Role, ...] = ("primary", "secondary")


@dataclass(frozen=True, slots=True)
class Shift:
    index: int
    start: datetime  # aware, UTC
    end: datetime
    primary: str
    secondary: str | None


def _handover(rotation: Rotation, day: date) -> datetime:
    hours, minutes = (int(p) for p in rotation.at.split(":"))
    local = datetime.combine(day, dtime(hours, minutes), tzinfo=ZoneInfo(rotation.timezone))
    return local.astimezone(UTC)


def _days(rotation: Rotation) -> int:
    return 1 if rotation.handover == "daily" else 7


def shift(rotation: Rotation, index: int) -> Shift:
    """The ``index``-th shift since ``rotation.start`` (negative: before it)."""
    length = _days(rotation)
    people = rotation.people
    first = rotation.start + timedelta(days=index * length)
    return Shift(
        index=index,
        start=_handover(rotation, first),
        end=_handover(rotation, first + timedelta(days=length)),
        primary=people[index % len(people)],
        secondary=people[(index + 1) % len(people)] if len(people) > 1 else None,
    )


def shift_at(rotation: Rotation, when: float) -> Shift:
    """The shift running at ``when`` (epoch seconds)."""
    moment = datetime.fromtimestamp(when, UTC)
    local_day = moment.astimezone(ZoneInfo(rotation.timezone)).date()
    index = (local_day - rotation.start).days // _days(rotation)
    current = shift(rotation, index)
    while moment < current.start:
        current = shift(rotation, current.index - 1)
    while moment >= current.end:
        current = shift(rotation, current.index + 1)
    return current


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True, slots=True)
class Override:
    role: Role
    name: str
    until: float
    by: str

    def to_doc(self) -> dict[str, Any]:
        return {"role": self.role, "name": self.name, "until": self.until, "by": self.by}


async def overrides(store: Store, now: float) -> dict[Role, Override]:
    found: dict[Role, Override] = {}
    for role in ROLES:
        stored = await store.get(OVERRIDES, role)
        if stored is None:
            continue
        doc = stored.value
        override = Override(role, str(doc["name"]), float(doc["until"]), str(doc.get("by", "")))
        if override.until > now:
            found[role] = override
    return found


async def set_override(
    store: Store, role: Role, name: str, seconds: float, by: str, now: float
) -> Override:
    override = Override(role, name, now + seconds, by)
    await store.put(OVERRIDES, role, override.to_doc(), ttl=seconds + 60)
    return override


async def clear_override(store: Store, role: Role) -> bool:
    return await store.delete(OVERRIDES, role)


# --------------------------------------------------------------------------- who


@dataclass(frozen=True, slots=True)
class OnCall:
    """Who is on call now (overrides applied) and in the next shift."""

    primary: Person | None
    secondary: Person | None
    shift: Shift
    next: Shift
    overrides: dict[Role, Override]
    contacts: tuple[Person, ...]


def person_named(settings: Settings, name: str) -> Person | None:
    lower = name.strip().lstrip("@").lower()
    return next((p for p in settings.people if p.name.lower() == lower), None)


def _config(settings: Settings) -> OnCallSettings:
    if settings.oncall is None:
        raise UsageError("no on-call rotation is configured (oncall: in the config)")
    return settings.oncall


async def who(settings: Settings, store: Store, now: float) -> OnCall:
    config = _config(settings)
    current = shift_at(config.rotation, now)
    active = await overrides(store, now)
    primary = active["primary"].name if "primary" in active else current.primary
    secondary = active["secondary"].name if "secondary" in active else current.secondary
    contacts = tuple(p for p in (person_named(settings, n) for n in config.contacts) if p)
    return OnCall(
        primary=person_named(settings, primary),
        secondary=person_named(settings, secondary) if secondary else None,
        shift=current,
        next=shift(config.rotation, current.index + 1),
        overrides=active,
        contacts=contacts,
    )


def local_time(settings: Settings, moment: datetime) -> str:
    zone = _config(settings).rotation.timezone
    return moment.astimezone(ZoneInfo(zone)).strftime(f"%a %d %b %H:%M {zone}")
