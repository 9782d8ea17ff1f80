"""Two-person approval of destructive actions, as a state machine over the store.

A request is a document in the store (namespace ``requests``) under a short random id that a
person can read off a phone and type (``/approve qnvmm7``): six characters of Crockford's
base32 without the look-alikes 0, O, 1, I and L, matched case-insensitively; the buttons on
its card carry only that id. Every decision is a compare-and-set on the document's
version, so however many admins tap Approve at once, on however many replicas, exactly one
tap moves it from ``pending`` to ``approved``, and only that tap's handler runs the action.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from opsbot.config import ApprovalPolicy, Person, Role
from opsbot.render import moment
from opsbot.services import Wing
from opsbot.state import ids
from opsbot.state.store import UPDATE_ATTEMPTS, JSONDoc, Store, Updated

#: The least role that approves a request, or denies someone else's (a requester of any
#: role may cancel their own): /approve, the Approve button and ``decide`` all read this.
APPROVER = Role.admin


class Declared(Protocol):
    """The part of an action's declaration (``action.Action``) that approvals read."""

    @property
    def name(self) -> str: ...

    @property
    def approval(self) -> bool: ...

    @property
    def step_up(self) -> bool: ...


class Rules(Protocol):
    """Per-target rules on top of the policy (stepup.TargetRules): approvers needed, and
    why an approval is refused right now (outside the change window), if it is."""

    def required(self, target: str, action: str) -> int: ...

    def refusal(self, target: str, action: str, now: float) -> str | None: ...

    def step_up(self, target: str, action: str, default: bool = False) -> bool: ...


NAMESPACE = "requests"
KEEP_AFTER_EXPIRY = 7 * 86400.0  # decided requests stay readable for a week
ID_ALPHABET = ids.ALPHABET  # typed on a phone: nothing to misread or mistype
ID_LENGTH = 6  # 30**6 = 729 million ids; a collision is retried by the create-if-absent


def new_id() -> str:
    return ids.new_id(ID_LENGTH)


def canonical_id(typed: str) -> str:
    """The id as stored: what a person typed, in capitals (``qnvmm7`` is ``QNVMM7``)."""
    return typed.strip().upper()


class Status(StrEnum):
    pending = "pending"
    approved = "approved"  # claimed by one approver: running
    denied = "denied"
    expired = "expired"
    done = "done"
    failed = "failed"


@dataclass(frozen=True, slots=True)
class Actor:
    id: int | None
    name: str
    at: float


