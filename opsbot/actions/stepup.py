"""Step-up approval: a second factor from the approver, and per-target approval rules.

A chat identity alone is only as strong as the phone that holds it. Where ``approvals.step_up:
totp`` applies (globally, per action with ``step_up_actions``, or per target), the approval
that would start an action does not start it: the approver first sends a TOTP code from their
authenticator to opsbot in a private chat, within ``step_up_timeout`` (60 s). Codes are
single-use (a replay is refused); a wrong or replayed code is refused and audited; three in a
row lock that approver out of step-up for 15 minutes.

TOTP secrets are enrolled with ``opsbot totp enroll NAME`` and kept in the store encrypted with
a Fernet key (``approvals.totp_key`` / ``totp_key_file`` / ``OPSBOT_APPROVALS__TOTP_KEY``).

``TargetRules`` also carries the per-target ``required`` approver count and the
``allowed_hours`` change window (UTC) that approvals.py consults on every tap.

Nothing here knows Telegram: handlers/stepup.py drives it from the chat.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pyotp
from cryptography.fernet import Fernet, InvalidToken

from opsbot.config import Person, Settings, parse_window
from opsbot.errors import ConfigError
from opsbot.state.audit import Audit
from opsbot.state.store import Store

SECRETS = "totp"  # person id → {"name", "secret": Fernet token}; kept exact by RedactingStore
PENDING = "stepup"  # approver id → {"request", "deadline"}
USED = "totp-used"  # "id:code" → {} for a little longer than a code lives
FAILURES = "totp-failures"  # approver id → {"count"}
LOCKS = "totp-lock"  # approver id → {"until"}
MAX_WRONG = 3
LOCK_SECONDS = 15 * 60.0
ISSUER = "opsbot"


# --------------------------------------------------------------------------- per-target rules


class TargetRules:
    """The approval rules of one target and action: approvers, change window, step-up."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def _own(self, target: str) -> tuple[int | None, str | None, str | None]:
        config = self.settings.targets.get(target)
        rules = config.approvals if config is not None else None
        if rules is None:
            return None, None, None
        return rules.required, rules.step_up, rules.allowed_hours

    def required(self, target: str, action: str) -> int:
        own = self._own(target)[0]
        return own if own is not None else self.settings.approvals.required

    def step_up(self, target: str, action: str, default: bool = False) -> bool:
        """The target's own setting, else the global one, else the action's ``default``."""
        policy = self.settings.approvals
        own = self._own(target)[1]
        if own is not None:
            return own == "totp"
        if policy.step_up != "totp":
            return default
        return not policy.step_up_actions or action in policy.step_up_actions

    def refusal(self, target: str, action: str, now: float) -> str | None:
        window = self._own(target)[2] or self.settings.approvals.allowed_hours
        if window is None or in_window(window, now):
            return None
        return f"Outside the change window of {target} ({window} UTC): not now."


def in_window(window: str, now: float) -> bool:
    start, end = parse_window(window)
    tm = time.gmtime(now)
    minute = tm.tm_hour * 60 + tm.tm_min
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps past midnight


# --------------------------------------------------------------------------- TOTP


def _fernet(settings: Settings) -> Fernet:
    key = settings.approvals.totp_key
    if key is None:
        raise ConfigError(
            "approvals.totp_key is not set (or totp_key_file / OPSBOT_APPROVALS__TOTP_KEY); "
            "make one with `opsbot totp key`"
        )
    try:
        return Fernet(key.get_secret_value().encode())
    except ValueError:
        raise ConfigError("approvals.totp_key is not a Fernet key (`opsbot totp key`)") from None


def new_key() -> str:
    return Fernet.generate_key().decode()


@dataclass(frozen=True, slots=True)
class Answer:
    """What to tell the approver; the request to run now, or the one that can no longer run."""

    message: str
    run: str | None = None
    failed: str | None = None


@dataclass(frozen=True, slots=True)
class Enrolment:
    person: Person
    uri: str  # otpauth://totp/opsbot:NAME?secret=…&issuer=opsbot


async def enroll(settings: Settings, store: Store, name: str) -> Enrolment:
    """A new TOTP secret for a configured person (replacing any old one), stored encrypted."""
    person = next((p for p in settings.people if p.name.lower() == name.lower()), None)
    if person is None:
        known = ", ".join(p.name for p in settings.people) or "nobody"
        raise ConfigError(f"no person named {name!r} in people: ({known})")
    secret = pyotp.random_base32()
    token = _fernet(settings).encrypt(secret.encode()).decode()
    await store.put(SECRETS, str(person.id), {"name": person.name, "secret": token})
    await store.delete(LOCKS, str(person.id))
    await store.delete(FAILURES, str(person.id))
    uri = pyotp.TOTP(secret).provisioning_uri(name=person.name, issuer_name=ISSUER)
    return Enrolment(person, uri)


