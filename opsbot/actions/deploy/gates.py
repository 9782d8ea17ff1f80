"""What holds a deploy back: a change freeze (``/freeze [DURATION] REASON``, ``/unfreeze``), or
an open incident involving the target. An admin may deploy anyway with ``override REASON``
(audited, said on the card).

The freeze is one document in the store (``change-freeze/all``), with the freeze's duration as
its time to live, so every replica sees it and it ends by itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from opsbot.incidents.state import INCIDENTS
from opsbot.render import moment
from opsbot.state.store import Store

if TYPE_CHECKING:
    from opsbot.services import Services

NAMESPACE, KEY = "change-freeze", "all"


@dataclass(frozen=True, slots=True)
class Freeze:
    by: str
    reason: str
    since: float
    until: float | None  # None: until /unfreeze

    def said(self, now: float | None = None) -> str:
        until = "until /unfreeze" if self.until is None else f"until {moment(self.until, now)}"
        return f"change freeze by {self.by} ({until}): {self.reason}"


async def current(store: Store, now: float | None = None) -> Freeze | None:
    stored = await store.get(NAMESPACE, KEY)
    if stored is None:
        return None
    doc = stored.value
    until = doc.get("until")
    found = Freeze(str(doc.get("by")), str(doc.get("reason")), float(doc.get("since") or 0),
                   None if until is None else float(until))  # fmt: skip
    if found.until is not None and found.until <= (now or time.time()):
        return None
    return found


async def freeze(store: Store, by: str, reason: str, seconds: float | None) -> Freeze:
    now = time.time()
    made = Freeze(by, reason, now, None if seconds is None else now + seconds)
    await store.put(NAMESPACE, KEY, asdict(made), ttl=seconds)
    return made


async def unfreeze(store: Store) -> Freeze | None:
    was = await current(store)
    await store.delete(NAMESPACE, KEY)
    return was


async def open_incidents(services: Services, name: str) -> list[str]:
    """The unresolved incidents involving the target, by id."""
    incidents = INCIDENTS.bound(services)
    if incidents is None:
        return []
    return [i.id for i in await incidents.all() if not i.resolved and name in i.targets]


async def held_back(services: Services, name: str) -> str | None:
    """Why a deploy of ``name`` may not run now (without an override), or None."""
    frozen = await current(services.store)
    if frozen is not None:
        return frozen.said()
    involved = await open_incidents(services, name)
    if involved:
        return f"{', '.join(involved)} is open on {name}"
    return None
