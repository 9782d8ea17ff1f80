"""The shared store through Redis Sentinel: a failover pauses commands, it loses none.

redis-py 8.2's own Sentinel client (``master_for``) leaves three gaps this module fills:

* redis-py issue #3874: a command retried after a dropped connection reconnects inside
  ``send_packed_command`` to the address the connection had, the old master, without asking
  the sentinels; only a fresh connection asks. Here every connect takes the address the
  pool holds now.
* After ``SENTINEL FAILOVER`` the old master still answers as a master until the sentinels
  convert it (their INFO of it is every 10 s): a client never told keeps writing there, and
  those writes vanish when it becomes a replica. Here the sentinels are asked every second,
  and connections to an address they no longer name are dropped (idle ones at once, busy
  ones when their command returns). While a sentinel reports the failover in progress, new
  commands wait for it to end instead of writing to the master being replaced.
* ``discover_master`` takes the first sentinel that answers, which may not have heard of the
  failover yet. Here all of them are asked at once and the newest config-epoch wins.

While failing (a refused connection, a timeout, a READONLY reply) the sentinels are asked
every 0.25 s and a command is retried for up to ``RETRY_FOR`` seconds, so a SIGKILLed master
costs a pause (the sentinels' down-after plus their election), not an error. Connections
come from a blocking pool of ``POOL_SIZE``: a burst waits for a connection, it does not fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    MasterNotFoundError,
    SentinelConnectionPool,
    SentinelManagedConnection,
)
from redis.backoff import ConstantBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from opsbot.state.store import Append, JSONDoc, check_ops
from opsbot.state.store import redis as redis_store
from opsbot.state.store.redis import RedisStore

log = logging.getLogger(__name__)

T = TypeVar("T")

ASK_EVERY = 1.0  # healthy: bounds how long writes can go to a master already replaced
ASK_FAILING = 0.25  # after a failure, until RETRY_FOR has passed without one
RETRY_FOR = 9.0  # a command's retries end after this; a 10 s pause is the most a user sees
RETRY_STEP = 0.1
SENTINEL_TIMEOUT = 0.5
COMMAND_TIMEOUT = 5.0
POOL_SIZE = 64
WAIT_MS = 25  # how long a write waits for the replica's acknowledgement

# Every write of the store is one script call, followed on the same connection by WAIT.
_WRITES = frozenset({"EVALSHA", "EVAL"})

# A store script made safe to send twice: its last key is the call's own token, under which
# its result is kept for a minute. A write sent again after a failover (its reply lost with a
# killed master, or not acknowledged by a replica being promoted) answers what it answered,
# instead of running again (an append twice, a swap refused by its own first run).
_ONCE = """
local token = table.remove(KEYS)
local done = redis.call('GET', token)
if done then return cjson.decode(done)[1] end
local result = (function()
%s
end)()
redis.call('SET', token, cjson.encode({result}), 'PX', 60000)
return result
"""

# KEYS: doc, index. ARGV: key. Returns 1 when the document was there.
_DELETE = """
local deleted = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return deleted
"""


@dataclass(frozen=True)
class Master:
    """What the sentinels said: the master, its config-epoch, and how many answered."""

    host: str
    port: int
    epoch: int
    answered: int
    asked: int
    failing_over: bool = False

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port


def _state(reply: Any) -> dict[str, str]:
    """``SENTINEL MASTER`` replies field, value, field, value, ... (RESP2)."""
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = [str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


class Sentinels:
    """Every sentinel asked at once about one master; the newest config-epoch wins."""

    def __init__(self, addresses: Sequence[tuple[str, int]], service: str) -> None:
        self.service = service
        no_retry = Retry(NoBackoff(), 0)
        options: dict[str, Any] = {"socket_timeout": SENTINEL_TIMEOUT, "retry": no_retry,
                   "socket_connect_timeout": SENTINEL_TIMEOUT, "decode_responses": True}
        self.clients = [aioredis.Redis(host=h, port=p, **options) for h, p in addresses]

    async def ask(self) -> Master:
        calls: list[Callable[..., Awaitable[Any]]] = [c.execute_command for c in self.clients]
        replies = await asyncio.gather(
            *(call("SENTINEL", "MASTER", self.service) for call in calls),
            return_exceptions=True,
        )
        best: Master | None = None
        answered, failing_over, errors = 0, False, []
        for reply in replies:
            if isinstance(reply, BaseException):
                errors.append(f"{type(reply).__name__}: {reply}")
                continue
            answered += 1
            state = _state(reply)
            flags = set(state.get("flags", "").split(","))
            failing_over = failing_over or "failover_in_progress" in flags
            if "master" not in flags or flags & {"s_down", "o_down"}:
                continue
            epoch = int(state.get("config-epoch", "0"))
            if best is None or epoch > best.epoch:
                best = Master(state["ip"], int(state["port"]), epoch, 0, 0)
        if best is None:
            detail = "; ".join(errors) or "none names a master that is up"
            raise MasterNotFoundError(f"no master for {self.service!r} ({detail})")
        return Master(best.host, best.port, best.epoch, answered, len(self.clients), failing_over)

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


def _address(conn: Any) -> tuple[str, int]:
    return conn.host, conn.port


class _Retry(Retry):
    """Retries for ``RETRY_FOR`` seconds (not a count), telling the pool of each failure."""

    def __init__(self, on_failure: Callable[[], None]) -> None:
        super().__init__(ConstantBackoff(RETRY_STEP), -1)
        self._on_failure = on_failure

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        deadline = time.monotonic() + RETRY_FOR
        failures = 0
        while True:
            try:
                return await do()
            except (RedisConnectionError, RedisTimeoutError) as error:
                if is_retryable is not None and not is_retryable(error):
                    raise
                failures += 1
                self._on_failure()
                await (fail(error, failures) if with_failure_count else fail(error))
                if time.monotonic() + RETRY_STEP > deadline:
                    raise
                await asyncio.sleep(RETRY_STEP)


class _Connection(SentinelManagedConnection):
    async def _connect(self) -> None:
        # redis-py #3874: every socket connect goes where the pool says the master is now
        self.host, self.port = await self.connection_pool.get_master_address()
        connect: Callable[[], Awaitable[None]] = super()._connect
        await connect()

    async def connect_check_health(
        self, check_health: bool = True, retry_socket_connect: bool = True
    ) -> None:
        # One retry loop, the command's (or the pool's connect): nested, each of ~9 s, a
        # command could wait twice as long
        await super().connect_check_health(check_health, retry_socket_connect=False)


class _Pool(SentinelConnectionPool, BlockingConnectionPool):
    """The master's connections, its address kept current by asking the sentinels."""

    def __init__(self, sentinels: Sentinels, **kwargs: Any) -> None:
        init: Callable[..., None] = super().__init__
        init(
            sentinels.service, None, connection_class=_Connection,
            max_connections=POOL_SIZE, timeout=RETRY_FOR, **kwargs,
        )  # fmt: skip
        self.sentinels = sentinels
        self.master: Master | None = None
        self._failed_at = -RETRY_FOR
        self._unanswered = False
        self._asked = asyncio.Event()
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def confirm(self, address: tuple[str, int]) -> None:
        """A write the replica did not acknowledge: fine unless the sentinels are replacing
        this master (then it would be lost with it: raise, and it is retried on the next)."""
        await self._ask()
        master = self.master
        if master is None or master.failing_over or master.address != address:
            self.note_failure()
            raise RedisConnectionError("the master is being replaced: written again")

    def note_failure(self) -> None:
        self._failed_at = time.monotonic()
        self._wake.set()

    def _failing(self) -> bool:
        return time.monotonic() - self._failed_at < RETRY_FOR

    async def _ask(self) -> None:
        try:
            master = await self.sentinels.ask()
        except RedisError as exc:
            if not self._unanswered:  # once an outage, not every 0.25 s
                log.warning("redis sentinel: %s", exc)
            self._unanswered = True
            self._failed_at = time.monotonic()
            return
        if self._unanswered:
            log.warning("redis sentinel: master %s found again", self.service_name)
        self._unanswered = False
        previous, self.master = self.master, master
        if master.failing_over:
            self._failed_at = time.monotonic()
        if previous is not None and previous.address != master.address:
            log.warning(
                "redis sentinel: master %s is now %s:%d (epoch %d, was %s:%d)",
                self.service_name, master.host, master.port, master.epoch, *previous.address,
            )  # fmt: skip
            await self._drop_old(master.address)
        self.master_address = master.address
        self._asked.set()

    async def _drop_old(self, address: tuple[str, int]) -> None:
        async with self._lock:
            idle = [c for c in self._available_connections if _address(c) != address]
            for conn in self._in_use_connections:
                if _address(conn) != address:
                    mark: Callable[[], None] = conn.mark_for_reconnect
                    mark()  # dropped when its command returns
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.disconnect()

    async def _watch(self) -> None:
        while True:
            await self._ask()
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), ASK_FAILING if self._failing() else ASK_EVERY
                )
            if self._failing():
                await asyncio.sleep(ASK_FAILING)  # a burst of failures asks once

    def _start(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def get_master_address(self) -> tuple[str, int]:
        self._start()
        deadline = time.monotonic() + RETRY_FOR
        while self.master is None or self.master.failing_over:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MasterNotFoundError(f"no master for {self.service_name!r} yet")
            self._asked.clear()
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._asked.wait(), left)
        return self.master.address

    async def get_connection(self, command_name: Any = None, *keys: Any, **options: Any) -> Any:
        self._start()
        if self.master is None or self.master.failing_over:
            await self.get_master_address()  # a failover under way: wait for its master
        get: Callable[[], Awaitable[Any]] = super().get_connection
        return await get()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None


