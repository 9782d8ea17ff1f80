"""Slots and their clocks: opsbot's own queueing is never counted as a target being slow."""

from __future__ import annotations

import asyncio
import time

import pytest

from opsbot.reach.budget import Slots, clock, deadline

HELD = 0.4  # how long the one slot is busy with someone else's work
BUDGET = 0.25  # a deadline shorter than that wait


async def _busy(slots: Slots, holding: asyncio.Event) -> None:
    async with slots.hold():
        holding.set()
        await asyncio.sleep(HELD)  # the other holder's work


async def _held_elsewhere() -> tuple[Slots, asyncio.Task[None]]:
    """One slot, held by another task for ``HELD`` seconds from now (that task)."""
    slots = Slots(1, "test")
    holding = asyncio.Event()
    other = asyncio.create_task(_busy(slots, holding))
    await holding.wait()
    return slots, other


async def test_a_slot_wait_counts_against_neither_deadline_nor_latency() -> None:
    slots, other = await _held_elsewhere()
    started = time.monotonic()
    async with deadline(BUDGET) as outer:  # a target's budget
        with clock() as inner:  # a check's latency
            async with slots.hold():
                work = time.monotonic()
                await asyncio.sleep(0.05)
                worked = time.monotonic() - work
    waited = time.monotonic() - started
    await other
    assert waited >= HELD  # it did wait for the slot, longer than its deadline
    assert inner.elapsed() == pytest.approx(worked, abs=0.03)
    assert outer.elapsed() < BUDGET


async def test_past_the_slot_the_deadline_holds() -> None:
    slots, other = await _held_elsewhere()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with deadline(BUDGET), slots.hold():
            await asyncio.Event().wait()  # a target that never answers
    spent = time.monotonic() - started
    await other
    assert spent == pytest.approx(HELD + BUDGET, abs=0.15)  # the wait, then its own budget


async def test_slots_cap_holders_and_leave_others_alone() -> None:
    slots = Slots(3, "test")
    inside = 0
    most = 0

    async def one() -> None:
        nonlocal inside, most
        async with slots.hold():
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    await asyncio.gather(*(one() for _ in range(20)))
    assert most == 3
