"""``opsbot import RUNBOOK.md… [--json] [--merge FILE [--yes]]``: the draft on stdout, the
report on stderr; with ``--merge``, the diff of FILE, written only on ``--yes`` or a "y".

Exit status: 0 drafted cleanly; 1 something could not be read (the partial draft is still
printed, each problem one line); 2 the merged file would not be valid configuration, or FILE
cannot be read (nothing written).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import TextIO

from opsbot.config import load_config, tolerating_unreadable_secret_files
from opsbot.errors import ConfigError
from opsbot.onboarding.draft import Draft
from opsbot.onboarding.merge import diff, merge
from opsbot.onboarding.runbook import import_runbooks


def run_import(
    runbooks: list[Path],
    *,
    as_json: bool = False,
    merge_into: Path | None = None,
    yes: bool = False,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Draft from the runbooks; print, or merge into ``merge_into``. Returns the exit status."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    draft = import_runbooks(runbooks)
    status = 1 if draft.problems else 0  # each problem is a line of the report
    try:
        draft.validate()
    except ConfigError as exc:  # a recogniser drafted something the config rejects: our bug
        print(f"opsbot import: the draft is not valid configuration: {exc}", file=stderr)
        status = 2
    if merge_into is not None:
        return max(status, merge_draft(draft, merge_into, yes, stdin, stdout, stderr))
    stdout.write(draft.to_json() + "\n" if as_json else draft.to_yaml())
    for line in draft.report():
        print(line, file=stderr)
    return status


def merge_draft(
    draft: Draft,
    path: Path,
    yes: bool,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    *,
    command: str = "opsbot import",
) -> int:
    """``--merge PATH``: the report, the diff, then PATH written on ``yes`` or a "y" (also
    ``opsbot discover --merge``; ``command`` names which in its messages)."""
    try:
        before = path.read_text() if path.exists() else ""
        after, added = merge(before, draft, str(path))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{command}: {path}: cannot read: {exc}", file=stderr)
        return 2
    except ConfigError as exc:
        print(f"{command}: {exc}", file=stderr)
        return 2
    for line in draft.report():
        print(line, file=stderr)
    if not added:
        print(f"{path}: nothing new to add", file=stderr)
        return 0
    try:
        _validate_text(after, path)
    except ConfigError as exc:
        print(f"{command}: {path} with the draft would not be valid: {exc}", file=stderr)
        return 2
    stdout.write(diff(before, after, path.name))
    stdout.flush()
    print(f"adds {', '.join(added)}", file=stderr)
    if not yes:
        if not stdin.isatty():
            print(f"{path}: not written (run again with --yes to write it)", file=stderr)
            return 0
        print(f"write {path}? [y/N] ", end="", file=stderr, flush=True)
        if stdin.readline().strip().lower() not in ("y", "yes"):
            print(f"{path}: not written", file=stderr)
            return 0
    path.write_text(after)
    print(f"{path}: written", file=stderr)
    return 0


def _validate_text(text: str, path: Path) -> None:
    """The merged file through ``opsbot check``'s loader (secret files may be missing here)."""
    with tempfile.TemporaryDirectory(prefix="opsbot-merge-") as folder:
        copy = Path(folder) / path.name
        copy.write_text(text)
        with tolerating_unreadable_secret_files():
            load_config(copy)
