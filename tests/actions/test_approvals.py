"""The approval state machine over both real store backends: who may decide, and exactly once."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from opsbot.actions.approvals import ID_ALPHABET, NAMESPACE, Approvals, Request, Status
from opsbot.config import ApprovalPolicy, Person, Role
from opsbot.state.store import Store
from tests.factories import backend_store
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
    prefix = f"approvals-test-{next(_prefixes)}"
    async with backend_store(request.param, tmp_path, redis_server.url, prefix) as opened:
        yield opened


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
    assert filed.status is Status.pending and len(filed.id) == 6

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


async def test_unknown_requests_are_refused_by_name(store: Store) -> None:
    decision = await Approvals(store, ApprovalPolicy()).decide("abc234", ALICE, approve=True)
    assert decision.request is None and not decision.execute
    assert decision.message == "no request ABC234"


async def test_ids_can_be_read_off_a_phone_and_typed_in_any_case(store: Store) -> None:
    """Six characters, none of 0 O 1 I L; `qnvmm7` names `QNVMM7`."""
    approvals = Approvals(store, ApprovalPolicy())
    ids = [(await file_request(approvals)).id for _ in range(40)]
    assert len(set(ids)) == 40
    assert all(len(i) == 6 and set(i) <= set(ID_ALPHABET) for i in ids), ids
    assert not set("".join(ids)) & set("0O1IL") and not set(ID_ALPHABET) & set("0O1IL")
    typed = ids[0].lower()
    found = await approvals.get(f" {typed} ")
    assert found is not None and found.id == ids[0]
    won = await approvals.decide(typed, ALICE, approve=True, now=1001)
    assert won.execute and won.request is not None and won.request.id == ids[0]


async def test_a_request_filed_before_ids_were_case_insensitive_still_decides(
    store: Store,
) -> None:
    """An old card's button carries a mixed-case id: it is still found, exactly."""
    approvals = Approvals(store, ApprovalPolicy())
    filed = await file_request(approvals)
    old = Request.from_doc({**filed.to_doc(), "id": "qNVMm7ft"})
    await store.create(NAMESPACE, old.id, old.to_doc())
    won = await approvals.decide("qNVMm7ft", ALICE, approve=True, now=1001)
    assert won.execute and won.request is not None and won.request.id == "qNVMm7ft"


async def test_an_expired_request_says_when_it_expired(store: Store) -> None:
    approvals = Approvals(store, ApprovalPolicy(ttl=60))
    now = time.time()
    today = await file_request(approvals, now=now - 120)
    late = await approvals.decide(today.id.lower(), ALICE, approve=True, now=now)
    at = time.strftime("%H:%M", time.gmtime(today.expires))
    assert late.message == f"{today.id} expired at {at} UTC.", late.message
    again = await approvals.decide(today.id, BOB, approve=True, now=now)
    assert again.message == late.message  # still says so once it is marked expired

    days_ago = now - 3 * 86400
    old = await file_request(approvals, now=days_ago)
    late = await approvals.decide(old.id, ALICE, approve=True, now=now)
    day = time.strftime("%-d %b", time.gmtime(old.expires))
    assert f"{old.id} expired at {day} " in late.message, late.message
