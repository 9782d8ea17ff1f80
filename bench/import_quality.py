"""Benchmark: how right `opsbot import` is, scored against hand-written answer keys.

Each of the project's test runbooks (`tests/onboarding/runbooks/NAME.md`) has an answer key
(`NAME.key.yaml`): its targets with their kind, checks and backups, the alternatives that are
comments and not targets, and the placeholders it contains. The draft's items (a target with
its kind, each check, each backup) are matched against the key's: precision (drafted items the
key has) and recall (key items drafted), per file and over all. Two counts must be 0: drafted
argv that is destructive (`down -v`, `rm -rf`, `DROP`, `pm2 kill`, …) and placeholders
written as values. Aim: recall ≥ 0.9, precision ≥ 0.95. Appends a row to bench/RESULTS.md.

    python bench/import_quality.py [--no-write] [RUNBOOK.md…]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from opsbot.onboarding.runbook import import_runbooks
from opsbot.onboarding.shell import is_placeholder

RUNBOOKS = Path(__file__).resolve().parent.parent / "tests" / "onboarding" / "runbooks"
HEADER = "| date | file | items | precision | recall | destructive | literal placeholders |"
DESTRUCTIVE = re.compile(
    r"\b(?:down\s+(?:-v|--volumes)|rm\s+-[a-zA-Z]*r|prune|delete|kill|DROP|FLUSH|TRUNCATE"
    r"|setWebhook|deleteWebhook)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Score:
    file: str
    drafted: frozenset[str]
    expected: frozenset[str]
    destructive: int
    placeholders: int

    @property
    def hits(self) -> int:
        return len(self.drafted & self.expected)

    @property
    def precision(self) -> float:
        return self.hits / len(self.drafted) if self.drafted else 1.0

    @property
    def recall(self) -> float:
        return self.hits / len(self.expected) if self.expected else 1.0


def check_item(target: str, check: dict[str, Any]) -> str:
    kind = check["type"]
    detail = {"http": check.get("url"), "command": " ".join(check.get("argv", []))}.get(kind)
    return f"{target} check {kind}" + (f" {detail}" if detail else "")


def backup_item(target: str, backup: dict[str, Any]) -> str:
    kind = backup["type"]
    detail = {"postgres": backup.get("database"), "sqlite": backup.get("path"),
              "files": " ".join(backup.get("paths", []))}.get(kind)  # fmt: skip
    return f"{target} backup {kind}" + (f" {detail}" if detail else "")


def items_of_config(config: dict[str, Any]) -> set[str]:
    found = set()
    for name, target in (config.get("targets") or {}).items():
        found.add(f"{name} target {target['kind']}")
        found |= {check_item(name, c) for c in target.get("checks", [])}
        found |= {backup_item(name, b) for b in target.get("backups", [])}
    return found


def items_of_key(key: dict[str, Any]) -> set[str]:
    found = set()
    for name, target in (key.get("targets") or {}).items():
        found.add(f"{name} target {target['kind']}")
        for line in target.get("checks", []):
            found.add(f"{name} check {line}")
        for line in target.get("backups", []):
            found.add(f"{name} backup {line}")
    return found


def _values(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for item in value.values() for v in _values(item)]
    if isinstance(value, list):
        return [v for item in value for v in _values(item)]
    return [str(value)]


def _argvs(config: dict[str, Any]) -> list[str]:
    found = []
    for target in (config.get("targets") or {}).values():
        found += [" ".join(argv) for argv in (target.get("actions") or {}).values()]
        found += [" ".join(c["argv"]) for c in target.get("checks", []) if "argv" in c]
    return found


def score(runbook: Path) -> Score:
    """The draft of one runbook against its answer key (``NAME.key.yaml`` beside it)."""
    key = yaml.safe_load(runbook.with_suffix(".key.yaml").read_text())
    config = import_runbooks([runbook]).config()
    literal = [p for p in key.get("placeholders", []) if p]
    placeholders = sum(
        1 for v in _values(config) if is_placeholder(v) or any(p in v for p in literal)
    )
    return Score(
        runbook.name,
        frozenset(items_of_config(config)),
        frozenset(items_of_key(key)),
        sum(1 for argv in _argvs(config) if DESTRUCTIVE.search(argv)),
        placeholders,
    )


def total(scores: list[Score]) -> Score:
    """All files as one: items prefixed with their file so equal names do not merge."""
    return Score(
        "all",
        frozenset(f"{s.file}: {i}" for s in scores for i in s.drafted),
        frozenset(f"{s.file}: {i}" for s in scores for i in s.expected),
        sum(s.destructive for s in scores),
        sum(s.placeholders for s in scores),
    )


def row(s: Score, when: str) -> str:
    return (
        f"| {when} | {s.file} | {len(s.expected)} | {s.precision:.2f} | {s.recall:.2f} "
        f"| {s.destructive} | {s.placeholders} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runbooks", nargs="*", type=Path, help="default: the test runbooks")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    runbooks = args.runbooks or sorted(RUNBOOKS.glob("*.md"))
    scores = [score(path) for path in runbooks]
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    lines = [row(s, when) for s in [*scores, total(scores)]]
    print(HEADER)
    print("\n".join(lines))
    for s in scores:
        for item in sorted(s.expected - s.drafted):
            print(f"  missed  {s.file}: {item}")
        for item in sorted(s.drafted - s.expected):
            print(f"  extra   {s.file}: {item}")
    if not args.no_write:
        from bench.scale_lab import append_result

        for line in lines:
            append_result("import_quality", HEADER, line)


if __name__ == "__main__":
    main()
