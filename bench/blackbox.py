"""What the fan-out and logs benchmarks share: opsbot as a black box, sshd, the machine.

opsbot runs as its own process (``python -m opsbot run``) against the fake Bot API served
from the benchmark's process, exactly as in production but for Telegram's servers: a command
is a user's message pushed into the fake, the answer is what opsbot sends or edits back.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.factories import ALICE, OPSBOT_TOKEN, OPSBOT_USERNAME, PEOPLE  # noqa: E402
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage  # noqa: E402
from tests.lab.sshd import (  # noqa: E402
    FLEET_ADDRESSES,
    SSHServer,
    start_sshd,
    start_sshd_fleet,
)

#: Alice's private chat: no group pacing (20 a minute) between the rounds.
CHAT = Chat(ALICE.id, "private")


def machine() -> str:
    """nproc, CPU model, Python, asyncssh and OpenSSH versions: the context of a figure."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import asyncssh

    ssh = subprocess.run(["ssh", "-V"], capture_output=True, text=True, check=False)
    openssh = (ssh.stderr or ssh.stdout).strip().split(",")[0]
    return (
        f"{os.cpu_count()} × {model}, Python {platform.python_version()}, "
        f"asyncssh {asyncssh.__version__}, {openssh}"
    )


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def append_results(path: Path, section: str) -> None:
    """Append a ``## `` section to RESULTS.md (other benchmarks append their own)."""
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the scripts under bench/.\n")
    with path.open("a") as out:
        out.write("\n" + section.rstrip() + "\n")


@contextmanager
def sshd_farm(tmp: Path, count: int) -> Iterator[list[SSHServer]]:
    """``count`` real sshd on loopback, each its own process, port, host key and client key."""
    with ExitStack() as stack:
        servers = [stack.enter_context(start_sshd(tmp / f"sshd{i:03d}")) for i in range(count)]
        yield servers


@contextmanager
def sshd_fleet(tmp: Path, count: int) -> Iterator[list[SSHServer]]:
    """``count`` SSH hosts on ceil(count / 16) real sshd, each listening on up to 16 loopback
    addresses (1,000 hosts: 63 processes): a host key per sshd, a known_hosts line per host."""
    with ExitStack() as stack:
        servers: list[SSHServer] = []
        for i, first in enumerate(range(0, count, FLEET_ADDRESSES)):
            hosts = min(FLEET_ADDRESSES, count - first)
            servers += stack.enter_context(start_sshd_fleet(tmp / f"fleet{i:03d}", hosts))
        yield servers


def fake_bot_api() -> FakeBotAPI:
    fake = FakeBotAPI(group_per_minute=None, global_per_second=None)
    fake.add_bot(OPSBOT_TOKEN, OPSBOT_USERNAME, "opsbot")
    return fake


def opsbot_config(fake: FakeBotAPI, data_dir: Path, **sections: Any) -> dict[str, Any]:
    return {
        "telegram": {
            "token": OPSBOT_TOKEN,
            "api_url": fake.url,
            "ops_chat_id": -1001000000100,
            "allow_private_chats": True,
            "poll_timeout": 2,  # stopping waits for the current long poll
        },
        "people": PEOPLE,
        "data_dir": str(data_dir),
        "log_level": "WARNING",
        "alerts": {"monitor": {"enabled": False}},
        **sections,
    }


@dataclass
class Answer:
    first: float  # seconds until opsbot's first message (a progress message, or the answer)
    final: float  # seconds until the answer's final state was shown
    message: FakeMessage


class Opsbot:
    """A running ``opsbot run`` process and the fake Bot API it polls."""

    def __init__(self, fake: FakeBotAPI, config: dict[str, Any], tmp: Path) -> None:
        self.fake = fake
        path = tmp / "opsbot.json"
        path.write_text(json.dumps(config))
        self.log = tmp / "opsbot.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "opsbot", "run", "--config", str(path)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                cwd=ROOT,
            )  # fmt: skip
        polls = len(fake.calls_to("getUpdates"))
        deadline = time.monotonic() + 60
        while len(fake.calls_to("getUpdates")) <= polls + 1:  # its first real long poll
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"opsbot did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.01)

    def ask(self, text: str, done: Callable[[str], bool], timeout: float = 120.0) -> Answer:
        """Send ``text``; wait until one of opsbot's messages shows a text ``done`` accepts."""
        sent = self.fake.send_text(OPSBOT_TOKEN, CHAT, ALICE, text)
        started = time.perf_counter()
        first: float | None = None
        deadline = started + timeout
        while True:
            seen = len(self.fake.calls)
            for message in self.fake.bot_messages(CHAT.id, OPSBOT_TOKEN):
                if message.message_id <= sent["message_id"]:
                    continue
                if first is None:
                    first = time.perf_counter() - started
                shown = message.text if message.text is not None else message.caption
                if shown is not None and done(shown):
                    return Answer(first, time.perf_counter() - started, message)
            left = deadline - time.perf_counter()
            if left <= 0:
                raise RuntimeError(f"no answer to {text!r} within {timeout} s")
            self.fake.wait_for_calls_beyond(seen, left)

    def memory(self) -> tuple[float, float]:
        """(RSS now, peak RSS) of the opsbot process, in MB."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        return tuple(int(values[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running_opsbot(fake: FakeBotAPI, config: dict[str, Any], tmp: Path) -> Iterator[Opsbot]:
    tmp.mkdir(parents=True, exist_ok=True)
    bot = Opsbot(fake, config, tmp)
    try:
        yield bot
    finally:
        bot.stop()


def verb_seconds(data_dir: Path, verb: str) -> list[float]:
    """How long each run of ``verb`` took inside opsbot (the audit trail's ``duration``):
    the rest of a chat round trip is Telegram's part (here the fake's) and the handler's."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(data_dir / "opsbot.sqlite3")) as db:
        rows = db.execute("SELECT value FROM logs WHERE namespace = 'audit' AND key = '*'")
        entries = [json.loads(value) for (value,) in rows]
    return [e["duration"] for e in entries if e.get("verb") == verb and "duration" in e]


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:.2f}×" if floor > 0 else "–"
