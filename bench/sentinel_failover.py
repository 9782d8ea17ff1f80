"""Benchmark: a Redis Sentinel failover mid-approval (``bench/failover.py --sentinel``).

One ``opsbot run`` on ``redis+sentinel://`` (the lab of tests/lab/sentinel.py: a master, a
replica, three real sentinels on loopback, down-after 1 s) and the fake Bot API. Each round
fails the master over twice, once by ``SENTINEL FAILOVER`` and once by SIGKILL (the killed
server started again, empty, before the next). Each time, four /restart cards are waiting;
at the failover Alice taps Approve on all four, then types /help after /help (each once the
last is answered) until a second after the sentinels promoted the replica. Measured: the
longest of those waits (the next command's pause), and each approval: run once, lost
(tapped, never run, the card not pending), doubled, or left pending (never run, the card
still asks).

Anchor, through the same failovers: a bare redis-py Sentinel client (``master_for``, its
default retries) writing one RPUSH after another; its longest pause and the writes it had
acknowledged that the new master does not hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from bench.scale_lab import OpsbotProcess
from tests.factories import (
    ALICE,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    base_config,
    counting_target,
    fake_bot_api,
    runs,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage
from tests.lab.ports import LabError
from tests.lab.sentinel import SentinelLab, start_sentinel_lab

APPROVALS = 4
KINDS = ("SENTINEL FAILOVER", "SIGKILL")


@dataclass
class Figures:
    pauses: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    outcomes: dict[str, list[int]] = field(
        default_factory=lambda: {k: [0, 0, 0, 0] for k in KINDS}
    )  # once, lost, doubled, left pending
    anchor_pauses: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    anchor_lost: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    anchor_writes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))


async def agreed_master(lab: SentinelLab, timeout: float = 30.0) -> int:
    """The master every sentinel names (they may disagree for a moment mid-failover)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(lab.master_port)
        except LabError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class Anchor:
    """A bare redis-py Sentinel client: RPUSH 0, 1, 2, ... and the longest gap between acks."""

    def __init__(self, lab: SentinelLab, key: str) -> None:
        self.lab, self.key = lab, key
        self.acked = 0
        self.longest = 0.0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        sentinel = Sentinel(self.lab.sentinels, socket_timeout=0.5)
        master = sentinel.master_for(self.lab.service, socket_timeout=0.5)
        last = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    await master.rpush(self.key, self.acked)
                except Exception:  # the bare client's errors: write again
                    await asyncio.sleep(0.01)
                    continue
                now = time.monotonic()
                self.longest = max(self.longest, now - last)
                last = now
                self.acked += 1
                await asyncio.sleep(0)
        finally:
            await master.aclose()
            await sentinel.aclose()

    async def reaches_new_master(self, old: int, timeout: float = 40.0) -> None:
        """Until the anchor's writes land on the promoted master (a bare client stays on the
        old one until the sentinels convert it, ~10 s after SENTINEL FAILOVER)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = await agreed_master(self.lab)
            if port != old:
                async with aioredis.Redis(port=port) as client:
                    if await client.llen(self.key):
                        return
            await asyncio.sleep(0.1)
        raise RuntimeError("the bare client never wrote to the new master")

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> int:
        """Stop; the acknowledged writes the master (now) lacks."""
        self._stop.set()
        assert self._task is not None
        await self._task
        port = await agreed_master(self.lab)
        async with aioredis.Redis(port=port) as client:
            held = {int(x) for x in await client.lrange(self.key, 0, -1)}
        return sum(1 for n in range(self.acked) if n not in held)


async def probe_until_promoted(fake: FakeBotAPI, lab: SentinelLab, old: int) -> float:
    """/help after /help from the failover until a second after the promotion; the longest
    wait for an answer."""
    longest, promoted = 0.0, None
    while promoted is None or time.monotonic() - promoted < 1.0:
        sent = time.monotonic()
        probe = fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/help")["message_id"]
        await fake.wait_for_message(
            OPS.id, lambda m, p=probe: m.reply_to_message_id == p, timeout=60
        )
        longest = max(longest, time.monotonic() - sent)
        if promoted is None and await agreed_master(lab) != old:
            promoted = time.monotonic()
        await asyncio.sleep(0.1)
    return longest


def pending(card: FakeMessage | None) -> bool:
    return card is not None and "— done" not in (card.text or "") and card.reply_markup is not None


async def one_failover(
    fake: FakeBotAPI, lab: SentinelLab, kind: str, counters: list[Path], figures: Figures, n: int
) -> None:
    old = await asyncio.to_thread(lab.settle)
    before = [runs(c) for c in counters]
    cards = []
    for i in range(len(counters)):
        sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, f"/restart counter{i}")
        cards.append(await fake.wait_for_message(
            OPS.id, lambda m: "Approve" in str(m.reply_markup), timeout=30,
            after_message_id=sent["message_id"],
        ))  # fmt: skip
    anchor = Anchor(lab, f"anchor:{n}")
    anchor.start()
    await asyncio.sleep(0.5)  # the anchor is writing steadily
    await asyncio.to_thread(lab.failover if kind == KINDS[0] else lab.kill_master)
    for card in cards:
        request = (card.text or "").split("id ")[1].split()[0]
        fake.tap_button(OPSBOT_TOKEN, OPS, ALICE, card.message_id, f"a:{request}")
    figures.pauses[kind].append(await probe_until_promoted(fake, lab, old))
    with contextlib.suppress(AssertionError):  # a lost one never is done
        for card in cards:
            await fake.wait_for_message(
                OPS.id, lambda m, c=card: m.message_id == c.message_id
                and "— done" in (m.text or ""), timeout=30,
            )  # fmt: skip
    await anchor.reaches_new_master(old)
    await asyncio.sleep(1.0)  # a doubled run would be in by now
    figures.anchor_lost[kind] += await anchor.stop()
    figures.anchor_writes[kind] += anchor.acked
    figures.anchor_pauses[kind].append(anchor.longest)
    for i, counter in enumerate(counters):
        ran = runs(counter) - before[i]
        if ran == 1:
            figures.outcomes[kind][0] += 1
        elif ran > 1:
            figures.outcomes[kind][2] += 1
        else:
            shown = fake.message(OPS.id, cards[i].message_id)
            figures.outcomes[kind][3 if pending(shown) else 1] += 1
    if kind == KINDS[1]:
        await asyncio.to_thread(lab.restart, old)


async def measure(
    rounds: int, folder: Path, kinds: tuple[str, ...] = KINDS
) -> Figures:
    """``rounds`` of each failover in ``kinds`` against one opsbot on the lab's sentinels."""
    figures = Figures()
    with contextlib.ExitStack() as stack:
        lab = stack.enter_context(start_sentinel_lab(folder / "sentinel"))
        fake = stack.enter_context(fake_bot_api(OPS, group_per_minute=None))
        counters = [folder / f"runs-{i}" for i in range(APPROVALS)]
        config: dict[str, Any] = base_config(fake, folder / "data")
        config["targets"] = {f"counter{i}": counting_target(c) for i, c in enumerate(counters)}
        config["store"] = {"backend": "redis", "redis_url": lab.url, "prefix": "bench"}
        config["log_level"] = "WARNING"
        opsbot = stack.enter_context(OpsbotProcess(config, folder / "opsbot"))
        await fake.wait_for_call("getUpdates", since=0, timeout=60)
        for n in range(rounds):
            for kind in kinds:
                opsbot.alive()
                await one_failover(fake, lab, kind, counters, figures, n * 2 + KINDS.index(kind))
    return figures


HEADER = (
    "| date | rounds | failover | next command's pause: median / max | approvals once / lost "
    "/ doubled / left pending | anchor (bare redis-py Sentinel client): longest pause "
    "median / max, writes lost | machine |"
)
SECTION = "failover on Redis Sentinel (one opsbot, 4 approvals tapped at each failover)"


def rows(figures: Figures, rounds: int, machine: str) -> list[str]:
    out = []
    for kind in KINDS:
        if not figures.pauses[kind]:
            continue  # not measured in this run
        pauses, anchor = figures.pauses[kind], figures.anchor_pauses[kind]
        once, lost, doubled, left = figures.outcomes[kind]
        out.append(
            f"| {time.strftime('%Y-%m-%d %H:%M')} | {rounds} | {kind} "
            f"| {statistics.median(pauses):.2f} s / {max(pauses):.2f} s "
            f"| {once} / {lost} / {doubled} / {left} "
            f"| {statistics.median(anchor):.2f} s / {max(anchor):.2f} s, "
            f"{figures.anchor_lost[kind]:,} of {figures.anchor_writes[kind]:,} "
            f"| {machine} |"
        )
    return out
