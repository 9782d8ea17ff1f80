"""Benchmark: an idle command's reply time, opsbot beside a bare python-telegram-bot echo bot.

Both run as child processes polling the same fake Bot API (tests/fakebotapi.py), each in its
own private chat with the same person. The bench writes a message as that person and times
until the bot's reply is stored by the fake API, one message at a time, paced well below every
rate limit, alternating bots so both see the same machine load. Reports medians and the ratio
(target: opsbot ≤ 1.5× the echo bot) and appends a row to bench/RESULTS.md.

opsbot runs on its default embedded store (SQLite), or with ``--store redis`` on a real
redis-server started on loopback for the run (its rows go under their own section).

    python bench/command_latency.py [--samples 60] [--store sqlite|redis]
"""

from __future__ import annotations

import argparse
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
PERSON = User(ADMIN_ID, "Alice", "alice")
HEADER = (
    "| date | samples | echo bot | opsbot /help | ratio | opsbot /health (1 local) | machine |"
)


def echo_bot(api_url: str) -> None:
    """The anchor: python-telegram-bot's echo example, on the fake Bot API."""
    from telegram import Update
    from telegram.ext import ApplicationBuilder, ContextTypes, MessageHandler, filters

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None and update.message.text is not None
        await update.message.reply_text(update.message.text)

    application = (
        ApplicationBuilder().token(ECHO_TOKEN).base_url(f"{api_url}/bot").build()
    )  # fmt: skip
    application.add_handler(MessageHandler(filters.TEXT, echo))
    application.run_polling(timeout=10)


def ask(fake: FakeBotAPI, token: str, text: str) -> float:
    """Seconds from the person's message to the bot's reply in their private chat."""
    started = time.perf_counter()
    sent = fake.send_text(token, PERSON.id, PERSON, text)
    fake.next_bot_message(PERSON.id, sent["message_id"], token)
    return time.perf_counter() - started


def measure(samples: int, folder: Path, store: str = "sqlite") -> tuple[float, float, float]:
    """Median seconds: echo bot, opsbot /help, opsbot /health (opsbot on ``store``)."""
    with contextlib.ExitStack() as stack:
        extra: dict[str, object] = {}
        if store == "redis":
            redis = stack.enter_context(start_redis(folder / "redis"))
            extra["store"] = {"backend": "redis", "redis_url": redis.url}
        return _measure(samples, folder, extra)


def _measure(samples: int, folder: Path, extra: dict[str, object]) -> tuple[float, float, float]:
    fake = start_fake()
    fake.add_bot(ECHO_TOKEN, "echo_bench_bot")
    echo_log = (folder / "echo.log").open("wb")
    echo = subprocess.Popen(
        [sys.executable, __file__, "--echo-bot", fake.url],
        stdin=subprocess.DEVNULL, stdout=echo_log, stderr=subprocess.STDOUT,
    )  # fmt: skip
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
            for _ in range(5):  # warm-up: both bots polling, first-use paths done
                ask(fake, ECHO_TOKEN, "hello")
                ask(fake, TOKEN, "/help")
                ask(fake, TOKEN, "/health")
            times: dict[str, list[float]] = {"echo": [], "help": [], "health": []}
            for _ in range(samples):
                for key, token, text in (
                    ("echo", ECHO_TOKEN, "hello"), ("help", TOKEN, "/help"),
                    ("health", TOKEN, "/health"),
                ):  # fmt: skip
                    times[key].append(ask(fake, token, text))
                    time.sleep(0.05)  # idle: well below 30 messages a second
            opsbot.alive()
    finally:
        echo.terminate()
        echo.wait(timeout=20)
        echo_log.close()
        fake.stop()
    return (
        statistics.median(times["echo"]),
        statistics.median(times["help"]),
        statistics.median(times["health"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=60)
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--echo-bot", metavar="API_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_bot:
        echo_bot(args.echo_bot)
        return
    with tempfile.TemporaryDirectory(prefix="opsbot-latency-") as tmp:
        echo, help_, health = measure(args.samples, Path(tmp), args.store)
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.samples} | {echo * 1000:.1f} ms "
        f"| {help_ * 1000:.1f} ms | {help_ / echo:.2f}× | {health * 1000:.1f} ms "
        f"({health / echo:.2f}×) | {machine()} |"
    )
    print(HEADER)
    print(row)
    section = "command_latency" + (" (redis store)" if args.store == "redis" else "")
    if not args.no_write:
        append_result(section, HEADER, row)


if __name__ == "__main__":
    main()
