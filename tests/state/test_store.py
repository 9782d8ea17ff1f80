"""One contract suite for both store backends: SQLite on a temp file, Redis on a real server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Literal
from unittest.mock import ANY

import pytest
import pytest_asyncio
from pydantic import SecretStr

from opsbot.config import Settings, StoreSettings
from opsbot.redact import Redactor
from opsbot.state.store import (
    Append,
    Expect,
    ExpectScan,
    JSONDoc,
    Op,
    Store,
    Updated,
    Versioned,
    Write,
)
from opsbot.state.store.factory import open_store
from opsbot.state.store.redacting import RedactingStore
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sentinel import SentinelStore
from opsbot.state.store.sqlite import SQLiteStore

TTL = 0.3
PAST_TTL = 0.45

OpenStore = Callable[[], Store]


@pytest_asyncio.fixture(params=["sqlite", "redis", "sentinel"])
async def open_another(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens another store over the same data: a restart, or a second replica."""
    if request.param == "sqlite":
        path = tmp_path / "state" / "opsbot.sqlite3"

        def factory() -> Store:
            return SQLiteStore(path)
    elif request.param == "redis":
        url = request.getfixturevalue("redis_server").url
        prefix = f"test-{uuid.uuid4().hex}"

        def factory() -> Store:
            return RedisStore(url, prefix)
    else:
        lab = request.getfixturevalue("sentinel_lab")
        prefix = f"test-{uuid.uuid4().hex}"

        def factory() -> Store:
            return SentinelStore(lab.sentinels, lab.service, prefix)

    opened: list[Store] = []

    def open_tracked() -> Store:
        opened.append(factory())
        return opened[-1]

    yield open_tracked
    for store in opened:
        await store.close()


@pytest.fixture
def store(open_another: OpenStore) -> Store:
    return open_another()


# --------------------------------------------------------------------------- documents


async def test_create_only_if_absent(store: Store) -> None:
    assert await store.create("ns", "a", {"n": 1})
    assert not await store.create("ns", "a", {"n": 2})
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == {"n": 1}
    assert await store.get("ns", "missing") is None
    assert await store.get("other", "a") is None


async def test_put_get_round_trip_and_versions_grow(store: Store) -> None:
    value = {"text": "héllo", "list": [1, 2.5, None, True], "nested": {"x": "y"}}
    first = await store.put("ns", "a", value)
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == value and stored.version == first
    second = await store.put("ns", "a", {"n": 2})
    assert second > first
    assert await store.get("ns", "a") == Versioned({"n": 2}, second)


async def test_swap_wins_once_from_a_version(store: Store) -> None:
    version = await store.put("ns", "a", {"state": "pending"})
    new = await store.swap("ns", "a", version, {"state": "approved"})
    assert new is not None and new > version
    assert await store.swap("ns", "a", version, {"state": "denied"}) is None
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == {"state": "approved"} and stored.version == new
    assert await store.swap("ns", "missing", version, {}) is None


async def test_concurrent_swaps_exactly_one_wins(store: Store) -> None:
    version = await store.put("ns", "a", {"winner": None})
    results = await asyncio.gather(
        *(store.swap("ns", "a", version, {"winner": i}) for i in range(100))
    )
    winners = [i for i, result in enumerate(results) if result is not None]
    assert len(winners) == 1
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == {"winner": winners[0]}


async def test_a_burst_beyond_the_connection_pool_waits_instead_of_failing(store: Store) -> None:
    """A monitor round over thousands of targets puts hundreds of writes in flight at once:
    redis-py's default pool refused the 101st ("Too many connections"); each one lands."""
    await asyncio.gather(*(store.put("burst", f"k{i}", {"i": i}) for i in range(400)))
    stored = await asyncio.gather(*(store.get("burst", f"k{i}") for i in range(400)))
    assert [s.value["i"] for s in stored if s is not None] == list(range(400))


async def test_two_instances_swap_exactly_once(open_another: OpenStore) -> None:
    """Two replicas on one Redis (or two connections on one SQLite file)."""
    one, two = open_another(), open_another()
    version = await one.put("ns", "a", {"winner": None})
    results = await asyncio.gather(
        *(
            replica.swap("ns", "a", version, {"winner": i})
            for i in range(50)
            for replica in (one, two)
        )
    )
    assert sum(result is not None for result in results) == 1


