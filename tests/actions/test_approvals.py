"""The approval state machine over both real store backends: who may decide, and exactly once."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from opsbot.actions.approvals import Approvals, Request, Status
from opsbot.config import ApprovalPolicy, Person, Role
from opsbot.state.store import Store
from opsbot.state.store.redis import RedisStore
from opsbot.state.store.sqlite import SQLiteStore
from tests.lab.redis import RedisServer

OSCAR = Person(id=4, name="oscar", role=Role.operator)
ALICE = Person(id=1, name="alice", role=Role.admin)
BOB = Person(id=2, name="bob", role=Role.admin)
VIC = Person(id=3, name="vic", role=Role.viewer)

_prefixes = itertools.count()


@pytest_asyncio.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "state.sqlite3")
    else:
        opened = RedisStore(redis_server.url, prefix=f"approvals-test-{next(_prefixes)}")
    try:
        yield opened
    finally:
        await opened.close()


async def file_request(
    approvals: Approvals, requester: Person = OSCAR, now: float = 1000.0
) -> Request:
    return await approvals.create(
        action="restart", target="web", args=(), steps=("Docker API: restart web",),
        note="", payload={}, requester=requester, chat_id=-100, now=now,
    )  # fmt: skip


async def test_an_admin_other_than_the_requester_approves(store: Store) -> None:
    approvals = Approvals(store, ApprovalPolicy())
    filed = await file_request(approvals)
    assert filed.status is Status.pending and len(filed.id) >= 8

    operator = await approvals.decide(filed.id, OSCAR, approve=True, now=1001)
    viewer = await approvals.decide(filed.id, VIC, approve=True, now=1001)
    assert not operator.changed and "Only admins" in operator.message
    assert not viewer.changed

    won = await approvals.decide(filed.id, ALICE, approve=True, now=1002)
    assert won.execute and won.request is not None and won.request.status is Status.approved
    late = await approvals.decide(filed.id, BOB, approve=True, now=1003)
    assert not late.execute and late.message == "Already approved by alice."


async def test_self_approval_is_refused_unless_the_policy_allows_it(store: Store) -> None:
    strict = Approvals(store, ApprovalPolicy())
    filed = await file_request(strict, requester=ALICE)
    refused = await strict.decide(filed.id, ALICE, approve=True, now=1001)
    assert not refused.execute and "your own request" in refused.message

    lenient = Approvals(store, ApprovalPolicy(allow_self_approval=True))
    filed = await file_request(lenient, requester=ALICE)
    assert (await lenient.decide(filed.id, ALICE, approve=True, now=1001)).execute


async def test_expired_and_denied_requests_never_run(store: Store) -> None:
    approvals = Approvals(store, ApprovalPolicy(ttl=60))
    expired = await file_request(approvals, now=1000)
    late = await approvals.decide(expired.id, ALICE, approve=True, now=1061)
    assert not late.execute and "expired" in late.message
    again = await approvals.get(expired.id)
    assert again is not None and again.status is Status.expired

    denied = await file_request(approvals, now=1000)
    no = await approvals.decide(denied.id, BOB, approve=False, now=1001)
    assert no.changed and no.request is not None and no.request.status is Status.denied
    yes = await approvals.decide(denied.id, ALICE, approve=True, now=1002)
    assert not yes.execute and yes.message == "Already denied by bob."


async def test_two_approvers_when_the_policy_says_so(store: Store) -> None:
    approvals = Approvals(store, ApprovalPolicy(required=2))
    filed = await file_request(approvals)
    first = await approvals.decide(filed.id, ALICE, approve=True, now=1001)
    assert not first.execute and "1 more needed" in first.message
    again = await approvals.decide(filed.id, ALICE, approve=True, now=1002)
    assert not again.execute and "already approved" in again.message
    second = await approvals.decide(filed.id, BOB, approve=True, now=1003)
    assert second.execute


async def test_the_requester_may_cancel(store: Store) -> None:
    approvals = Approvals(store, ApprovalPolicy())
    filed = await file_request(approvals)
    cancelled = await approvals.decide(filed.id, OSCAR, approve=False, now=1001)
    assert cancelled.changed and "Cancelled by oscar" in cancelled.message


async def test_concurrent_taps_execute_exactly_once(store: Store) -> None:
    approvals = Approvals(store, ApprovalPolicy())
    filed = await file_request(approvals)
    taps = [
        approvals.decide(filed.id, ALICE if i % 2 else BOB, approve=True, now=1001)
        for i in range(50)
    ]
    decisions = await asyncio.gather(*taps)
    assert sum(d.execute for d in decisions) == 1


async def test_unknown_requests_are_refused(store: Store) -> None:
    decision = await Approvals(store, ApprovalPolicy()).decide("nope", ALICE, approve=True)
    assert decision.request is None and not decision.execute
