"""Each incident's document and the one status card that shows it, kept in step.

Every change is a compare-and-set of the incident document, and the card text the change leads
to is rendered and stored (``card_text``) in that same write; only the writer whose swap
succeeded edits the card, and only when ``card_text`` changed. After its edit a writer re-reads
the document and edits once more if a concurrent change was stored meanwhile, so the card ends
showing the latest state, however many replicas change it at once. ``state.Incidents`` builds
the lifecycle on these.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, replace

from opsbot.config import Settings
from opsbot.errors import UsageError
from opsbot.incidents.card import card_reply, card_text, refreshed
from opsbot.incidents.records import (
    CONVERGE,
    HEALTH_TIMEOUT,
    MAX_SWAPS,
    NAMESPACE,
    Health,
    Incident,
    normalize_id,
    short,
)
from opsbot.notify import Notifier
from opsbot.state.store import JSONDoc, Store

log = logging.getLogger(__name__)


@dataclass
class _Change:
    """A change's outcome: the document before and after the winning swap."""

    before: Incident
    after: Incident


@dataclass(eq=False)
class CardKeeper:
    """The incident documents and their cards: every change a compare-and-set, the card edited
    by the writer whose change altered its text (see the module docstring)."""

    store: Store
    settings: Settings
    notifier: Notifier
    _: KW_ONLY
    clock: Callable[[], float] = time.time
    health: Health | None = None

    @property
    def chat_id(self) -> int | None:
        telegram = self.settings.telegram
        return telegram.incident_chat_id or telegram.ops_chat_id

    # ----------------------------------------------------------------------- reading

    async def get(self, incident_id: str) -> Incident | None:
        key = normalize_id(incident_id)
        if key is None:
            return None
        stored = await self.store.get(NAMESPACE, key)
        return Incident.from_doc(stored.value) if stored else None

    async def all(self) -> list[Incident]:
        return [Incident.from_doc(v.value) for v in (await self.store.scan(NAMESPACE)).values()]

    async def list(self, open_first: bool = True, limit: int = 20) -> list[Incident]:
        """Newest first; with ``open_first`` the unresolved ones before the resolved."""
        incidents = sorted(await self.all(), key=lambda i: -i.created)
        if open_first:
            incidents.sort(key=lambda i: i.resolved)  # stable: newest first within each
        return incidents[: max(0, limit)]

    async def by_thread(self, chat_id: int | None, thread_id: int | None) -> Incident | None:
        """The incident whose forum topic this is (for commands typed inside it)."""
        if chat_id is None or thread_id is None:
            return None
        found = [i for i in await self.all() if (i.chat_id, i.thread_id) == (chat_id, thread_id)]
        return max(found, key=lambda i: i.created) if found else None

    async def _post_card(self, incident: Incident, *, first: bool) -> Incident:
        """Open the topic (once) and post and pin the card; record where it went."""
        assert incident.chat_id is not None
        chat = incident.chat_id
        thread = incident.thread_id
        if first and thread is None:
            name = f"{incident.id} {incident.severity} {incident.title}"
            try:
                thread = await self.notifier.create_topic(chat, name)
            except Exception:
                log.exception("%s: could not open a topic", incident.id)
                thread = None
            if thread is not None:
                incident = await self._set(incident.id, lambda i: replace(i, thread_id=thread))
        now = self.clock()
        text = card_text(incident, now)
        try:
            message_id = await self.notifier.send(
                chat, card_reply(incident, text), thread_id=thread
            )
        except Exception:
            log.exception("%s: could not post the status card; tick will retry", incident.id)
            return incident
        with_card = await self._set(
            incident.id, lambda i: replace(refreshed(i, now), card_message_id=message_id)
        )
        try:
            await self.notifier.pin(chat, message_id)
        except Exception:
            log.exception("%s: could not pin the status card", incident.id)
        if with_card.card_text != text:  # changed between the post and the record
            await self._edit(with_card)
        return with_card

    async def _set(self, incident_id: str, change: Callable[[Incident], Incident]) -> Incident:
        """A change that needs no card edit of its own (bookkeeping)."""
        return (await self._change(incident_id, change)).after

    # ----------------------------------------------------------------------- changes

    async def _change(self, incident_id: str, change: Callable[[Incident], Incident]) -> _Change:
        """Compare-and-set loop; ``change`` may raise UsageError to refuse."""
        key = normalize_id(incident_id)
        if key is None:
            raise UsageError(f"{short(incident_id, 32)!r} is not an incident id (like INC-7)")

        def apply(doc: JSONDoc | None) -> JSONDoc:
            if doc is None:
                raise UsageError(f"no incident {key}; see /incident list")
            return change(Incident.from_doc(doc)).to_doc()

        done = await self.store.update(NAMESPACE, key, apply, attempts=MAX_SWAPS)
        if done is None or done.before is None or done.after is None:
            raise UsageError(f"too many concurrent changes of {key}; try again")
        return _Change(Incident.from_doc(done.before), Incident.from_doc(done.after))

    async def _apply(
        self, incident_id: str, change: Callable[[Incident, float], Incident]
    ) -> Incident:
        """An explicit change: record it, and (only this writer) edit the card at once."""
        now = self.clock()
        done = await self._change(incident_id, lambda i: refreshed(change(i, now), now))
        await self._show(done.before, done.after)
        return done.after

    async def _show(self, before: Incident, after: Incident) -> None:
        if after.card_text is not None and after.card_text != before.card_text:
            await self._edit(after)
            await self._converge(after)

    async def _edit(self, incident: Incident) -> bool:
        if incident.chat_id is None or incident.card_message_id is None:
            return False
        try:
            await self.notifier.edit(
                incident.chat_id, incident.card_message_id,
                card_reply(incident, incident.card_text or ""),
            )
        except Exception:
            log.exception("%s: could not edit the status card", incident.id)
            return False
        return True

    async def _converge(self, shown: Incident) -> None:
        """Show the newest text if a concurrent change was stored while we edited.

        A writer stops only when a read made after its last edit finds what that edit showed;
        so a newer text was stored after that read, and its writer's edit lands after ours.
        """
        for _ in range(CONVERGE):
            latest = await self.get(shown.id)
            if latest is None or latest.card_text in (None, shown.card_text):
                return
            if not await self._edit(latest):
                return
            shown = latest

    async def _health(self, targets: Sequence[str]) -> str | None:
        if self.health is None or not targets:
            return None
        try:
            return short(await asyncio.wait_for(self.health(targets), HEALTH_TIMEOUT), 300)
        except Exception:
            log.exception("incidents: health of %s unknown", ", ".join(targets))
            return None