async def test_sqlite_stores_opening_a_new_file_at_once_all_work(tmp_path: Path) -> None:
    """Replicas (or the bot and the CLI) starting together on a file nobody has opened yet
    race to set it up (WAL, schema); none of their first calls may fail for it."""
    for attempt in range(10):
        path = tmp_path / f"fresh-{attempt}.sqlite3"
        stores = [SQLiteStore(path) for _ in range(6)]
        try:
            await asyncio.gather(*(s.put("ns", f"k{i}", {"i": i}) for i, s in enumerate(stores)))
            found = await stores[0].get_many("ns", [f"k{i}" for i in range(6)])
        finally:
            for opened in stores:
                await opened.close()
        assert {key: doc.value for key, doc in found.items()} == {
            f"k{i}": {"i": i} for i in range(6)
        }


def _count(doc: JSONDoc | None) -> JSONDoc:
    return {"n": (doc or {"n": 0})["n"] + 1}


async def test_update_creates_changes_or_writes_nothing(store: Store) -> None:
    assert await store.update("ns", "a", _count) == Updated(None, {"n": 1})
    assert await store.update("ns", "a", _count) == Updated({"n": 1}, {"n": 2})
    assert await store.update("ns", "a", lambda doc: None) == Updated({"n": 2}, None)
    assert await store.update("ns", "missing", lambda doc: None) == Updated(None, None)
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == {"n": 2}
    assert await store.get("ns", "missing") is None


async def test_update_refused_by_the_change_writes_nothing(store: Store) -> None:
    await store.put("ns", "a", {"n": 1})

    def refuse(doc: JSONDoc | None) -> JSONDoc:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        await store.update("ns", "a", refuse)
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == {"n": 1}


async def test_concurrent_updates_from_two_instances_lose_no_change(
    open_another: OpenStore,
) -> None:
    one, two = open_another(), open_another()
    await asyncio.gather(
        *(replica.update("ns", "a", _count) for _ in range(20) for replica in (one, two))
    )
    stored = await one.get("ns", "a")
    assert stored is not None and stored.value == {"n": 40}


async def test_update_gives_up_after_its_attempts_and_then_wrote_nothing(
    open_another: OpenStore,
) -> None:
    """With one attempt each, concurrent updates lose; each one lost left the count alone."""
    one, two = open_another(), open_another()
    await one.put("ns", "a", {"n": 0})
    results = await asyncio.gather(
        *(
            replica.update("ns", "a", _count, attempts=1)
            for _ in range(20)
            for replica in (one, two)
        )
    )
    stored = await one.get("ns", "a")
    assert stored is not None
    assert stored.value["n"] == sum(result is not None for result in results)
    assert await one.update("ns", "a", _count, attempts=0) is None


async def test_update_sets_a_ttl_on_create_and_keeps_it_on_change(store: Store) -> None:
    await store.update("ns", "a", _count, ttl=TTL)
    await store.update("ns", "a", _count)
    stored = await store.get("ns", "a")
    assert stored is not None and stored.value == {"n": 2}
    await asyncio.sleep(PAST_TTL)
    assert await store.get("ns", "a") is None


async def test_delete(store: Store) -> None:
    await store.put("ns", "a", {})
    assert await store.delete("ns", "a")
    assert not await store.delete("ns", "a")
    assert await store.get("ns", "a") is None
    assert await store.create("ns", "a", {})


async def test_scan_lists_live_documents_of_the_namespace(store: Store) -> None:
    va = await store.put("ns", "a", {"k": "a"})
    vb = await store.put("ns", "b", {"k": "b"}, ttl=60)
    await store.put("ns", "gone", {})
    await store.delete("ns", "gone")
    await store.put("other", "c", {})
    found = await store.scan("ns")
    assert found.keys() == {"a", "b"}
    assert (found["a"].value, found["a"].version) == ({"k": "a"}, va)
    assert found["b"].version == vb
    assert await store.scan("empty") == {}


async def test_scan_pages_read_a_large_namespace_a_page_at_a_time(store: Store) -> None:
    """1,200 documents (past Redis' small-set encoding, so SSCAN really pages), one deleted,
    one expired, one elsewhere: each live one comes once, in pages near the size asked for,
    through the redacting store too."""
    await store.commit([Write("big", f"k{i:04}", {"i": i}) for i in range(1200)])
    await store.delete("big", "k0007")
    await store.put("big", "short", {"i": -1}, ttl=TTL)
    await store.put("other", "k0001", {"i": -2})
    await asyncio.sleep(PAST_TTL)
    redacting = RedactingStore(store, Redactor(["x-secret"]))
    for reader in (store, redacting):
        seen: list[int] = []
        sizes = []
        async for page in reader.scan_pages("big", count=100):
            sizes.append(len(page))
            seen += [doc.value["i"] for doc in page.values()]
        assert sorted(seen) == [i for i in range(1200) if i != 7]
        assert len(sizes) >= 6 and max(sizes) <= 300
    first, cursor = await store.scan_page("big", None, 100)
    assert first and cursor is not None
    following, _ = await store.scan_page("big", cursor, 100)
    assert not first.keys() & following.keys()
    assert await store.scan_page("empty", None, 100) == ({}, None)


