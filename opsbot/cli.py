"""The ``opsbot`` command: run | console | check | schema | import | discover."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from importlib import metadata
from pathlib import Path

from opsbot.config import Settings, json_schema, load_config
from opsbot.errors import ConfigError
from opsbot.logsetup import setup_logging
from opsbot.redact import Redactor

DISTRIBUTION = "opsbot-chatops"


def version() -> str:
    """The installed distribution's version (``opsbot-chatops`` on PyPI)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="opsbot", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", type=Path, required=True, help="YAML file")
    common.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="json: one object per line, for log shippers (default: log_format, else text)",
    )
    commands = {}
    for name, text in (
        ("run", "run the Telegram bot (long polling or webhook)"),
        ("console", "run commands without Telegram, from a prompt or standard input"),
        ("check", "validate the config and reach every endpoint; non-zero exit on failure"),
    ):
        commands[name] = sub.add_parser(name, help=text, parents=[common])
    commands["console"].add_argument(
        "--as",
        dest="as_name",
        metavar="NAME",
        help="act as this configured person, with that person's role (default: an admin)",
    )
    sub.add_parser("schema", help="print the configuration's JSON schema")
    draft = sub.add_parser("import", help="draft a config from runbooks' commands (YAML)")
    draft.add_argument("runbooks", nargs="+", type=Path, metavar="RUNBOOK.md")
    draft.add_argument("--json", action="store_true", help="the draft as JSON")
    draft.add_argument("--merge", type=Path, metavar="FILE", help="add what is new to FILE")
    draft.add_argument("--yes", "-y", action="store_true", help="with --merge: write, no prompt")
    totp = sub.add_parser("totp", help="step-up approval codes").add_subparsers(
        dest="totp", required=True
    )
    enroll = totp.add_parser("enroll", help="a new TOTP secret for NAME: otpauth URI and QR")
    enroll.add_argument("name")
    enroll.add_argument("--config", "-c", type=Path, required=True, help="YAML file")
    totp.add_parser("key", help="print a new approvals.totp_key")
    discover = sub.add_parser(
        "discover", help="draft a config from what runs on endpoints (read-only); YAML on stdout"
    )
    discover.add_argument(
        "endpoints", nargs="+", metavar="ENDPOINT",
        help="a config endpoint, ssh://user@host[:port], unix:///path or tcp://host:port, local",
    )  # fmt: skip
    discover.add_argument("--config", "-c", type=Path, help="YAML file naming the endpoints")
    discover.add_argument("--json", action="store_true", help="the draft as JSON")
    discover.add_argument(
        "--timeout", type=float, default=20.0, help="seconds per endpoint (default 20)"
    )
    discover.add_argument("--merge", type=Path, metavar="FILE", help="add what is new to FILE")
    discover.add_argument("--yes", "-y", action="store_true", help="with --merge: write")
    args = parser.parse_args(argv)

    if args.command == "import":
        from opsbot.onboarding.importing import run_import

        return run_import(args.runbooks, as_json=args.json, merge_into=args.merge, yes=args.yes)
    if args.command == "schema":
        print(json.dumps(json_schema(), indent=2))
        return 0
    if args.command == "totp" and args.totp == "key":
        from opsbot.actions.stepup import new_key

        print(new_key())
        return 0
    if args.command == "discover":
        from opsbot.onboarding.command import run_discover

        return run_discover(
            args.endpoints, args.config, as_json=args.json, timeout=args.timeout,
            merge_into=args.merge, yes=args.yes,
        )  # fmt: skip
    try:
        if args.command == "check":
            from opsbot.preflight import load_for_check

            settings, unreadable = load_for_check(args.config)
        else:
            settings, unreadable = load_config(args.config), []
    except ConfigError as exc:
        print(f"opsbot: {Redactor().redact(str(exc))}", file=sys.stderr)
        return 2
    setup_logging(settings, getattr(args, "log_format", None) or settings.log_format)
    try:
        if args.command == "run":
            from opsbot.runner import run

            run(settings)
            return 0
        if args.command == "totp":
            return asyncio.run(_enroll(settings, args.name))
        if args.command == "console":
            from opsbot.console import run_console

            return asyncio.run(run_console(settings, as_name=args.as_name))
        from opsbot.preflight import run_check

        return asyncio.run(run_check(settings, unreadable=unreadable))
    except ConfigError as exc:
        print(f"opsbot: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one line, no traceback, no secret: start-up must not crash-loop
        text = Redactor(settings.secrets()).redact(str(exc).splitlines()[0] if str(exc) else "")
        print(f"opsbot: {args.command} failed: {type(exc).__name__}: {text}", file=sys.stderr)
        return 1


async def _enroll(settings: Settings, name: str) -> int:
    """Store a new TOTP secret for NAME; print the otpauth URI and its QR code to scan."""
    import segno

    from opsbot.actions.stepup import enroll
    from opsbot.state.store.factory import open_store

    store = open_store(settings)
    try:
        enrolment = await enroll(settings, store, name)
    finally:
        await store.close()
    print(f"TOTP for {enrolment.person.name}: scan the code or add this URI to your app.")
    print(enrolment.uri)
    segno.make(enrolment.uri, error="m").terminal(compact=True)
    return 0
