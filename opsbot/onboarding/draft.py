"""A draft inventory: what ``opsbot import`` (a runbook) or ``opsbot discover`` (a host) found.

The draft is configuration: ``Draft.config()`` is the ``endpoints:``/``targets:`` mapping of an
opsbot YAML file, ``Draft.to_yaml()`` prints it with a comment above each entry citing where it
came from (``FILE:LINE``, or what was probed) and what is left to fill in, and
``Draft.validate()`` runs it through the same loader as ``opsbot check``. Nothing here reads a
runbook or probes a host; the builders fill a ``Draft`` through this API (stable: add, don't
rename):

- ``Draft(origin)``: ``origin`` names the input in the YAML header (``"opsbot import a.md"``).
- ``draft.endpoint(name, config, source, notes=())`` → ``DraftEntry``: adds (or returns) an
  endpoint; ``config`` is its mapping (``{"type": "docker"}``).
- ``draft.target(name, kind, fields, source, endpoint="local", notes=())`` → ``DraftTarget``:
  adds a target, or returns the one of that name (its sources grow). ``fields`` are the kind's
  keys (``{"process": "bot"}``); ``name`` is made a valid config name (``target_name``).
- ``DraftTarget.add_check(config, source, notes=())`` / ``add_backup(...)``: appended unless
  the same check or backup is already there (then only its sources grow).
- ``DraftTarget.set_action(action, argv, source)``: ``actions.restart`` etc., first one wins.
- ``DraftTarget.add_alternative(text, source)``: another way the runbook runs the same thing
  (plain docker beside compose, Kubernetes): a comment, not a second target.
- ``DraftTarget.add_elsewhere(environment, text, source)``: what the runbook runs against
  another environment (``staging: http check https://staging…/health``): a comment only.
- ``DraftEntry.note(text)``: a "fill in" note (what to replace, never a placeholder value).
- ``draft.unrecognised(source, command)``: a command nothing understood (the report's tail).
- ``draft.problem(text)``: one line of what went wrong reading the input (bad file, no commands).
- ``draft.config()`` → dict · ``to_yaml()`` → str · ``to_json()`` → str (``{"config": …,
  "sources": {path: [FILE:LINE…]}, "notes": {path: […]}, "unrecognised": […], "problems": […]}``)
  · ``validate()`` → ``Settings`` (raises ``ConfigError``) · ``report()`` → lines for stderr
  · ``document()`` → the ruamel tree ``to_yaml`` dumps (``merge.py`` inserts from it).
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from opsbot.config import Settings, load_config

#: Per type, the keys of a check or backup that make it "the same one" (a second curl of one
#: URL, a pg_restore of the database pg_dump backs up).
_IDENTITY = {
    "http": ("url",),
    "tcp": ("host", "port"),
    "command": ("argv", "endpoint"),
    "telegram": (),
    "metric": ("url", "metric", "labels"),
    "postgres": ("database",),
    "sqlite": ("path",),
    "redis": ("dump_path",),
    "files": ("paths",),
}


@dataclass
class DraftEntry:
    """One drafted item: its config mapping, where it was found, what is left to fill in."""

    config: dict[str, Any]
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def cite(self, source: str) -> None:
        if source and source not in self.sources:
            self.sources.append(source)

    def note(self, text: str) -> None:
        if text and text not in self.notes:
            self.notes.append(text)

    def comment(self) -> str:
        lines = [f"from {cite(self.sources)}"] if self.sources else []
        return "\n".join([*lines, *(f"fill in: {n}" for n in self.notes)])


def cite(sources: list[str], most: int = 8) -> str:
    """``a.md:3, 9, 12, b.md:4`` (lines of one file after its name; at most ``most`` shown)."""
    parts: list[str] = []
    last_file = None
    for source in sources[:most]:
        file, sep, line = source.rpartition(":")
        if sep and line.isdigit() and file == last_file:
            parts.append(line)
        else:
            parts.append(source)
            last_file = file if sep and line.isdigit() else None
    more = len(sources) - most
    return ", ".join(parts) + (f" (and {more} more)" if more > 0 else "")


@dataclass
class DraftTarget(DraftEntry):
    """A target: its kind and kind's fields in ``config``; checks, backups, alternatives."""

    name: str = ""
    checks: list[DraftEntry] = field(default_factory=list)
    backups: list[DraftEntry] = field(default_factory=list)
    alternatives: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return str(self.config["kind"])

    def add_check(
        self, config: dict[str, Any], source: str, notes: Iterable[str] = ()
    ) -> DraftEntry:
        return _add_once(self.checks, config, source, notes)

    def add_backup(
        self, config: dict[str, Any], source: str, notes: Iterable[str] = ()
    ) -> DraftEntry:
        return _add_once(self.backups, config, source, notes)

    def set_action(self, action: str, argv: list[str], source: str) -> None:
        actions = self.config.setdefault("actions", {})
        if action not in actions:
            actions[action] = list(argv)
            self.cite(source)

    def add_alternative(self, text: str, source: str) -> None:
        line = f"also documented as: {text} ({source})" if source else f"also: {text}"
        if not any(a.startswith(f"also documented as: {text} (") for a in self.alternatives):
            self.alternatives.append(line)

    def add_elsewhere(self, environment: str, text: str, source: str) -> None:
        """What the runbook runs against another copy (staging, DR): a comment, never config."""
        line = f"{environment}: {text} ({source})"
        if not any(a.startswith(f"{environment}: {text} (") for a in self.alternatives):
            self.alternatives.append(line)

    def comment(self) -> str:
        return "\n".join(filter(None, [super().comment(), *self.alternatives]))