# --------------------------------------------------------------------------- expiry


async def test_documents_expire(store: Store) -> None:
    """All ttl cases share one sleep to keep the suite fast."""
    assert await store.create("ns", "expiring", {}, ttl=TTL)
    v_kept = await store.put("ns", "kept", {}, ttl=TTL)
    assert await store.swap("ns", "kept", v_kept, {"swapped": True}) is not None  # keeps ttl
    v_extended = await store.put("ns", "extended", {}, ttl=TTL)
    assert await store.swap("ns", "extended", v_extended, {}, ttl=60) is not None
    await store.put("ns", "persisted", {}, ttl=TTL)
    await store.put("ns", "persisted", {})  # put without ttl drops the old one
    v_stale = await store.put("ns", "stale", {}, ttl=TTL)

    await asyncio.sleep(PAST_TTL)

    for key in ("expiring", "kept", "stale"):
        assert await store.get("ns", key) is None, key
    assert (await store.scan("ns")).keys() == {"extended", "persisted"}
    assert await store.swap("ns", "stale", v_stale, {}) is None
    assert not await store.delete("ns", "stale")
    assert await store.create("ns", "expiring", {"again": True})
    stored = await store.get("ns", "expiring")
    assert stored is not None and stored.value == {"again": True}


# --------------------------------------------------------------------------- batches


async def test_get_many_reads_the_live_documents_among_the_keys(store: Store) -> None:
    first = await store.put("ns", "a", {"n": 1})
    second = await store.put("ns", "b", {"n": 2})
    await store.put("other", "c", {"n": 3})
    await store.put("ns", "gone", {"n": 4}, ttl=TTL)
    await asyncio.sleep(PAST_TTL)
    found = await store.get_many("ns", ["a", "b", "c", "gone", "missing", "a"])
    assert found == {"a": Versioned({"n": 1}, first), "b": Versioned({"n": 2}, second)}
    assert await store.get_many("ns", []) == {}


async def test_commit_applies_every_write_and_append_at_once(store: Store) -> None:
    old = await store.put("ns", "old", {"n": 0})
    await store.put("ns", "kept", {"n": 0}, ttl=60)
    versions = await store.commit([
        Write("ns", "new", {"n": 1}, expect="absent", ttl=60),
        Write("ns", "old", {"n": 2}, expect=old),
        Write("ns", "any", {"n": 3}),
        Append("log", "a", {"i": 1}),
        Append("log", "a", {"i": 2}, keep=1),
    ])  # fmt: skip
    assert versions is not None and versions[3:] == [0, 0]
    assert versions[0] > old and len(set(versions[:3])) == 3
    found = await store.get_many("ns", ["new", "old", "any"])
    assert {k: (v.value, v.version) for k, v in found.items()} == {
        "new": ({"n": 1}, versions[0]), "old": ({"n": 2}, versions[1]),
        "any": ({"n": 3}, versions[2]),
    }  # fmt: skip
    assert await store.tail("log", "a", 10) == [{"i": 2}]
    assert set(await store.scan("ns")) == {"new", "old", "any", "kept"}


async def test_commit_writes_nothing_when_one_condition_fails(store: Store) -> None:
    version = await store.put("ns", "a", {"n": 1})
    await store.put("ns", "taken", {"n": 1})
    for failing in (Write("ns", "taken", {"n": 2}, expect="absent"),
                    Write("ns", "a", {"n": 2}, expect=version + 1000),
                    Write("ns", "missing", {"n": 2}, expect=version)):  # fmt: skip
        ops: list[Op] = [
            Write("ns", "fresh", {"n": 2}, expect="absent"),
            Append("log", "a", {"i": 1}),
            Write("ns", "a" if failing.key != "a" else "b", {"n": 2}, expect="any"),
            failing,
        ]
        assert await store.commit(ops) is None
    assert await store.get("ns", "fresh") is None and await store.get("ns", "b") is None
    assert await store.get("ns", "a") == Versioned({"n": 1}, version)
    assert await store.tail("log", "a", 10) == []


