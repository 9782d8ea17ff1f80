"""The public side of an incident: what the status page may show, and nothing else.

Kept apart from the incident document on purpose (``status-incidents/INC-7``): the page is
built only from these records and the components' states, so an incident's title, timeline,
people and targets can never leak onto it. A record holds the components it affects (names
from ``status_page.components``) and its public updates, each in one of the runbook's phases:
Investigating, Identified, Monitoring, Resolved. The latest phase is the record's state.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from opsbot.config import DockerEndpoint, Settings, SSHEndpoint
from opsbot.errors import UsageError
from opsbot.state.store import JSONDoc, Store

NAMESPACE = "status-incidents"
PHASES = ("investigating", "identified", "monitoring", "resolved")
MAX_TEXT = 1000
MAX_UPDATES = 100
MAX_SWAPS = 100
RESOLVED_TTL = 91 * 86400.0  # the page lists resolved incidents of the last 90 days
OPEN_TTL = 3650 * 86400.0

_TEMPLATES = {
    "investigating": (
        "We are investigating reports of problems with {what}. "
        "We will provide updates as more information becomes available."
    ),
    "identified": "The cause of the problems with {what} has been identified; a fix is underway.",
    "monitoring": "A fix has been applied to {what}. We are monitoring the results.",
    "resolved": (
        "The issue with {what} has been resolved. All services are now operating normally. "
        "We apologize for any inconvenience."
    ),
}


def internal_words(settings: Settings) -> set[str]:
    """What a public update must not name: targets, endpoint hosts, people (lower case).

    A word that is also a public component's name is allowed (a target may share it).
    """
    words = {name.lower() for name in settings.targets}
    words |= {name.lower() for name in settings.endpoints}
    words |= {person.name.lower() for person in settings.people}
    for endpoint in settings.endpoints.values():
        if isinstance(endpoint, SSHEndpoint):
            words.add(endpoint.host.lower())
        elif isinstance(endpoint, DockerEndpoint) and endpoint.url.startswith("tcp://"):
            words.add((urlsplit(endpoint.url).hostname or "").lower())
    public = {c.name.lower() for c in settings.status_page.components}
    return {w for w in words if w and w not in public and w not in ("local", "localhost")}


def check_public(text: str, forbidden: set[str]) -> None:
    """Refuse a public text that names something internal (whole words, any case)."""
    tokens = set(re.findall(r"[\w.@:-]+", text.lower()))
    tokens |= {t.strip(".:-@") for t in tokens}
    named = sorted(forbidden & tokens)
    if named:
        raise UsageError(
            "a public update must not name internal targets, hosts or people: "
            + ", ".join(named)
            + ". Say it in words your users know (the components' names)."
        )


def parse_phase(word: str) -> str | None:
    lower = word.strip().lower()
    return lower if lower in PHASES else None


def template(phase: str, components: Sequence[str]) -> str:
    """The runbook's wording for a phase, naming the affected components."""
    what = ", ".join(components) if components else "our services"
    return _TEMPLATES[phase].format(what=what)


@dataclass(frozen=True, slots=True)
class PublicUpdate:
    at: float
    phase: str
    text: str


@dataclass(frozen=True, slots=True)
class PublicIncident:
    id: str
    components: tuple[str, ...]
    updates: tuple[PublicUpdate, ...]

    @property
    def phase(self) -> str:
        return self.updates[-1].phase

    @property
    def resolved(self) -> bool:
        return self.phase == "resolved"

    @property
    def started(self) -> float:
        return self.updates[0].at

    @property
    def updated(self) -> float:
        return self.updates[-1].at

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "components": list(self.components),
            "updates": [{"at": u.at, "phase": u.phase, "text": u.text} for u in self.updates],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> PublicIncident:
        return cls(
            id=str(doc["id"]),
            components=tuple(str(c) for c in doc.get("components", ())),
            updates=tuple(
                PublicUpdate(float(u["at"]), str(u["phase"]), str(u["text"]))
                for u in doc.get("updates", ())
            ),
        )


async def get(store: Store, incident_id: str) -> PublicIncident | None:
    stored = await store.get(NAMESPACE, incident_id)
    return PublicIncident.from_doc(stored.value) if stored is not None else None


async def all_records(store: Store) -> list[PublicIncident]:
    """Every kept record, most recently updated first."""
    found = [PublicIncident.from_doc(v.value) for v in (await store.scan(NAMESPACE)).values()]
    found = [r for r in found if r.updates]
    return sorted(found, key=lambda r: r.updated, reverse=True)


async def post(
    store: Store,
    incident_id: str,
    components: Sequence[str],
    phase: str,
    text: str,
    now: float,
) -> PublicIncident:
    """Append a public update (the record is created by the first one)."""
    if phase not in PHASES:
        raise UsageError(f"the phase is one of {', '.join(p.title() for p in PHASES)}")
    text = " ".join(text.split())
    if len(text) > MAX_TEXT:
        raise UsageError(f"a public update is limited to {MAX_TEXT} characters")
    update = PublicUpdate(now, phase, text or template(phase, components))

    def add(doc: JSONDoc | None) -> JSONDoc:
        if doc is None:
            return PublicIncident(incident_id, tuple(components), (update,)).to_doc()
        before = PublicIncident.from_doc(doc)
        merged = tuple(dict.fromkeys((*before.components, *components)))
        updates = (*before.updates, update)[-MAX_UPDATES:]
        return replace(before, components=merged, updates=updates).to_doc()

    ttl = RESOLVED_TTL if update.phase == "resolved" else OPEN_TTL
    done = await store.update(NAMESPACE, incident_id, add, ttl=ttl, attempts=MAX_SWAPS)
    if done is None or done.after is None:
        raise UsageError(f"too many concurrent updates of {incident_id}; try again")
    return PublicIncident.from_doc(done.after)