def identity(config: dict[str, Any]) -> str:
    """What makes a check or backup "the same one" (its type and the keys that name it)."""
    keys = ("type", *_IDENTITY.get(str(config.get("type")), tuple(sorted(config))))
    return json.dumps([config.get(k) for k in keys], default=str)


def _add_once(
    entries: list[DraftEntry], config: dict[str, Any], source: str, notes: Iterable[str]
) -> DraftEntry:
    for entry in entries:
        if identity(entry.config) == identity(config):
            for key, value in config.items():  # what the first sighting did not say
                entry.config.setdefault(key, value)
            break
    else:
        entry = DraftEntry(dict(config))
        entries.append(entry)
    entry.cite(source)
    for text in notes:
        entry.note(text)
    return entry


def target_name(text: str) -> str:
    """A valid config name from a process, service or container name (``My_Bot`` → ``my_bot``)."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", text.strip().lower()).strip("-_.")
    return (name or "target")[:32].rstrip("-_.") or "target"


@dataclass
class Draft:
    """The whole draft: endpoints and targets in the order found, and what could not be read."""

    origin: str = "opsbot"
    endpoints: dict[str, DraftEntry] = field(default_factory=dict)
    targets: dict[str, DraftTarget] = field(default_factory=dict)
    unknown: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    # ----------------------------------------------------------------- building

    def endpoint(
        self, name: str, config: dict[str, Any], source: str = "", notes: Iterable[str] = ()
    ) -> DraftEntry:
        entry = self.endpoints.setdefault(name, DraftEntry(dict(config)))
        entry.cite(source)
        for text in notes:
            entry.note(text)
        return entry

    def target(
        self,
        name: str,
        kind: str,
        fields: dict[str, Any],
        source: str,
        endpoint: str = "local",
        notes: Iterable[str] = (),
    ) -> DraftTarget:
        name = target_name(name)
        found = self.targets.get(name)
        if found is None:
            found = DraftTarget({"kind": kind, "endpoint": endpoint, **fields}, name=name)
            self.targets[name] = found
        found.cite(source)
        for text in notes:
            found.note(text)
        return found

    def unrecognised(self, source: str, command: str) -> None:
        if (source, command) not in self.unknown:
            self.unknown.append((source, command))

    def problem(self, text: str) -> None:
        self.problems.append(text)

    # ----------------------------------------------------------------- output

    def config(self) -> dict[str, Any]:
        """The plain configuration mapping (``endpoints``, ``targets``); empty ones left out."""
        out: dict[str, Any] = {}
        if self.endpoints:
            out["endpoints"] = {n: dict(e.config) for n, e in self.endpoints.items()}
        if self.targets:
            out["targets"] = {n: _target_config(t) for n, t in self.targets.items()}
        return out

    def document(self) -> CommentedMap:
        """The configuration as a ruamel tree, each entry with its comment above it."""
        root = CommentedMap()
        for section, entries in (("endpoints", self.endpoints), ("targets", self.targets)):
            if not entries:
                continue
            mapping = CommentedMap()
            for name, entry in entries.items():
                mapping[name] = entry_node(entry)
                if comment := entry.comment():
                    mapping.yaml_set_comment_before_after_key(name, before=comment, indent=2)
            root[section] = mapping
        root.yaml_set_start_comment(
            f"Drafted by {self.origin}: review every entry, then `opsbot check --config FILE`.\n"
            "Not drafted: telegram (token_file, ops_chat_id) and people; add them by hand."
        )
        return root

    def to_yaml(self) -> str:
        out = io.StringIO()
        yaml().dump(self.document(), out)
        return out.getvalue()

    def to_json(self) -> str:
        sources: dict[str, list[str]] = {}
        notes: dict[str, list[str]] = {}
        for path, entry in self._entries():
            if entry.sources:
                sources[path] = list(entry.sources)
            if entry.notes:
                notes[path] = list(entry.notes)
        return json.dumps(
            {
                "config": self.config(),
                "sources": sources,
                "notes": notes,
                "unrecognised": [{"source": s, "command": c} for s, c in self.unknown],
                "problems": list(self.problems),
            },
            indent=2,
        )

    def validate(self) -> Settings:
        """The draft through ``opsbot check``'s loader; ``ConfigError`` names what is wrong."""
        with tempfile.TemporaryDirectory(prefix="opsbot-draft-") as folder:
            path = Path(folder) / "draft.yaml"
            path.write_text(self.to_yaml())
            return load_config(path)

    def report(self) -> list[str]:
        """What stderr shows: counts, each problem, every command not understood."""
        checks = sum(len(t.checks) for t in self.targets.values())
        backups = sum(len(t.backups) for t in self.targets.values())
        lines = [
            f"drafted {len(self.targets)} target(s), {checks} check(s), {backups} backup(s), "
            f"{len(self.endpoints)} endpoint(s)"
        ]
        lines += [f"problem: {p}" for p in self.problems]  # one line each
        if self.unknown:
            lines.append(f"not understood ({len(self.unknown)}):")
            lines += [f"  {s}: {c}" for s, c in self.unknown]
        return lines

    def _entries(self) -> Iterable[tuple[str, DraftEntry]]:
        for name, endpoint in self.endpoints.items():
            yield f"endpoints.{name}", endpoint
        for name, target in self.targets.items():
            yield f"targets.{name}", target
            for i, check in enumerate(target.checks):
                yield f"targets.{name}.checks.{i}", check
            for i, backup in enumerate(target.backups):
                yield f"targets.{name}.backups.{i}", backup