async def test_commit_creates_over_an_expired_document_and_keeps_or_sets_ttls(
    store: Store,
) -> None:
    await store.put("ns", "expired", {"n": 1}, ttl=TTL)
    version = await store.put("ns", "short", {"n": 1}, ttl=TTL)
    await store.put("ns", "persist", {"n": 1}, ttl=TTL)
    await asyncio.sleep(TTL / 3)
    versions = await store.commit([
        Write("ns", "expired", {"n": 2}, expect="absent"),
        Write("ns", "short", {"n": 2}, expect=version),  # keeps its ttl
        Write("ns", "persist", {"n": 2}, expect="any"),  # a put drops it
    ])  # fmt: skip
    assert versions is None  # "expired" has not expired yet
    await asyncio.sleep(PAST_TTL - TTL / 3)
    assert await store.commit([Write("ns", "expired", {"n": 2}, expect="absent")]) is not None
    version = await store.put("ns", "short", {"n": 1}, ttl=TTL)
    await store.put("ns", "persist", {"n": 1}, ttl=TTL)
    assert await store.commit([
        Write("ns", "short", {"n": 2}, expect=version),
        Write("ns", "persist", {"n": 2}, expect="any"),
    ]) is not None  # fmt: skip
    await asyncio.sleep(PAST_TTL)
    assert set(await store.scan("ns")) == {"expired", "persist"}


async def test_concurrent_commits_from_one_version_exactly_one_wins(
    open_another: OpenStore,
) -> None:
    first, second = open_another(), open_another()
    version = await first.put("ns", "a", {"n": 0})
    results = await asyncio.gather(*(
        (first if i % 2 else second).commit([
            Write("ns", "a", {"n": i}, expect=version), Append("log", "a", {"i": i}),
        ])
        for i in range(10)
    ))  # fmt: skip
    winners = [i for i, r in enumerate(results) if r is not None]
    assert len(winners) == 1
    assert await first.tail("log", "a", 10) == [{"i": winners[0]}]


async def test_commit_conditions_write_nothing_and_fail_the_commit_when_changed(
    store: Store,
) -> None:
    first = await store.put("silences", "s1", {"n": 1})
    scanned = {k: v.version for k, v in (await store.scan("silences")).items()}
    storm = await store.put("storms", "chat", {"n": 1})

    def ops(storm_version: int | Literal["absent"], key: str) -> list[Op]:
        return [
            Expect("storms", "chat", storm_version),
            ExpectScan("silences", scanned),
            Write("alerts", key, {"n": 1}),
        ]

    assert await store.commit(ops(storm, "a")) == [0, 0, ANY]
    assert await store.get("storms", "chat") == Versioned({"n": 1}, storm)  # not written
    assert await store.commit(ops("absent", "b")) is None  # the storm exists
    assert await store.commit([Expect("storms", "none", "absent")]) == [0]
    storm = await store.put("storms", "chat", {"n": 2})
    assert await store.commit(ops(storm - 1, "c")) is None
    await store.put("silences", "s2", {"n": 1})  # a new silence
    assert await store.commit(ops(storm, "d")) is None
    await store.delete("silences", "s2")
    await store.put("silences", "s1", {"n": 2})  # a changed one
    assert await store.commit(ops(storm, "e")) is None
    scanned = {k: v.version for k, v in (await store.scan("silences")).items()}
    assert scanned["s1"] > first
    await store.put("silences", "gone", {"n": 1}, ttl=TTL)
    await asyncio.sleep(PAST_TTL)  # an expired silence is no silence
    assert await store.commit(ops(storm, "f")) is not None
    await store.delete("silences", "s1")  # a removed one
    assert await store.commit(ops(storm, "g")) is None
    assert await store.commit([ExpectScan("silences", {}), ExpectScan("empty", {})]) == [0, 0]
    assert set(await store.scan("alerts")) == {"a", "f"}


async def test_commit_refuses_what_no_backend_could_apply(store: Store) -> None:
    refused: list[list[Op]] = [
        [Write("ns", "a", {}), Write("ns", "a", {})],
        [Write("ns", "a", {}, ttl=0)],
        [Append("log", "a", {}, keep=0)],
    ]
    for ops in refused:
        with pytest.raises(ValueError):
            await store.commit(ops)
    assert await store.get("ns", "a") is None
    assert await store.commit([]) == []


async def test_a_redacting_store_redacts_every_write_and_entry_of_a_commit(store: Store) -> None:
    secret = "hunter2-literal-secret"
    redacting = RedactingStore(store, Redactor([secret]))
    text = f"db down, password {secret}"
    for _ in range(2):  # the second time from memory
        assert await redacting.commit([
            Write("alerts", "fp", {"summary": text, "fingerprint": secret, "labels": {"a": text}}),
            Append("alert-events", "all", {"events": [{"summary": text}]}),
            Write("requests", "r", {"argv": [secret]}),  # instructions run exactly as stored
        ]) is not None  # fmt: skip
        stored = await store.get("alerts", "fp")
        assert stored is not None and secret not in str(stored.value["summary"])
        assert stored.value["fingerprint"] == secret  # a key other documents point at
        assert secret not in str(stored.value["labels"])
        assert secret not in str(await store.tail("alert-events", "all", 10))
        request = await store.get("requests", "r")
        assert request is not None and request.value == {"argv": [secret]}


