"""``Store.update``, written once over ``get``, ``create`` and ``swap`` for every backend."""

from __future__ import annotations

from collections.abc import Callable

from opsbot.state.store import UPDATE_ATTEMPTS, Change, JSONDoc, Store, Updated


class Updating:
    """Mixin giving a ``Store`` its ``update`` (see ``Store.update``)."""

    async def update(
        self: Store,
        namespace: str,
        key: str,
        change: Change,
        *,
        ttl: float | Callable[[JSONDoc], float] | None = None,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> Updated | None:
        for _ in range(attempts):
            stored = await self.get(namespace, key)
            before = stored.value if stored is not None else None
            after = change(before)
            if after is None:
                return Updated(before, None)
            expiry = ttl(after) if callable(ttl) else ttl
            if stored is None:
                if await self.create(namespace, key, after, ttl=expiry):
                    return Updated(None, after)
            elif await self.swap(namespace, key, stored.version, after, ttl=expiry) is not None:
                return Updated(before, after)
        return None
