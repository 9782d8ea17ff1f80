"""opsbot: a Telegram ChatOps bot that operates other bots and services."""

import os

# Opt in to python-telegram-bot's v23 behaviour (durations as timedelta) now, instead of a
# deprecation warning on every rate-limit answer.
os.environ.setdefault("PTB_TIMEDELTA", "1")
