"""A deploy run's journal: its phase and step lines, saved at every step
(``deploy-runs/<request id>``), so a replica that picks up a run whose replica died knows how
far it got."""

from __future__ import annotations

from opsbot.state.store import Store

NAMESPACE = "deploy-runs"
TTL = 7 * 86400.0


async def save(store: Store, request_id: str, doc: dict[str, object]) -> None:
    await store.put(NAMESPACE, request_id, dict(doc), ttl=TTL)


async def load(store: Store, request_id: str) -> dict[str, object] | None:
    stored = await store.get(NAMESPACE, request_id)
    return None if stored is None else dict(stored.value)
