"""Open the configured store backend."""

from __future__ import annotations

from opsbot.config import Settings
from opsbot.store import Store
from opsbot.store.sqlite import SQLiteStore


def open_store(settings: Settings) -> Store:
    """The configured backend; neither connects before its first call."""
    store = settings.store
    if store.backend == "redis":
        assert store.redis_url is not None  # StoreSettings refuses redis without a url
        from opsbot.store.redis import RedisStore  # redis loads only when configured

        return RedisStore(store.redis_url.get_secret_value(), store.prefix)
    return SQLiteStore(settings.data_dir / "opsbot.sqlite3")
