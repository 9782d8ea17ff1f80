"""The shared store: several opsbot replicas on one Redis.

Every conditional write is one Lua script, so it is atomic across replicas. Layout under the
prefix ``p``:

* ``p:doc:{namespace}:{key}``: a hash with ``value`` (JSON) and ``version``, PEXPIRE for a ttl;
* ``p:docs:{namespace}:``: a set of the namespace's keys for ``scan`` and ``scan_page`` (SSCAN),
  pruned as docs vanish;
* ``p:version``: the one counter every version comes from, so versions are never reused;
* ``p:log:{namespace}:{key}``: a list, newest first;
* ``p:lock:{name}``: a string holding the owner, with PX for the lease.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool

from opsbot.state.store import (
    SCAN_PAGE,
    Append,
    Expect,
    JSONDoc,
    Op,
    Versioned,
    Write,
    check_ops,
)
from opsbot.state.store.updating import Updating

POOL_SIZE = 64  # connections to Redis at most; more commands in flight wait for one
POOL_WAIT = 10.0  # seconds a command waits for a connection before it fails

# KEYS: doc, index, counter. ARGV: value, ttl in ms or '', key, condition. The condition is
# 'absent' (create), 'any' (put, which also drops an old ttl) or the expected version (swap,
# which keeps the ttl unless given a new one). Returns the new version, or nil.
_WRITE = """
local condition = ARGV[4]
if condition == 'absent' then
    if redis.call('EXISTS', KEYS[1]) == 1 then return nil end
elseif condition ~= 'any' then
    if redis.call('HGET', KEYS[1], 'version') ~= condition then return nil end
end
local version = redis.call('INCR', KEYS[3])
redis.call('HSET', KEYS[1], 'value', ARGV[1], 'version', version)
if ARGV[2] ~= '' then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif condition == 'any' then
    redis.call('PERSIST', KEYS[1])
end
redis.call('SADD', KEYS[2], ARGV[3])
return version
"""

# The loop over index KEYS[1]'s ``keys`` of both scans: a live document's key, value and
# version go into ``found``; a key whose document has expired leaves the index.
_COLLECT = """
for _, key in ipairs(keys) do
    local doc = redis.call('HMGET', ARGV[1] .. key, 'value', 'version')
    if doc[1] then
        table.insert(found, key)
        table.insert(found, doc[1])
        table.insert(found, doc[2])
    else
        redis.call('SREM', KEYS[1], key)
    end