def _target_config(target: DraftTarget) -> dict[str, Any]:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in target.config.items()}
    if target.checks:
        out["checks"] = [dict(c.config) for c in target.checks]
    if target.backups:
        out["backups"] = [dict(b.config) for b in target.backups]
    return out


def entry_node(entry: DraftEntry) -> CommentedMap:
    """One endpoint or target as a ruamel mapping; checks and backups carry their comments."""
    config = _target_config(entry) if isinstance(entry, DraftTarget) else dict(entry.config)
    node: CommentedMap = _node(config)
    if isinstance(entry, DraftTarget):
        for section, items in (("checks", entry.checks), ("backups", entry.backups)):
            for i, item in enumerate(items):
                if item.comment():
                    node[section].yaml_set_comment_before_after_key(
                        i, before=item.comment(), indent=6
                    )
    return node


def _node(value: Any) -> Any:
    if isinstance(value, dict):
        return CommentedMap((k, _node(v)) for k, v in value.items())
    if isinstance(value, list):
        seq = CommentedSeq(_node(v) for v in value)
        if all(isinstance(v, str | int | float) for v in value):
            seq.fa.set_flow_style()  # argv: [pg_isready, -d, app]
        return seq
    return value


def yaml() -> YAML:
    """The round-trip YAML the draft and ``--merge`` write with (2-space maps, ``- `` lists)."""
    out = YAML()
    out.indent(mapping=2, sequence=4, offset=2)
    out.width = 4096  # an argv stays on one line
    out.preserve_quotes = True  # a hand-quoted value stays quoted
    return out
