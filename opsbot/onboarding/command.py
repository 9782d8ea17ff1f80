"""``opsbot discover ENDPOINT…``: the draft on stdout, the report on stderr, never a traceback.

Exit status: 0 when every endpoint was read, 1 when something could not be (the draft then
holds what could), 2 for a bad command line or config (nothing ran). ``--merge FILE`` is
``opsbot import``'s: the diff of what is new, FILE written only with ``--yes``.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from opsbot.config import Settings, load_config
from opsbot.errors import ConfigError, UsageError
from opsbot.onboarding.drafting import Drafted, discover_draft
from opsbot.onboarding.importing import merge_draft
from opsbot.redact import Redactor


def run_discover(
    words: list[str],
    config: Path | None,
    *,
    as_json: bool = False,
    timeout: float = 20.0,
    merge_into: Path | None = None,
    yes: bool = False,
) -> int:
    redactor = Redactor()
    try:
        settings: Settings | None = load_config(config) if config is not None else None
        if settings is not None:
            redactor = Redactor(settings.secrets())
        drafted = asyncio.run(discover_draft(words, settings, deadline=max(1.0, timeout)))
    except (ConfigError, UsageError) as exc:
        print(f"opsbot: {redactor.redact(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    status = 1 if drafted.failed else 0
    if merge_into is not None:  # the report, the diff, written on --yes (import's own merge)
        for line in [*drafted.summary(), *(f"note: {n}" for n in drafted.notes)]:
            print(redactor.redact(line), file=sys.stderr)
        merged = merge_draft(
            drafted.draft, merge_into, yes, sys.stdin, sys.stdout, sys.stderr,
            command="opsbot discover",
        )  # fmt: skip
        return max(status, merged)
    out = drafted.draft.to_json() if as_json else drafted.draft.to_yaml()
    print(redactor.redact(out), end="" if out.endswith("\n") else "\n")
    for line in report(drafted):
        print(redactor.redact(line), file=sys.stderr)
    return status


def report(drafted: Drafted) -> list[str]:
    """The summary per endpoint, the draft's own report, the notes; and whether the draft is
    valid config (it should always be: a failure here is a bug to report)."""
    lines = [*drafted.summary(), *drafted.draft.report()]
    lines += [f"note: {note}" for note in drafted.notes]
    try:
        drafted.draft.validate()
    except ConfigError as exc:
        drafted.draft.problem(f"the draft is not valid config: {exc}")
        lines.append(drafted.draft.problems[-1])
    return lines