end
return found
"""

# KEYS: index. ARGV: the doc key prefix. Returns key, value, version, key, value, ...
_SCAN = """
local keys = redis.call('SMEMBERS', KEYS[1])
local found = {}
""" + _COLLECT

# KEYS: index. ARGV: the doc key prefix, the SSCAN cursor, its COUNT. Returns the next cursor,
# then key, value, version, key, ... of that page's live documents (the others are pruned).
_SCAN_PAGE = """
local reply = redis.call('SSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local keys = reply[2]
local found = {reply[1]}
""" + _COLLECT

# KEYS: counter. ARGV[1]: the ops as a JSON array, each [kind, key, second key, condition,
# ttl in ms or '', member]; ARGV[i + 1]: op i's value. A write ('w': doc, index; the condition
# as in _WRITE) adds ``member`` to the index; an append ('a': log, log; keep or ''); an expect
# ('e': doc, doc; the version or 'absent'); an expect-scan ('s': index, index; its value the
# JSON object key → version, ``member`` the doc key prefix). Few arguments, however many ops:
# packing them was most of a commit's cost in the client. Every condition is checked before
# anything is written: all or nothing. Returns each op's new version (0 for an append or a
# condition), or nil.
_COMMIT = """
local ops = cjson.decode(ARGV[1])
for i, op in ipairs(ops) do
    local kind, first, condition = op[1], op[2], op[4]
    if kind == 'w' or kind == 'e' then
        if condition == 'absent' then
            if redis.call('EXISTS', first) == 1 then return nil end
        elseif condition ~= 'any' then
            if redis.call('HGET', first, 'version') ~= condition then return nil end
        end
    elseif kind == 's' then
        local expected, live = cjson.decode(ARGV[i + 1]), 0
        for _, key in ipairs(redis.call('SMEMBERS', first)) do
            local version = redis.call('HGET', op[6] .. key, 'version')
            if version then
                if expected[key] ~= version then return nil end
                live = live + 1
            end
        end
        for _ in pairs(expected) do live = live - 1 end
        if live ~= 0 then return nil end
    end
end
local versions = {}
for i, op in ipairs(ops) do
    local kind, first, condition, ttl = op[1], op[2], op[4], op[5]
    if kind == 'w' then
        local version = redis.call('INCR', KEYS[1])
        redis.call('HSET', first, 'value', ARGV[i + 1], 'version', version)
        if ttl ~= '' then
            redis.call('PEXPIRE', first, ttl)
        elseif condition == 'any' then
            redis.call('PERSIST', first)
        end
        redis.call('SADD', op[3], op[6])
        versions[i] = version
    elseif kind == 'a' then
        redis.call('LPUSH', first, ARGV[i + 1])
        if condition ~= '' then redis.call('LTRIM', first, 0, tonumber(condition) - 1) end
        versions[i] = 0
    else
        versions[i] = 0
    end
end
return versions
"""

# KEYS: lock. ARGV: owner, ttl in ms. Returns nil when taken (or renewed), else the holder.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return nil
"""

# KEYS: lock. ARGV: owner. Returns 1 when released.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _ms(ttl: float | None) -> str:
    if ttl is None:
        return ""
    if ttl <= 0:
        raise ValueError(f"ttl must be positive, not {ttl}")
    return str(math.ceil(ttl * 1000))


class RedisStore(Updating):
    def __init__(
        self,
        url: str | None,
        prefix: str = "opsbot",
        *,
        client: aioredis.Redis | None = None,
        also_close: Sequence[aioredis.Redis] = (),
    ) -> None:
        """From a ``redis://`` url, or a ready client (a Sentinel's ``master_for``).

        ``also_close``: clients closed with this store (a Sentinel's own connections).
        """
        self.prefix = prefix
        self._also_close = list(also_close)
        if client is None:
            assert url is not None
            # Connects lazily, on the first command. A blocking pool: redis-py's default one
            # refuses the 101st command in flight ("Too many connections"), which a monitor
            # round over thousands of targets reaches; here a burst waits for a connection.
            pool = BlockingConnectionPool.from_url(
                url, max_connections=POOL_SIZE, timeout=POOL_WAIT, decode_responses=True
            )
            client = aioredis.Redis.from_pool(pool)
        self._redis = client
        self._write = self._redis.register_script(_WRITE)
        self._commit = self._redis.register_script(_COMMIT)
        self._scan = self._redis.register_script(_SCAN)
        self._scan_page = self._redis.register_script(_SCAN_PAGE)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    def _key(self, kind: str, namespace: str, key: str = "") -> str:
        # A ':' in the namespace would let ("a:b", "c") and ("a", "b:c") share a key.
        if ":" in namespace:
            raise ValueError(f"namespace must not contain ':': {namespace!r}")
        return f"{self.prefix}:{kind}:{namespace}:{key}"

    async def _write_doc(
        self, namespace: str, key: str, value: JSONDoc, ttl: float | None, condition: str
    ) -> int | None:
        keys = [
            self._key("doc", namespace, key),
            self._key("docs", namespace),
            f"{self.prefix}:version",
        ]
        version = await self._write(keys, [json.dumps(value), _ms(ttl), key, condition])
        return None if version is None else int(version)

    # ----------------------------------------------------------------------- documents

    async def get(self, namespace: str, key: str) -> Versioned | None:
        fields = ["value", "version"]
        value, version = await self._redis.hmget(self._key("doc", namespace, key), fields)
        if value is None or version is None:
            return None
        return Versioned(json.loads(value), int(version))

    async def create(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> bool:
        return await self._write_doc(namespace, key, value, ttl, "absent") is not None

    async def put(
        self, namespace: str, key: str, value: JSONDoc, *, ttl: float | None = None
    ) -> int:
        version = await self._write_doc(namespace, key, value, ttl, "any")
        assert version is not None
        return version

    async def swap(
        self,
        namespace: str,
        key: str,
        expected_version: int,
        value: JSONDoc,
        *,
        ttl: float | None = None,
    ) -> int | None:
        return await self._write_doc(namespace, key, value, ttl, str(expected_version))

    async def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, Versioned]:
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in wanted:
                pipe.hmget(self._key("doc", namespace, key), ["value", "version"])
            replies = await pipe.execute()
        return {
            key: Versioned(json.loads(value), int(version))
            for key, (value, version) in zip(wanted, replies, strict=True)
            if value is not None and version is not None
        }

    async def commit(self, ops: Sequence[Op]) -> list[int] | None:
        check_ops(ops)
        if not ops:
            return []
        header: list[list[str]] = []
        values: list[str] = []
        for op in ops:
            if isinstance(op, Append):
                log = self._key("log", op.namespace, op.key)
                keep = "" if op.keep is None else str(op.keep)
                header.append(["a", log, log, keep, "", ""])
                values.append(json.dumps(op.value))
            elif isinstance(op, Write):
                doc = self._key("doc", op.namespace, op.key)
                index = self._key("docs", op.namespace)
                header.append(["w", doc, index, str(op.expect), _ms(op.ttl), op.key])
                values.append(json.dumps(op.value))
            elif isinstance(op, Expect):
                doc = self._key("doc", op.namespace, op.key)
                header.append(["e", doc, doc, str(op.version), "", ""])
                values.append("")
            else:  # ExpectScan
                index, prefix = self._key("docs", op.namespace), self._key("doc", op.namespace)
                header.append(["s", index, index, "", "", prefix])
                values.append(json.dumps({k: str(v) for k, v in op.versions.items()}))
        keys = [f"{self.prefix}:version"]
        args = [json.dumps(header), *values]
        versions = await self._commit(keys, args)
        return None if versions is None else [int(v) for v in versions]

    async def delete(self, namespace: str, key: str) -> bool:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key("doc", namespace, key))
            pipe.srem(self._key("docs", namespace), key)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def scan(self, namespace: str) -> dict[str, Versioned]:
        index = self._key("docs", namespace)
        flat = await self._scan([index], [self._key("doc", namespace)])
        return {
            flat[i]: Versioned(json.loads(flat[i + 1]), int(flat[i + 2]))
            for i in range(0, len(flat), 3)
        }

    async def scan_page(
        self, namespace: str, cursor: str | None = None, count: int = SCAN_PAGE
    ) -> tuple[dict[str, Versioned], str | None]:
        """SSCAN over the namespace's index: the cursor is Redis' own ("0" ends the walk)."""
        index = self._key("docs", namespace)
        args = [self._key("doc", namespace), cursor or "0", str(max(count, 1))]
        flat = await self._scan_page([index], args)
        page = {
            flat[i]: Versioned(json.loads(flat[i + 1]), int(flat[i + 2]))
            for i in range(1, len(flat), 3)
        }
        return page, (None if flat[0] == "0" else str(flat[0]))

    # ----------------------------------------------------------------------- logs

    async def append(
        self, namespace: str, key: str, value: JSONDoc, *, keep: int | None = None
    ) -> None:
        check_ops([Append(namespace, key, value, keep)])
        name = self._key("log", namespace, key)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lpush(name, json.dumps(value))
            if keep is not None:
                pipe.ltrim(name, 0, keep - 1)
            await pipe.execute()

    async def tail(self, namespace: str, key: str, limit: int) -> list[JSONDoc]:
        if limit < 1:  # LRANGE 0 -1 would be the whole list
            return []
        entries = await self._redis.lrange(self._key("log", namespace, key), 0, limit - 1)
        return [json.loads(entry) for entry in entries]

    # ----------------------------------------------------------------------- locks

    async def acquire(self, name: str, owner: str, ttl: float) -> str | None:
        holder = await self._acquire([f"{self.prefix}:lock:{name}"], [owner, _ms(ttl)])
        return None if holder is None else str(holder)

    async def release(self, name: str, owner: str) -> bool:
        return bool(await self._release([f"{self.prefix}:lock:{name}"], [owner]))

    async def close(self) -> None:
        await self._redis.aclose()
        for client in self._also_close:
            await client.aclose()