@dataclass(frozen=True, slots=True)
class Request:
    id: str
    action: str
    target: str
    args: tuple[str, ...]
    steps: tuple[str, ...]
    note: str
    requester: Actor
    chat_id: int | None
    thread_id: int | None
    expires: float
    status: Status = Status.pending
    message_id: int | None = None
    approvals: tuple[Actor, ...] = ()
    denied_by: Actor | None = None
    result: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # what exactly will run, as planned
    started: float | None = None  # when a replica began running it (set once, by CAS)

    @property
    def approved_at(self) -> float:
        return self.approvals[-1].at if self.approvals else self.requester.at

    def to_doc(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Request:
        def actor(value: dict[str, Any] | None) -> Actor | None:
            return Actor(**value) if value else None

        requester = actor(doc["requester"])
        assert requester is not None
        return cls(
            **{
                **doc,
                "args": tuple(doc["args"]),
                "steps": tuple(doc["steps"]),
                "status": Status(doc["status"]),
                "requester": requester,
                "approvals": tuple(Actor(**a) for a in doc["approvals"]),
                "denied_by": actor(doc["denied_by"]),
            }
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a tap did: ``execute`` is True for exactly one approver of a request."""

    request: Request | None
    message: str
    execute: bool = False
    changed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


class Approvals:
    def __init__(self, store: Store, policy: ApprovalPolicy, rules: Rules | None = None) -> None:
        self.store = store
        self.policy = policy
        self.rules = rules

    def needs_approval(self, action: Declared) -> bool:
        """The action's declared default, unless ``approvals.<name>`` is configured."""
        configured = getattr(self.policy, action.name, None)
        return action.approval if configured is None else bool(configured)

    def needs_step_up(self, request: Request, action: Declared) -> bool:
        """A won approval of this request runs only once its approver's TOTP code arrives:
        the action's declared default, unless the step-up settings say otherwise."""
        if self.rules is None:
            return action.step_up
        return self.rules.step_up(request.target, request.action, action.step_up)

    async def create(
        self,
        *,
        action: str,
        target: str,
        args: tuple[str, ...],
        steps: tuple[str, ...],
        note: str,
        payload: dict[str, Any],
        requester: Person | Actor,
        chat_id: int | None,
        thread_id: int | None = None,
        now: float | None = None,
    ) -> Request:
        now = time.time() if now is None else now
        who = (
            requester if isinstance(requester, Actor) else Actor(requester.id, requester.name, now)
        )
        while True:
            request = Request(
                id=new_id(),
                action=action,
                target=target,
                args=args,
                steps=steps,
                note=note,
                payload=payload,
                requester=who,
                chat_id=chat_id,
                thread_id=thread_id,
                expires=now + self.policy.ttl,
            )
            ttl = self.policy.ttl + KEEP_AFTER_EXPIRY
            if await self.store.create(NAMESPACE, request.id, request.to_doc(), ttl=ttl):
                return request

    async def get(self, request_id: str) -> Request | None:
        """The request with this id, however it was typed (None when there is none)."""
        key = await self.key_of(request_id)
        stored = await self.store.get(NAMESPACE, key) if key is not None else None
        return Request.from_doc(stored.value) if stored else None

    async def key_of(self, request_id: str) -> str | None:
        """The stored id ``request_id`` names: its capitals, or (a request filed before ids
        were case-insensitive, still on an old card) exactly as given; None when neither."""
        key = canonical_id(request_id)
        if await self.store.get(NAMESPACE, key) is not None:
            return key
        if key != request_id and await self.store.get(NAMESPACE, request_id) is not None:
            return request_id
        return None

    async def attach_message(self, request_id: str, message_id: int) -> None:
        await self._update(request_id, lambda r: replace(r, message_id=message_id))

    async def claim_unreviewed(self, request_id: str) -> Request | None:
        """Move a request the policy lets through without review to approved, once."""

        def claim(request: Request) -> Request | None:
            if request.status is not Status.pending:
                return None
            return replace(request, status=Status.approved)

        return await self._update(request_id, claim, attempts=1)

    async def start(self, request_id: str, now: float | None = None) -> Request | None:
        """Mark an approved request as running, once: None when it already started (or is
        not approved). Whoever gets it runs the action; nobody else ever does."""

        def begin(request: Request) -> Request | None:
            if request.status is not Status.approved or request.started is not None:
                return None
            return replace(request, started=time.time() if now is None else now)

        return await self._update(request_id, begin)

    async def expire(self, request_id: str, now: float | None = None) -> Request | None:
        """Move a pending request past its expiry to expired, once (None when not due)."""
        when = time.time() if now is None else now

        def lapse(request: Request) -> Request | None:
            if request.status is not Status.pending or when <= request.expires:
                return None
            return replace(request, status=Status.expired)

        return await self._update(request_id, lapse)

    async def open_requests(self) -> list[Request]:
        """Requests still pending or approved (the reaper's work list)."""
        found = [Request.from_doc(v.value) for v in (await self.store.scan(NAMESPACE)).values()]
        return [r for r in found if r.status in (Status.pending, Status.approved)]

    async def finish(self, request_id: str, ok: bool, result: str) -> Request | None:
        status = Status.done if ok else Status.failed
        return await self._update(request_id, lambda r: replace(r, status=status, result=result))

    async def decide(
        self, request_id: str, person: Person, approve: bool, now: float | None = None
    ) -> Decision:
        """Record one tap; compare-and-set so concurrent taps resolve to one outcome."""
        request_id = await self.key_of(request_id) or canonical_id(request_id)
        when = time.time() if now is None else now
        decision = Decision(None, f"no request {request_id[:16]}")

        def tap(request: Request) -> Request | None:
            nonlocal decision
            refusal = self._refusal(request, person, when, approve)
            if refusal is not None:
                if request.status is Status.pending and when > request.expires:
                    expired = replace(request, status=Status.expired)
                    decision = Decision(expired, refusal, changed=True)
                    return expired
                decision = Decision(request, refusal)
                return None
            updated, message = self._tapped(request, person, approve, when)
            execute = approve and updated.status is Status.approved
            decision = Decision(updated, message, execute=execute, changed=True)
            return updated

        if await self._updated(request_id, tap) is None:
            return Decision(None, "Too many concurrent taps; try again.")
        return decision

    def _tapped(
        self, request: Request, person: Person, approve: bool, now: float
    ) -> tuple[Request, str]:
        """The request after an allowed tap, and what to tell the person."""
        actor = Actor(person.id, person.name, now)
        if not approve:
            cancelled = person.id == request.requester.id
            message = f"Cancelled by {person.name}." if cancelled else f"Denied by {person.name}."
            return replace(request, status=Status.denied, denied_by=actor), message
        approvals = (*request.approvals, actor)
        required = self._required(request)
        enough = len(approvals) >= required
        status = Status.approved if enough else Status.pending
        missing = required - len(approvals)
        message = "Approved: running." if enough else f"Approved; {missing} more needed."
        return replace(request, approvals=approvals, status=status), message

    def _refusal(self, request: Request, person: Person, now: float, approve: bool) -> str | None:
        if request.status is not Status.pending:
            by = request.approvals[-1].name if request.approvals else None
            if request.status is Status.denied and request.denied_by:
                by = request.denied_by.name
            if request.status is Status.expired:
                return f"{request.id} expired at {moment(request.expires, now)}."
            return f"Already {request.status.value}" + (f" by {by}." if by else ".")
        if now > request.expires:
            return f"{request.id} expired at {moment(request.expires, now)}."
        if not approve and person.id == request.requester.id:
            return None  # requesters may always cancel their own request
        if not person.role.allows(APPROVER):
            return "Only admins can approve or deny."
        if not approve:
            return None
        if person.id == request.requester.id and not self.policy.allow_self_approval:
            return "You cannot approve your own request; another admin must."
        if any(a.id == person.id for a in request.approvals):
            return "You already approved this request."
        if self.rules is not None:
            return self.rules.refusal(request.target, request.action, now)
        return None

    def _required(self, request: Request) -> int:
        if self.rules is None:
            return self.policy.required
        return self.rules.required(request.target, request.action)

    async def _update(
        self,
        request_id: str,
        change: Callable[[Request], Request | None],
        *,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> Request | None:
        """The request as ``change`` left it (compare-and-set); None when there is no such
        request, the change declined, or other writers kept winning for ``attempts``."""
        updated = await self._updated(request_id, change, attempts=attempts)
        if updated is None or updated.after is None:
            return None
        return Request.from_doc(updated.after)

    async def _updated(
        self,
        request_id: str,
        change: Callable[[Request], Request | None],
        *,
        attempts: int = UPDATE_ATTEMPTS,
    ) -> Updated | None:
        """``Store.update`` on a request; a missing request is never created."""

        def on_doc(doc: JSONDoc | None) -> JSONDoc | None:
            changed = None if doc is None else change(Request.from_doc(doc))
            return None if changed is None else changed.to_doc()

        return await self.store.update(NAMESPACE, request_id, on_doc, attempts=attempts)


#: The approvals in ``Services``: bound by the composition root.
APPROVALS: Wing[Approvals] = Wing("approvals")
