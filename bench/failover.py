"""Benchmark: SIGKILL the polling leader of two replicas on Redis; how soon is the next
command answered, and is anything lost or doubled?

Two ``opsbot run`` processes share a real redis-server (started for the run) and poll the
fake Bot API (tests/fakebotapi.py) at the default leader lease (3 s). Each round: a burst of
``/help`` is typed in a private chat; once the first reply is in (the others in flight, so
the leader holds that chat's outbox lease and a claim), the leader is SIGKILLed, a probe
``/help`` is typed at once and timed until its reply is stored by the fake. The burst's
commands are then counted: answered once, lost, or answered twice. The killed replica is
started again before the next round, so there are always two.

Anchor, in the same run: how long the fake Bot API takes to hand a waiting update to a
fresh poller (a raw getUpdates long poll, started after the message); and the bound the
design sets, lease + standby retry. A lost burst command is the ingress dedup's stated
trade-off (an update claimed by a replica that dies before answering is not run again).

    python bench/failover.py [--rounds 5]
    python bench/failover.py --sentinel [--rounds 10]   # bench/sentinel_failover.py
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import (
    ADMIN_ID,
    TOKEN,
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    start_fake,
)
from opsbot.state.leases import RETRY_SECONDS
from tests.fakebotapi import FakeBotAPI, User
from tests.lab.ports import free_port
from tests.lab.redis import start_redis

PERSON = User(ADMIN_ID, "Alice", "alice")
ANCHOR_TOKEN = "7000000011:AAanchorFAILOVERtokenXXXXXXXXXXXXXXX"
WEB_TOKEN = "failover-bench-web-token-0123456789"
LEASE = 3.0  # the default store.leader_lease
BURST = 5
HEADER = (
    "| date | rounds | next command answered after SIGKILL: median / max | burst commands "
    "answered / lost / doubled | anchor: fresh getUpdates hand-off | bound: lease + retry "
    "| machine |"
)
SECTION = "failover (2 polling replicas on Redis, leader SIGKILLed)"


class Replica:
    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        self.port = free_port()
        config = {**config, "web": {"enabled": True, "token": WEB_TOKEN, "port": self.port},
                  "data_dir": str(folder / "data")}  # fmt: skip
        self.process = OpsbotProcess(config, folder).__enter__()

    def leads(self) -> bool:
        auth = {"Authorization": f"Bearer {WEB_TOKEN}"}
        try:
            text = httpx.get(f"http://127.0.0.1:{self.port}/metrics", headers=auth, timeout=2)
        except httpx.HTTPError:
            return False
        return any(line == "opsbot_leader 1.0" for line in text.text.splitlines())

    def kill(self) -> None:
        assert self.process.proc is not None
        self.process.proc.send_signal(signal.SIGKILL)
        self.process.proc.wait()

    def stop(self) -> None:
        self.process.__exit__()


def until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def answers(fake: FakeBotAPI, message_id: int) -> int:
    return sum(
        1 for m in fake.bot_messages(PERSON.id, TOKEN) if m.reply_to_message_id == message_id
    )


def wait_answer(fake: FakeBotAPI, message_id: int, timeout: float) -> float:
    """Seconds until the message is answered (blocking on the fake's store, no polling)."""
    started = time.monotonic()
    after = message_id
    while True:
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            raise RuntimeError(f"message {message_id} not answered within {timeout} s")
        reply = fake.next_bot_message(PERSON.id, after, TOKEN, timeout=left)
        if reply.reply_to_message_id == message_id:
            return time.monotonic() - started
        after = reply.message_id


def handoff(fake: FakeBotAPI) -> float:
    """Seconds from a message to a fresh long poll (started after it) returning it."""
    url = f"{fake.url}/bot{ANCHOR_TOKEN}/getUpdates"
    offset = 0
    with httpx.Client(timeout=15) as client:
        for update in client.post(url, json={"timeout": 0}).json()["result"]:
            offset = update["update_id"] + 1
        fake.send_text(ANCHOR_TOKEN, PERSON.id, PERSON, "anchor")
        started = time.monotonic()
        got = client.post(url, json={"offset": offset, "timeout": 10}).json()["result"]
        took = time.monotonic() - started
        assert got, "the anchor's update did not arrive"
        client.post(url, json={"offset": got[-1]["update_id"] + 1, "timeout": 0})
    return took


def run(rounds: int, folder: Path) -> tuple[list[float], list[int], list[float]]:
    fake = start_fake()
    fake.add_bot(ANCHOR_TOKEN, "anchor_failover_bot")
    failovers: list[float] = []
    counts = [0, 0, 0]  # answered once, lost, doubled (then: unanswered at the kill)
    anchors: list[float] = []
    unanswered = 0  # burst commands not answered yet at the kill (in flight)
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(start_redis(folder / "redis"))
        config = base_config(
            fake, folder / "data",
            store={"backend": "redis", "redis_url": redis.url, "prefix": "failover"},
            alerts={"monitor": {"enabled": False}},
        )  # fmt: skip
        config["telegram"]["allow_private_chats"] = True
        group = [Replica(config, folder / f"replica-{i}") for i in range(2)]
        started = 2
        try:
            for _ in range(rounds):
                until(lambda: sum(r.leads() for r in group) == 1, 60, "one leader")
                for _ in range(3):  # warm: the leader answers, its store paths are hot
                    sent = fake.send_text(TOKEN, PERSON.id, PERSON, "/help")
                    wait_answer(fake, sent["message_id"], 30)
                anchors.append(handoff(fake))
                leader = next(r for r in group if r.leads())
                burst = [fake.send_text(TOKEN, PERSON.id, PERSON, "/help")["message_id"]
                         for _ in range(BURST)]  # fmt: skip
                wait_answer(fake, burst[0], 30)
                leader.kill()
                killed = time.monotonic()
                unanswered += sum(answers(fake, m) == 0 for m in burst)
                probe = fake.send_text(TOKEN, PERSON.id, PERSON, "/help")["message_id"]
                wait_answer(fake, probe, 60)
                failovers.append(time.monotonic() - killed)
                with contextlib.suppress(RuntimeError):  # lost ones never are
                    until(lambda b=burst: all(answers(fake, m) for m in b), 15, "the burst")
                time.sleep(1.0)  # a doubled answer would be in by now
                for message_id in burst:
                    n = answers(fake, message_id)
                    counts[0 if n == 1 else 1 if n == 0 else 2] += 1
                group.remove(leader)
                leader.stop()
                group.append(Replica(config, folder / f"replica-{started}"))
                started += 1
                until(lambda: any(r.leads() for r in group), 60, "a leader again")
        finally:
            for replica in group:
                replica.stop()
            fake.stop()
    counts.append(unanswered)
    return failovers, counts, anchors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--sentinel", action="store_true",
                        help="a Redis Sentinel failover mid-approval instead")  # fmt: skip
    args = parser.parse_args()
    if args.sentinel:
        return sentinel_main(args.rounds, write=not args.no_write)
    with tempfile.TemporaryDirectory(prefix="opsbot-failover-") as tmp:
        failovers, counts, anchors = run(args.rounds, Path(tmp))
    print("failovers (s):", " ".join(f"{f:.2f}" for f in failovers))
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.rounds} "
        f"| {statistics.median(failovers):.2f} s / {max(failovers):.2f} s "
        f"| {counts[0]} / {counts[1]} / {counts[2]} ({counts[3]} unanswered at the kill) "
        f"| {statistics.median(anchors) * 1000:.1f} ms | {LEASE + RETRY_SECONDS:.2f} s "
        f"| {machine()} |"
    )
    print(HEADER)
    print(row)
    if not args.no_write:
        append_result(SECTION, HEADER, row)


def sentinel_main(rounds: int, *, write: bool) -> None:
    import asyncio

    from bench import sentinel_failover

    with tempfile.TemporaryDirectory(prefix="opsbot-sentinel-failover-") as tmp:
        figures = asyncio.run(sentinel_failover.measure(rounds, Path(tmp)))
    rows = sentinel_failover.rows(figures, rounds, machine())
    print(sentinel_failover.HEADER)
    for row in rows:
        print(row)
        if write:
            append_result(sentinel_failover.SECTION, sentinel_failover.HEADER, row)


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
