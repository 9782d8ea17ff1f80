"""``Store.update`` and ``Store.scan_pages``, written once for every backend (over ``get``,
``create`` and ``swap``; over ``scan_page``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from opsbot.state.store import (
    SCAN_PAGE,
    UPDATE_ATTEMPTS,
    Change,
    JSONDoc,
    Store,
    Updated,
    Versioned,
)


class Updating:
    """Mixin giving a ``Store`` its ``update`` and ``scan_pages`` (see ``Store``)."""

    async def scan_pages(
        self: Store, namespace: str, count: int = SCAN_PAGE
    ) -> AsyncIterator[dict[str, Versioned]]:
        cursor: str | None = None
        while True:
            page, cursor = await self.scan_page(namespace, cursor, count)
            if page:
                yield page
            if cursor is None:
                return

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
