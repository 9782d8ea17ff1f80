"""Open the configured store backend."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from opsbot.config import Settings
from opsbot.errors import ConfigError
from opsbot.state.store import Store
from opsbot.state.store.sqlite import SQLiteStore

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    """Where a Sentinel-managed master is found: the sentinels, its name, db and password."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    password: str | None = None


def parse_sentinel_url(url: str) -> SentinelTarget:
    """``redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]``."""
    parts = urlsplit(url)
    if parts.scheme != SENTINEL_SCHEME:
        raise ConfigError(f"store.redis_url: not a {SENTINEL_SCHEME}:// url")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    password = unquote(userinfo.partition(":")[2]) or None if userinfo else None
    sentinels = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"store.redis_url: sentinel {item!r} is not host:port")
        sentinels.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError("store.redis_url: expected /service_name or /service_name/db")
    return SentinelTarget(sentinels, path[0], int(path[1]) if len(path) == 2 else 0, password)


def open_store(settings: Settings) -> Store:
    """The configured backend; neither connects before its first call."""
    store = settings.store
    if store.backend != "redis":
        return SQLiteStore(settings.data_dir / "opsbot.sqlite3")
    from opsbot.state.store.redis import RedisStore  # redis loads only when configured

    url = store.redis_url.get_secret_value() if store.redis_url else None
    target: SentinelTarget | None = None
    if url is not None and url.startswith(f"{SENTINEL_SCHEME}://"):
        target = parse_sentinel_url(url)
    elif store.sentinels:
        pairs = [(h, int(p)) for h, _, p in (s.rpartition(":") for s in store.sentinels)]
        password = urlsplit(url).password if url else None
        target = SentinelTarget(pairs, store.sentinel_service, password=password)
    if target is None:
        assert url is not None  # StoreSettings refuses redis without a url or sentinels
        return RedisStore(url, store.prefix)
    from opsbot.state.store.sentinel import SentinelStore

    return SentinelStore(
        target.sentinels, target.service, store.prefix, db=target.db, password=target.password
    )