async def enrolled(store: Store, person: Person) -> bool:
    return await store.get(SECRETS, str(person.id)) is not None


class StepUp:
    """Challenges and answers, in the store (so any replica can take the code)."""

    def __init__(self, settings: Settings, store: Store, audit: Audit) -> None:
        self.settings = settings
        self.store = store
        self.audit = audit
        self.rules = TargetRules(settings)

    async def locked(self, person: Person, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        lock = await self.store.get(LOCKS, str(person.id))
        return lock is not None and float(lock.value.get("until", 0)) > now

    async def challenge(self, person: Person, request_id: str, now: float | None = None) -> float:
        """Wait for ``person``'s code for ``request_id``; returns the deadline."""
        now = time.time() if now is None else now
        timeout = self.settings.approvals.step_up_timeout
        deadline = now + timeout
        doc = {"request": request_id, "deadline": deadline}
        await self.store.put(PENDING, str(person.id), doc, ttl=timeout + 60)
        await self.audit.record("step-up", who=person.name, user=person.id, request=request_id,
                                outcome="challenged")  # fmt: skip
        return deadline

    async def expire(self, person: Person, request_id: str) -> bool:
        """Give up on the code; True when this call took the challenge away (run nothing)."""
        stored = await self.store.get(PENDING, str(person.id))
        if stored is None or stored.value.get("request") != request_id:
            return False
        if not await self.store.delete(PENDING, str(person.id)):
            return False
        await self.audit.record("step-up", who=person.name, user=person.id, request=request_id,
                                outcome="expired")  # fmt: skip
        return True

    async def answer(self, person: Person, code: str, now: float | None = None) -> Answer:
        """Check a code; returns what to tell the person and the request id to run, if any."""
        now = time.time() if now is None else now
        key = str(person.id)
        lock = await self.store.get(LOCKS, key)
        if lock is not None and float(lock.value.get("until", 0)) > now:
            minutes = max(1, round((float(lock.value["until"]) - now) / 60))
            await self._audit(person, None, "locked")
            return Answer(f"🔒 Step-up is locked for you for {minutes} more min.")
        pending = await self.store.get(PENDING, key)
        if pending is None or float(pending.value.get("deadline", 0)) < now:
            return Answer("No approval of yours is waiting for a code.")
        request_id = str(pending.value["request"])
        stored = await self.store.get(SECRETS, key)
        if stored is None:
            return Answer("You have no TOTP enrolled (opsbot totp enroll NAME).")
        try:
            secret = _fernet(self.settings).decrypt(stored.value["secret"].encode()).decode()
        except InvalidToken:
            return Answer("Your TOTP secret cannot be read with this key; enroll again.")
        if not pyotp.TOTP(secret).verify(code, for_time=now, valid_window=1):
            return await self._wrong(person, request_id, "wrong", now)
        if not await self.store.create(USED, f"{key}:{code}", {"at": now}, ttl=120):
            return await self._wrong(person, request_id, "replayed", now)
        if not await self.store.delete(PENDING, key):
            return Answer("That approval is no longer waiting.")
        await self.store.delete(FAILURES, key)
        await self._audit(person, request_id, "verified")
        return Answer("✅ Code accepted: running.", run=request_id)

    async def _wrong(self, person: Person, request_id: str, why: str, now: float) -> Answer:
        key = str(person.id)
        stored = await self.store.get(FAILURES, key)
        count = int(stored.value.get("count", 0)) + 1 if stored else 1
        await self._audit(person, request_id, why)
        if count >= MAX_WRONG:
            await self.store.put(LOCKS, key, {"until": now + LOCK_SECONDS}, ttl=LOCK_SECONDS)
            await self.store.delete(FAILURES, key)
            await self.store.delete(PENDING, key)
            await self._audit(person, request_id, "locked")
            message = f"❌ Code {why}. Three wrong codes: locked for 15 min; not running."
            return Answer(message, failed=request_id)
        await self.store.put(FAILURES, key, {"count": count}, ttl=LOCK_SECONDS)
        return Answer(f"❌ Code {why}; {MAX_WRONG - count} tries left.")

    async def _audit(self, person: Person, request_id: str | None, outcome: str) -> None:
        await self.audit.record("step-up", who=person.name, user=person.id, request=request_id,
                                outcome=outcome)  # fmt: skip
