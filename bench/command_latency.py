"""Benchmark: an idle command's reply time, opsbot beside a bare python-telegram-bot echo bot.

Both run as child processes polling the same fake Bot API (tests/fakebotapi.py), each in its
own private chat with the same person. The bench writes a message as that person and times
until the bot's reply is stored by the fake API, one message at a time, paced well below every
rate limit, alternating bots so both see the same machine load. Reports medians and the ratio
(target: opsbot ≤ 1.5× the echo bot) and appends a row to bench/RESULTS.md.

``/help`` is the idle command, beside the echo bot's answer to "hello". ``/health`` on one local
no-op target runs ``true`` as a subprocess, which alone costs about half an echo round trip on
these machines, so it has its own anchor: a second echo bot (its own process, so that the
first one never forks) running ``true`` the same way (asyncio) before it answers.

opsbot runs on its default embedded store (SQLite), or with ``--store redis`` on a real
redis-server started on loopback for the run (its rows go under their own section).

    python bench/command_latency.py [--samples 60] [--store sqlite|redis]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import (
    ADMIN_ID,
    TOKEN,
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    start_fake,
    wait_for_startup,
)
from tests.fakebotapi import FakeBotAPI, User
from tests.lab.redis import start_redis

ECHO_TOKEN = "7000000009:AAechoBENCHtokenXXXXXXXXXXXXXXXXXXXX"
SPAWNING_TOKEN = "7000000010:AAechoSPAWNtokenXXXXXXXXXXXXXXXXXXX"
PERSON = User(ADMIN_ID, "Alice", "alice")
HEADER = (
    "| date | samples | echo bot | opsbot /help | ratio | echo bot + `true` "
    "| opsbot /health (1 local) | ratio | machine |"
)
SECTION = "command_latency, /health beside a spawning echo"


def echo_bot(api_url: str, spawning: bool) -> None:
    """The anchor: python-telegram-bot's echo example, on the fake Bot API; ``spawning``: it
    runs ``true`` before each answer."""
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        if spawning:  # the anchor of a check on a local no-op
            spawned = await asyncio.create_subprocess_exec(
                "true", stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            await spawned.communicate()
        await update.message.reply_text(update.message.text)

    application = (
        ApplicationBuilder()
        .token(SPAWNING_TOKEN if spawning else ECHO_TOKEN)
        .base_url(f"{api_url}/bot")
        .build()
    )  # fmt: skip
    application.add_handler(MessageHandler(filters.TEXT, echo))
    application.run_polling(timeout=10)


def ask(fake: FakeBotAPI, token: str, text: str) -> float:
    """Seconds from the person's message to the bot's reply in their private chat."""
    started = time.perf_counter()
    sent = fake.send_text(token, PERSON.id, PERSON, text)
    fake.next_bot_message(PERSON.id, sent["message_id"], token)
    return time.perf_counter() - started


Medians = tuple[float, float, float, float]


def measure(samples: int, folder: Path, store: str = "sqlite") -> Medians:
    """Median seconds: echo bot, opsbot /help, echo bot running ``true``, opsbot /health
    (opsbot on ``store``)."""
    with contextlib.ExitStack() as stack:
        extra: dict[str, object] = {}
        if store == "redis":
            redis = stack.enter_context(start_redis(folder / "redis"))
            extra["store"] = {"backend": "redis", "redis_url": redis.url}
        return _measure(samples, folder, extra)


def _measure(samples: int, folder: Path, extra: dict[str, object]) -> Medians:
    fake = start_fake()
    fake.add_bot(ECHO_TOKEN, "echo_bench_bot")
    fake.add_bot(SPAWNING_TOKEN, "spawning_echo_bench_bot")
    echo_log = (folder / "echo.log").open("wb")
    echoes = [
        subprocess.Popen(
            [sys.executable, __file__, "--echo-bot", fake.url, *flag],
            stdin=subprocess.DEVNULL,
            stdout=echo_log,
            stderr=subprocess.STDOUT,
        )
        for flag in ([], ["--spawning"])
    ]
    config = base_config(
        fake, folder / "data",
        alerts={"monitor": {"enabled": False}},
        targets={"noop": {"kind": "command", "actions": {"status": ["true"]}}},
        **extra,
    )  # fmt: skip
    config["telegram"]["allow_private_chats"] = True
    try:
        with OpsbotProcess(config, folder) as opsbot:
            wait_for_startup(fake, opsbot)
            asks = (
                ("echo", ECHO_TOKEN, "hello"), ("help", TOKEN, "/help"),
                ("echo_true", SPAWNING_TOKEN, "/health"), ("health", TOKEN, "/health"),
            )  # fmt: skip
            for _ in range(5):  # warm-up: both bots polling, first-use paths done
                for _key, token, text in asks:
                    ask(fake, token, text)
            times: dict[str, list[float]] = {key: [] for key, _, _ in asks}
            for _ in range(samples):
                for key, token, text in asks:
                    times[key].append(ask(fake, token, text))
                    time.sleep(0.05)  # idle: well below 30 messages a second
            opsbot.alive()
    finally:
        for echo in echoes:
            echo.terminate()
            echo.wait(timeout=20)
        echo_log.close()
        fake.stop()
    return (
        statistics.median(times["echo"]),
        statistics.median(times["help"]),
        statistics.median(times["echo_true"]),
        statistics.median(times["health"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--echo-bot", metavar="API_URL", help=argparse.SUPPRESS)
    parser.add_argument("--spawning", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_bot:
        echo_bot(args.echo_bot, args.spawning)
        return
    with tempfile.TemporaryDirectory(prefix="opsbot-latency-") as tmp:
        echo, help_, echo_true, health = measure(args.samples, Path(tmp), args.store)
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.samples} | {echo * 1000:.1f} ms "
        f"| {help_ * 1000:.1f} ms | {help_ / echo:.2f}× | {echo_true * 1000:.1f} ms "
        f"| {health * 1000:.1f} ms | {health / echo_true:.2f}× | {machine()} |"
    )
    print(HEADER)
    print(row)
    section = SECTION + (" (redis store)" if args.store == "redis" else "")
    if not args.no_write:
        append_result(section, HEADER, row)


if __name__ == "__main__":
    main()