class _Client(aioredis.Redis):
    """Each write is sent with a WAIT for the replica, in the same round trip."""

    async def _send_command_parse_response(
        self, conn: Any, command_name: Any, *args: Any, **options: Any
    ) -> Any:
        if command_name not in _WRITES:
            send: Callable[..., Awaitable[Any]] = super()._send_command_parse_response
            return await send(conn, command_name, *args, **options)
        await conn.send_packed_command(conn.pack_commands([args, ("WAIT", 1, WAIT_MS)]))
        try:
            result = await self.parse_response(conn, command_name, **options)
        finally:  # the WAIT's reply comes after an error reply too
            acked = await conn.read_response()
        if not acked:
            pool = self.connection_pool
            assert isinstance(pool, _Pool)
            await pool.confirm(_address(conn))
        return result


class _Once:
    """A script called with a fresh token each time (the same one through its retries)."""

    def __init__(self, client: aioredis.Redis, source: str, prefix: str) -> None:
        self._script = client.register_script(_ONCE % source)
        self._prefix = prefix

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        token = f"{self._prefix}:once:{uuid.uuid4().hex}"
        return await self._script([*keys, token], list(args))


class SentinelStore(RedisStore):
    """The Redis store on the master the sentinels name, riding out their failovers."""

    _delete: _Once

    def __init__(
        self,
        sentinels: Sequence[tuple[str, int]],
        service: str,
        prefix: str = "opsbot",
        *,
        db: int = 0,
        password: str | None = None,
    ) -> None:
        self.sentinels = Sentinels(sentinels, service)
        self.pool = _Pool(
            self.sentinels, db=db, password=password, decode_responses=True,
            socket_timeout=COMMAND_TIMEOUT, socket_connect_timeout=SENTINEL_TIMEOUT,
            retry=_Retry(lambda: self.pool.note_failure()),
        )  # fmt: skip
        super().__init__(None, prefix, client=_Client.from_pool(self.pool))
        once = {"_write": redis_store._WRITE, "_commit": redis_store._COMMIT,
                "_acquire": redis_store._ACQUIRE, "_release": redis_store._RELEASE,
                "_delete": _DELETE}  # fmt: skip
        for name, source in once.items():
            setattr(self, name, _Once(self._redis, source, prefix))

    # RedisStore's pipelines would be writes WAIT cannot follow: scripts instead

    async def append(
        self, namespace: str, key: str, value: JSONDoc, *, keep: int | None = None
    ) -> None:
        op = Append(namespace, key, value, keep)
        check_ops([op])
        await self.commit([op])

    async def delete(self, namespace: str, key: str) -> bool:
        keys = [self._key("doc", namespace, key), self._key("docs", namespace)]
        return bool(await self._delete(keys, [key]))

    async def master(self) -> Master:
        """Ask the sentinels now (``opsbot check``)."""
        return await self.sentinels.ask()

    async def close(self) -> None:
        await self.pool.stop()
        await super().close()
        await self.sentinels.aclose()
