"""Reply prompts in the store, on SQLite and a real Redis: found by a restarted opsbot or
another replica once shown, never before, and gone after their TTL."""

from __future__ import annotations

import asyncio

import pytest

from opsbot.state import prompts
from opsbot.state.prompts import Prompt
from tests.state.test_store import PAST_TTL, TTL, OpenStore, open_another

__all__ = ["open_another"]
CHAT = -1001000000042
UPDATE = Prompt("incident", ("update", "INC-3"))


async def test_a_shown_prompt_is_found_by_another_replica(open_another: OpenStore) -> None:
    asking, other = open_another(), open_another()
    await prompts.expect(asking, 4_000_000_001, UPDATE)
    assert await prompts.answering(other, CHAT, 77) is None  # not delivered yet
    await prompts.shown(other, 4_000_000_001, CHAT, 77)  # whichever replica delivered it
    assert await prompts.answering(open_another(), CHAT, 77) == UPDATE
    assert await prompts.answering(other, CHAT, 78) is None  # a reply to another message
    assert await prompts.answering(other, CHAT + 1, 77) is None  # the same id elsewhere


async def test_a_message_that_was_never_a_prompt_finds_nothing(open_another: OpenStore) -> None:
    store = open_another()
    await prompts.shown(store, 4_000_000_002, CHAT, 79)  # no prompt filed under that ref
    assert await prompts.answering(store, CHAT, 79) is None


async def test_a_prompt_expires(open_another: OpenStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prompts, "TTL", TTL)
    store = open_another()
    await prompts.expect(store, 4_000_000_003, UPDATE)
    await prompts.shown(store, 4_000_000_003, CHAT, 80)
    assert await prompts.answering(store, CHAT, 80) == UPDATE
    await asyncio.sleep(PAST_TTL)  # expiry is time passing: nothing else to wait on
    assert await prompts.answering(store, CHAT, 80) is None
