"""The board's buttons, through the same door as the chat's: nothing here runs an action.

A restart, rollback or backup is the chat's verb, dispatched as the person who tapped, in the
ops group: ``dispatch`` checks the role and files the request, whose approval card is posted to
the group exactly as if typed there (two-person rule, step-up and change windows apply
unchanged, in ``operations``). Approve and Deny are ``/approve ID`` and ``/deny ID``; Ack and
Silence are the alert card's buttons (``alert_tap``); Update is ``/incident update ID TEXT``.
Each answer is the chat's own words, shown on the board.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from opsbot.actions.approvals import APPROVALS
from opsbot.alerting.verbs import alert_tap
from opsbot.config import Person
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.state.outbox import Outbox
from opsbot.verbs.registry import BUTTONS, Caller, dispatch_outcome, refusal

log = logging.getLogger(__name__)

ANSWER_WITHIN = 3.0  # seconds the board waits for an answer; a long run goes on regardless
MAX_TEXT = 1000
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TARGET = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
REQUESTS = ("restart", "rollback", "backup")
DECISIONS = ("approve", "deny")
ALERT_KEYS = {"ack": "ak", "silence": "as"}


class BadAction(ValueError):
    """The body is not an action the board offers (answered 400)."""


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    text: str


def _field(body: Mapping[str, Any], key: str, pattern: re.Pattern[str]) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not pattern.match(value):
        raise BadAction(f"{key}: expected an id")
    return value


class Acting:
    """Runs the board's actions as their person; answers within ``ANSWER_WITHIN`` seconds."""

    def __init__(self, services: Services) -> None:
        self._services = services
        self._running: set[asyncio.Task[Answer]] = set()

    def _caller(self, person: Person) -> Caller:
        chat = self._services.settings.telegram.ops_chat_id
        return Caller(person.name, person.role, person.id, chat)

    async def act(self, person: Person, body: Mapping[str, Any]) -> Answer:
        """Validate the body, then hand it to the chat's verb or button (``BadAction`` if odd)."""
        what = body.get("do")
        caller = self._caller(person)
        if what in REQUESTS:
            args = [_field(body, "target", _TARGET)]
            return await self._soon(self._dispatch(caller, str(what), args))
        if what in DECISIONS:
            args = [_field(body, "request", _ID)]
            return await self._soon(self._dispatch(caller, str(what), args, post=False))
        if what in ALERT_KEYS:
            alert_id = _field(body, "alert", _ID)
            spec = BUTTONS[ALERT_KEYS[what]]
            if not caller.role.allows(spec.role):
                return Answer(False, refusal(self._services.settings, "That", spec.role))
            toast = await alert_tap(self._services, caller, ALERT_KEYS[what], alert_id)
            return Answer(True, toast)
        if what == "update":
            incident = _field(body, "incident", _ID)
            text = body.get("text")
            if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
                raise BadAction(f"text: 1 to {MAX_TEXT} characters")
            words = _CONTROL.sub(" ", text).split()
            args = ["update", incident, *words]
            return await self._dispatch(caller, "incident", args, post=False)
        raise BadAction("do: not an action the board offers")

    async def _dispatch(
        self, caller: Caller, verb: str, args: list[str], *, post: bool = True
    ) -> Answer:
        """The chat's verb; a request's card (or a result) is posted to the ops group."""
        services = self._services
        reply, outcome = await dispatch_outcome(services, caller, verb, args)
        if post and outcome == "ok" and caller.chat_id is not None:
            await self._post(caller.chat_id, reply)
        ok = outcome == "ok" and not reply.text.startswith("❌")
        return Answer(ok, reply.text.split("\n", 1)[0] if reply.request_id else reply.text)

    async def _post(self, chat_id: int, reply: Reply) -> None:
        """As the chat posts a command's answer: a card's message is recorded first."""
        ref = Outbox.new_ref()
        if reply.request_id is not None:
            await APPROVALS.of(self._services).attach_message(reply.request_id, ref)
        await self._services.notifier().send(chat_id, reply, ref=ref)

    async def _soon(self, work: Any) -> Answer:
        """The answer if it comes quickly; else the work goes on and the board says so."""
        task: asyncio.Task[Answer] = asyncio.ensure_future(work)
        self._running.add(task)
        task.add_done_callback(self._done)
        done, _ = await asyncio.wait({task}, timeout=ANSWER_WITHIN)
        if done:
            return task.result()
        return Answer(True, "Running: the ops group's card shows its progress.")

    def _done(self, task: asyncio.Task[Answer]) -> None:
        self._running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a board action failed", exc_info=task.exception())

    async def close(self) -> None:
        """Let running actions finish (up to a minute) before the pools close."""
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=60)
            for task in late:
                task.cancel()
