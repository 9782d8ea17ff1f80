"""The ``opsbot`` command: run | console | check | schema."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from opsbot.config import Settings, json_schema, load_config
from opsbot.errors import ConfigError
from opsbot.redact import Redactor, install_log_redaction


def setup_logging(settings: Settings) -> None:
    """Log to stderr; every handler's output (tracebacks too) and uncaught exceptions redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)
    install_log_redaction(Redactor(settings.secrets()))
    # httpx logs every request URL, and Bot API URLs contain the token.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsbot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("run", "run the Telegram bot (long polling)"),
        ("console", "run commands without Telegram, from a prompt or standard input"),
        ("check", "validate the config and reach every endpoint; non-zero exit on failure"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", "-c", type=Path, required=True, help="YAML file")
    sub.add_parser("schema", help="print the configuration's JSON schema")
    totp = sub.add_parser("totp", help="step-up approval codes").add_subparsers(
        dest="totp", required=True
    )
    enroll = totp.add_parser("enroll", help="a new TOTP secret for NAME: otpauth URI and QR")
    enroll.add_argument("name")
    enroll.add_argument("--config", "-c", type=Path, required=True, help="YAML file")
    totp.add_parser("key", help="print a new approvals.totp_key")
    args = parser.parse_args(argv)

    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "totp" and args.totp == "key":
        from opsbot.stepup import new_key

        print(new_key())
        return 0
    try:
        settings = load_config(args.config)
    except ConfigError as exc:
        print(f"opsbot: {Redactor().redact(str(exc))}", file=sys.stderr)
        return 2
    setup_logging(settings)
    try:
        if args.command == "run":
            from opsbot.app import run

            run(settings)
            return 0
        if args.command == "totp":
            return asyncio.run(_enroll(settings, args.name))
        if args.command == "console":
            from opsbot.console import run_console

            return asyncio.run(run_console(settings))
        from opsbot.preflight import run_check

        return asyncio.run(run_check(settings))
    except ConfigError as exc:
        print(f"opsbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


async def _enroll(settings: Settings, name: str) -> int:
    """Store a new TOTP secret for NAME; print the otpauth URI and its QR code to scan."""
    import segno

    from opsbot.stepup import enroll
    from opsbot.store.factory import open_store

    store = open_store(settings)
    try:
        enrolment = await enroll(settings, store, name)
    finally:
        await store.close()
    print(f"TOTP for {enrolment.person.name}: scan the code or add this URI to your app.")
    print(enrolment.uri)
    segno.make(enrolment.uri, error="m").terminal(compact=True)
    return 0