# --------------------------------------------------------------------------- logs


async def test_append_and_tail_newest_first(store: Store) -> None:
    assert await store.tail("log", "a", 5) == []
    for i in range(5):
        await store.append("log", "a", {"i": i})
    await store.append("log", "b", {"i": 99})
    assert await store.tail("log", "a", 3) == [{"i": 4}, {"i": 3}, {"i": 2}]
    assert await store.tail("log", "a", 100) == [{"i": i} for i in (4, 3, 2, 1, 0)]
    assert await store.tail("log", "a", 0) == []


async def test_append_keep_caps_the_log(store: Store) -> None:
    for i in range(10):
        await store.append("log", "capped", {"i": i}, keep=3)
    assert await store.tail("log", "capped", 10) == [{"i": 9}, {"i": 8}, {"i": 7}]
    with pytest.raises(ValueError):
        await store.append("log", "capped", {}, keep=0)


async def test_a_reopened_log_is_capped_to_keep(open_another: OpenStore) -> None:
    first = open_another()
    for i in range(6):
        await first.append("log", "a", {"i": i})
    await first.close()
    again = open_another()
    await again.append("log", "a", {"i": 6}, keep=3)
    assert await again.tail("log", "a", 10) == [{"i": 6}, {"i": 5}, {"i": 4}]
    await again.append("log", "a", {"i": 7}, keep=3)
    assert await again.tail("log", "a", 10) == [{"i": 7}, {"i": 6}, {"i": 5}]


# --------------------------------------------------------------------------- locks


async def test_lock_acquire_release(store: Store) -> None:
    assert await store.acquire("target:web", "replica-1", 60) is None
    assert await store.acquire("target:web", "replica-2", 60) == "replica-1"
    assert await store.acquire("target:web", "replica-1", 60) is None  # renews
    assert not await store.release("target:web", "replica-2")
    assert await store.acquire("target:db", "replica-2", 60) is None  # other names are free
    assert await store.release("target:web", "replica-1")
    assert not await store.release("target:web", "replica-1")
    assert await store.acquire("target:web", "replica-2", 60) is None


async def test_lock_lease_expires(store: Store) -> None:
    assert await store.acquire("lease", "dead", TTL) is None
    assert await store.acquire("renewed", "alive", TTL) is None
    await asyncio.sleep(TTL / 2)
    assert await store.acquire("renewed", "alive", 60) is None
    await asyncio.sleep(PAST_TTL - TTL / 2)
    assert not await store.release("lease", "dead")
    assert await store.acquire("lease", "new", 60) is None
    assert await store.acquire("renewed", "other", 60) == "alive"


# --------------------------------------------------------------------------- lifecycle


async def test_data_survives_reopening(open_another: OpenStore) -> None:
    first = open_another()
    version = await first.put("ns", "a", {"n": 1})
    await first.append("log", "a", {"i": 1})
    assert await first.acquire("lock", "me", 60) is None
    await first.close()

    again = open_another()
    stored = await again.get("ns", "a")
    assert stored is not None and stored.value == {"n": 1} and stored.version == version
    assert await again.put("ns", "b", {}) > version
    assert await again.tail("log", "a", 10) == [{"i": 1}]
    assert await again.acquire("lock", "other", 60) == "me"


async def test_invalid_ttl_is_refused(store: Store) -> None:
    with pytest.raises(ValueError):
        await store.put("ns", "a", {}, ttl=0)
    with pytest.raises(ValueError):
        await store.acquire("lock", "me", -1)


async def test_factory_picks_the_configured_backend(tmp_path: Path) -> None:
    sqlite = open_store(Settings(data_dir=tmp_path))
    assert isinstance(sqlite, SQLiteStore)
    assert sqlite.path == tmp_path / "opsbot.sqlite3"
    assert not sqlite.path.exists()  # nothing is opened before the first call

    url = SecretStr("redis://127.0.0.1:1/0")  # nothing listens there: it must not connect
    backend = StoreSettings(backend="redis", redis_url=url, prefix="p")
    redis = open_store(Settings(data_dir=tmp_path, store=backend))
    assert isinstance(redis, RedisStore) and redis.prefix == "p"
    await redis.close()
