"""Several ``opsbot run`` processes on one real Redis, as a user deploys replicas.

- Polling: three replicas, one leader polls (``opsbot_leader`` in each one's /metrics). The
  leader is SIGKILLed: another polls within 15 s, the command typed meanwhile is answered
  once, Telegram answers no 409 after warm-up, a failing target raises one alert, not
  three, and its monitor rounds run once per round (on the replica that owns the target),
  resuming after failover.
- Webhook: three replicas behind a "load balancer" (the fake posts to them in turn): updates
  spread across them, each runs once, a redelivered update_id runs once, a wrong or missing
  secret is 401 and runs nothing, and a restarted replica does not call setWebhook again.
- Redis restarted (with its append-only file) while a request waits for approval: the tap
  after the restart runs the action once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.factories import ALICE, INCIDENTS, OPS, OPSBOT_TOKEN, OSCAR, base_config
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import free_port, start_process, stop_process, wait_until
from tests.lab.redis import RedisServer, pings

REPO = Path(__file__).resolve().parents[2]
WEB_TOKEN = "replica-test-web-token-0123456789"
SECRET = "webhook-secret_0123456789"
HOOK_URL = "https://opsbot.example.org/telegram/hook"
_prefixes = itertools.count()


@dataclass
class Replica:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def metric(self, name: str, **labels: str) -> float:
        """A sample of its /metrics (summed over label sets matching ``labels``)."""
        auth = {"Authorization": f"Bearer {WEB_TOKEN}"}  # /metrics is closed by default
        text = httpx.get(f"{self.url}/metrics", headers=auth, timeout=5).text
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name) or line.startswith("#"):
                continue
            head, _, value = line.rpartition(" ")
            if head.split("{")[0] == name and all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
        return total

    def leads(self) -> bool:
        try:
            return self.metric("opsbot_leader") == 1.0
        except httpx.HTTPError:
            return False

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def write_config(fake: FakeBotAPI, tmp_path: Path, redis_url: str, runs: Path) -> Path:
    config: dict[str, Any] = base_config(fake, tmp_path / "data")
    # The default leader lease (8 s): the failover measured is the one users get.
    config["store"] = {
        "backend": "redis",
        "redis_url": redis_url,
        "prefix": f"ha-{next(_prefixes)}",
    }
    config["web"] = {"enabled": True, "token": WEB_TOKEN}
    config["approvals"] = {"ttl": 300}
    config["targets"] = {
        "counter": {
            "kind": "command",
            "verify_deadline": 10,
            # Every run leaves a line: the test counts executions, whichever replica ran them.
            "actions": {
                "status": ["sh", "-c", f"echo status >> {runs}"],
                "restart": ["sh", "-c", f"echo restart >> {runs}"],
            },
        },
        "broken": {
            "kind": "command",
            # Each monitor round leaves a line too: rounds are counted across replicas.
            "actions": {"status": ["sh", "-c", f"echo round >> {runs}; exit 1"]},
            "monitor": {"enabled": True, "interval": 1, "fail_after": 1},
        },
    }
    path = tmp_path / "opsbot.yaml"
    path.write_text(json.dumps(config))
    return path


def start_replica(config: Path, index: int, **env: str) -> Replica:
    port = free_port()
    data = config.parent / f"replica-{index}"
    data.mkdir(exist_ok=True)
    environment = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(data),
        "OPSBOT_WEB__PORT": str(port), "OPSBOT_DATA_DIR": str(data), **env,
    }  # fmt: skip
    log = data / "stderr.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "opsbot", "run", "--config", str(config)],
            stdout=subprocess.DEVNULL, stderr=sink, env=environment,
        )  # fmt: skip
    return Replica(proc, port, log)


@contextlib.contextmanager
def replicas(config: Path, count: int, **env: str) -> Iterator[list[Replica]]:
    started = [start_replica(config, i, **env) for i in range(count)]
    try:
        yield started
    finally:
        for replica in started:
            if replica.proc.poll() is None:
                replica.proc.send_signal(signal.SIGTERM)
        for replica in started:
            try:
                replica.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
                replica.proc.wait()


async def until(check: Any, timeout: float, what: str) -> float:
    """Poll ``check()`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)
    return time.monotonic() - started


def lines(path: Path, word: str) -> int:
    return path.read_text().split().count(word) if path.exists() else 0


def alerts_about(fake: FakeBotAPI, target: str) -> list[str]:
    return [m.text or "" for m in fake.bot_messages(INCIDENTS.id) if target in (m.text or "")]


async def test_three_polling_replicas_one_leader_fails_over_within_15s_without_409(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer
) -> None:
    runs = tmp_path / "runs"
    config = write_config(fake, tmp_path, redis_server.url, runs)
    with replicas(config, 3) as group:
        await until(lambda: sum(r.leads() for r in group) == 1, 30, "one leader")
        await fake.wait_for_call("getUpdates", timeout=20)
        # Warm-up done. From now on Telegram must never answer 409.
        conflicts = len(fake.conflicts)
        sent = fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/health counter")
        await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"], timeout=20)
        await until(lambda: alerts_about(fake, "broken"), 20, "the alert about broken")
        rounds = lines(runs, "round")
        await asyncio.sleep(4)  # four more monitor rounds, on one replica only
        assert 2 <= lines(runs, "round") - rounds <= 6  # not ~12: once per round, not per replica
        assert len(alerts_about(fake, "broken")) == 1  # one alert, not one per replica

        leader = next(r for r in group if r.leads())
        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait()
        killed = time.monotonic()
        typed = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/health counter")
        answer = await fake.wait_for_message(
            OPS.id, after_message_id=typed["message_id"], timeout=20
        )
        failover = time.monotonic() - killed
        survivors = [r for r in group if r is not leader]
        await until(lambda: sum(r.leads() for r in survivors) == 1, 5, "a new leader")
        rounds = lines(runs, "round")
        await asyncio.sleep(3)  # the survivors take the dead replica's share
        assert 1 <= lines(runs, "round") - rounds <= 5  # resumed, once per round
        print(f"failover: a command typed at the SIGKILL was answered after {failover:.1f} s")
        assert failover < 15
        assert answer.text is not None and "counter" in answer.text
        assert len(alerts_about(fake, "broken")) == 1  # still one: the engine's, not per leader
        assert fake.conflicts[conflicts:] == []
    stderrs = "".join(r.stderr() for r in group)
    assert lines(runs, "status") == 2  # each command ran once (+ no duplicate after failover)
    assert [r.proc.returncode for r in survivors] == [0, 0], stderrs[-3000:]
    assert "Conflict" not in stderrs and "Traceback" not in stderrs, stderrs[-3000:]
    assert OPSBOT_TOKEN not in stderrs


async def test_three_webhook_replicas_run_each_update_once(
    fake: FakeBotAPI, tmp_path: Path, redis_server: RedisServer
) -> None:
    runs = tmp_path / "runs"
    config = write_config(fake, tmp_path, redis_server.url, runs)
    env = {
        "OPSBOT_TELEGRAM__MODE": "webhook",
        "OPSBOT_TELEGRAM__WEBHOOK__URL": HOOK_URL,
        "OPSBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN": SECRET,
    }
    with replicas(config, 3, **env) as group:
        for replica in group:
            await until(lambda r=replica: _healthy(r), 30, "the replica's web server")
        await fake.wait_for_call("setWebhook", timeout=20)
        hooks = [r.url + "/telegram/hook" for r in group]
        info = fake.bot(OPSBOT_TOKEN).webhook
        assert (info.url, info.secret_token) == (HOOK_URL, SECRET)

        for _ in range(9):
            fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/health counter")
        updates = fake.pending_updates(OPSBOT_TOKEN)
        delivered = await asyncio.to_thread(fake.deliver_webhook, OPSBOT_TOKEN, hooks)
        assert [status for _, _, status in delivered] == [200] * 9
        await until(lambda: lines(runs, "status") >= 9, 20, "nine runs")
        per_replica = [r.metric("opsbot_commands_total", verb="health") for r in group]
        assert per_replica == [3.0, 3.0, 3.0]  # spread by the balancer, each run where it landed

        # Telegram redelivers every one of them, to another replica: nothing runs again.
        for index, update in enumerate(updates):
            answer = httpx.post(
                hooks[(index + 1) % 3], json=update, timeout=10,
                headers={"X-Telegram-Bot-Api-Secret-Token": SECRET},
            )  # fmt: skip
            assert answer.status_code == 200
        await asyncio.sleep(1.5)
        assert lines(runs, "status") == 9
        assert sum(r.metric("opsbot_updates_duplicate_total") for r in group) == 9

        # Without the secret, or with a wrong one: 401, nothing runs, Telegram keeps it.
        fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/health counter")
        for secret in (False, "wrong-secret"):
            refused = await asyncio.to_thread(
                fake.deliver_webhook, OPSBOT_TOKEN, hooks, secret_token=secret
            )
            assert [status for _, _, status in refused] == [401]
        await asyncio.sleep(1.0)
        assert lines(runs, "status") == 9
        assert len(fake.pending_updates(OPSBOT_TOKEN)) == 1
        assert await asyncio.to_thread(fake.deliver_webhook, OPSBOT_TOKEN, hooks[2:])
        await until(lambda: lines(runs, "status") == 10, 20, "the tenth run")

        # A read-only command runs while its update_id is being claimed: the same /help
        # reaching all three replicas at once is answered once.
        sent = fake.send_text(OPSBOT_TOKEN, OPS, ALICE, "/help")
        (update,) = fake.pending_updates(OPSBOT_TOKEN)
        headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
        delivered, *copies = await asyncio.gather(
            asyncio.to_thread(fake.deliver_webhook, OPSBOT_TOKEN, hooks[:1]),
            *(asyncio.to_thread(httpx.post, hook, json=update, headers=headers, timeout=10)
              for hook in hooks[1:]),
        )  # fmt: skip
        assert [status for _, _, status in delivered] == [200]
        assert [copy.status_code for copy in copies] == [200, 200]
        await fake.wait_for_message(OPS.id, after_message_id=sent["message_id"])
        await asyncio.sleep(1.0)
        answers = [
            m.text or "" for m in fake.bot_messages(OPS.id)
            if m.reply_to_message_id == sent["message_id"]
        ]  # fmt: skip
        assert len(answers) == 1 and answers[0].startswith("You are alice")
        assert sum(r.metric("opsbot_updates_duplicate_total") for r in group) == 11

        # A restarted replica finds the webhook set as it wants it: no setWebhook again.
        set_calls = len(fake.calls_to("setWebhook"))
        group[0].proc.send_signal(signal.SIGTERM)
        assert group[0].proc.wait(timeout=30) == 0
        group[0] = start_replica(config, 0, **env)
        await until(lambda: _healthy(group[0]), 30, "the restarted replica")
        await asyncio.sleep(1.0)
        assert len(fake.calls_to("setWebhook")) == set_calls
        assert fake.calls_to("getWebhookInfo")
    stderrs = "".join(r.stderr() for r in group)
    assert "Traceback" not in stderrs and SECRET not in stderrs, stderrs[-3000:]


def _healthy(replica: Replica) -> bool:
    try:
        return httpx.get(f"{replica.url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def durable_redis(directory: Path, port: int) -> Iterator[subprocess.Popen[bytes]]:
    """A redis-server that writes every change to its append-only file before answering."""
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(directory)]  # fmt: skip
    proc = start_process(argv, directory / "redis.log")
    try:
        wait_until(
            lambda: pings(port), what="redis-server", log=directory / "redis.log", proc=proc
        )
        yield proc
    finally:
        stop_process(proc)


async def test_redis_restarted_mid_approval_loses_nothing(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    port = free_port()
    directory = tmp_path / "redis"
    directory.mkdir()
    config = write_config(fake, tmp_path, f"redis://127.0.0.1:{port}/0", runs)
    with replicas(config, 1) as (bot,):
        with durable_redis(directory, port):
            await until(bot.leads, 30, "the replica leads")
            sent = fake.send_text(OPSBOT_TOKEN, OPS, OSCAR, "/restart counter")
            card = await fake.wait_for_message(
                OPS.id, after_message_id=sent["message_id"], timeout=20
            )
            await asyncio.sleep(1.0)  # the poller confirms the update
        # Redis is down now (stopped cleanly); then it comes back with its data.
        await asyncio.sleep(2.0)
        with durable_redis(directory, port):
            assert card.text is not None
            request = card.text.split("id ")[1].split()[0]
            fake.tap_button(OPSBOT_TOKEN, OPS, ALICE, card.message_id, f"a:{request}")
            done = await fake.wait_for_message(
                OPS.id,
                lambda m: m.message_id == card.message_id and "— done" in (m.text or ""),
                timeout=40,
            )
            assert done.text is not None and "approved by alice" in done.text
            await asyncio.sleep(1.0)
            bot.proc.send_signal(signal.SIGTERM)
            assert bot.proc.wait(timeout=30) == 0, bot.stderr()[-3000:]
    assert lines(runs, "restart") == 1
    assert "Traceback" not in bot.stderr(), bot.stderr()[-3000:]
