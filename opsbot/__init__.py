"""opsbot: a Telegram ChatOps bot that operates other bots and services."""

import os
import warnings

# Opt in to python-telegram-bot's v23 behaviour (durations as timedelta) now, instead of a
# deprecation warning on every rate-limit answer.
os.environ.setdefault("PTB_TIMEDELTA", "1")

# cryptography 51 deprecates DSA, and asyncssh (2.24) names its DSA classes at import: every
# start would print a warning nobody can act on (opsbot neither makes nor accepts DSA keys).
# Only that warning, only from asyncssh; tests/ carry the same filter in pyproject.toml.
warnings.filterwarnings(
    "ignore", message="DSA is deprecated", category=UserWarning, module=r"asyncssh\."
)
