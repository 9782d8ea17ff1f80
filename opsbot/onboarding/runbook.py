"""``opsbot import``: runbooks' commands → a ``Draft``.

Each file's commands (``markdown.commands``) are split (``shell.simple_commands``) and
recognised (``recognise``); then the sightings become targets. One thing documented several
ways (compose, plain docker, Kubernetes) is one target, drafted as the way the runbook shows
first, the others as comments; something only looked at (``ps``, ``status``, ``describe``) is no
target of its own. Checks and backups join the target they name (Redis to redis, a dump to
postgres, ``getMe`` to the bot), else the target a command just before it in the same block
operates, else the runbook's main target. Bad input (missing, binary, not
Markdown, no commands) is one problem line each, and the rest is still drafted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opsbot.onboarding.draft import Draft, DraftTarget, target_name
from opsbot.onboarding.markdown import Command, commands, looks_like_markdown
from opsbot.onboarding.recognise import PROGRAMS, QUIET, recognise
from opsbot.onboarding.shell import is_placeholder, simple_commands
from opsbot.onboarding.sighting import Sighting

DOCKER_NOTE = (
    "url: the Docker engine of the host the containers run on (tcp://host:2376 with tls, "
    "or via_ssh: an ssh endpoint)"
)
_NEAR = {
    "postgres": ("postgres", "postgresql", "pg", "db", "database"),
    "redis": ("redis", "cache"),
    "bot": ("bot",),
}


@dataclass
class _Seen:
    """Every sighting of one thing under one kind, in order."""

    kind: str
    name: str
    fields: dict[str, object]
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    operated: bool = False


@dataclass
class _Reading:
    """What the files said, before it becomes a draft."""

    things: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    # checks, backups, notes: with the target a command just before in the same block named
    attached: list[tuple[Sighting, str, str]] = field(default_factory=list)
    in_block: str = ""
    destructive: list[tuple[str, str]] = field(default_factory=list)
    unknown: list[tuple[str, str]] = field(default_factory=list)


def import_runbooks(paths: list[Path], origin: str = "") -> Draft:
    """The draft of every runbook given, in order; problems are in ``draft.problems``."""
    draft = Draft(origin or "opsbot import " + " ".join(p.name for p in paths))
    reading = _Reading()
    for path in paths:
        text = _read(path, draft)
        if text is not None:
            _read_commands(path, text, reading, draft)
    _build(reading, draft)
    return draft


def _read(path: Path, draft: Draft) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        draft.problem(f"{path}: no such file")
        return None
    except IsADirectoryError:
        draft.problem(f"{path}: a directory, not a runbook")
        return None
    except OSError as exc:
        draft.problem(f"{path}: cannot read: {exc.strerror}")
        return None
    if b"\0" in data[:8192]:
        draft.problem(f"{path}: a binary file, not a Markdown runbook")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        draft.problem(f"{path}: not UTF-8 text, not a Markdown runbook")
        return None
    if not looks_like_markdown(text):
        draft.problem(f"{path}: not Markdown (no headings, lists or code blocks)")
        return None
    return text


def _read_commands(path: Path, text: str, reading: _Reading, draft: Draft) -> None:
    found = commands(text, PROGRAMS | QUIET | {"python", "python3", "bash", "sh", "make"})
    understood = 0
    cwd: str | None = None
    last_line = 0
    for command in found:
        if command.line > last_line + 1:
            cwd = None  # a new block: an earlier cd no longer holds
            reading.in_block = ""
        last_line = command.line + command.text.count("\n")
        source = f"{path.name}:{command.line}"
        for words in simple_commands(command.text):
            if words[0] == "cd" and len(words) > 1:
                cwd = None if is_placeholder(words[1]) else words[1]
                continue
            for sighting in recognise(words, cwd):
                understood += sighting.what != "unknown"
                _take(sighting, source, command, reading)
    if not found:
        draft.problem(f"{path}: no commands found (no code blocks or inline commands)")
    elif not understood:
        draft.problem(f"{path}: none of its {len(found)} commands is one opsbot knows")


def _take(sighting: Sighting, source: str, command: Command, reading: _Reading) -> None:
    text = " ".join(command.text.split())
    if sighting.what in ("target", "mention"):
        key = (sighting.kind, target_name(sighting.name))
        seen = reading.things.setdefault(
            key, _Seen(sighting.kind, sighting.name, dict(sighting.fields))
        )
        if source not in seen.sources:
            seen.sources.append(source)
        seen.notes += [n for n in sighting.notes if n not in seen.notes]
        seen.operated = seen.operated or sighting.what == "target"
        reading.in_block = _base(sighting.name)
    elif sighting.what in ("check", "backup", "note", "log"):
        reading.attached.append((sighting, source, reading.in_block))
    elif sighting.what == "destructive":
        reading.destructive.append((source, text))
    elif sighting.what == "unknown" and (source, text) not in reading.unknown:
        reading.unknown.append((source, text))


def _base(name: str) -> str:
    """A name without its replica and unit suffixes, to match one thing seen several ways."""
    name = target_name(name)
    name = re.sub(r"(?:[-_]\d+|\.service)$", "", name)
    return name


def _projects(reading: _Reading) -> set[str]:
    """Compose project names (``-p``, or the compose file's folder): container name prefixes."""
    found = set()
    for seen in reading.things.values():
        if seen.kind == "compose":
            command = list(seen.fields.get("compose_command") or [])  # type: ignore[call-overload]
            if "-p" in command and command.index("-p") + 1 < len(command):
                found.add(target_name(command[command.index("-p") + 1]))
            folder = str(seen.fields["file"]).rsplit("/", 2)
            if len(folder) == 3 and folder[1]:
                found.add(target_name(folder[1]))
    return found


def _build(reading: _Reading, draft: Draft) -> None:
    groups: dict[str, list[_Seen]] = {}
    projects = _projects(reading)
    for seen in reading.things.values():
        base = _base(seen.name)
        for project in projects if seen.kind == "container" else ():
            for sep in "-_":
                if base.startswith(project + sep) and len(base) > len(project) + 1:
                    base = base[len(project) + 1 :]
        groups.setdefault(base, []).append(seen)
    weight: Counter[str] = Counter()
    for base, group in groups.items():
        if not any(s.operated for s in group):
            continue  # only looked at: a database or proxy the runbook mentions
        group.sort(key=lambda s: not s.operated)  # stable: the first way documented leads
        main, others = group[0], group[1:]
        weight[base] = sum(len(s.sources) for s in group)
        endpoint = "local"
        if main.kind == "container":
            endpoint = "docker"
            draft.endpoint("docker", {"type": "docker"}, main.sources[0], [DOCKER_NOTE])
        target = draft.target(base, main.kind, dict(main.fields), "", endpoint)
        for source in main.sources:
            target.cite(source)
        for note in main.notes:
            target.note(note)
        for other in others:
            target.add_alternative(_describe(other), other.sources[0])
    _attach(reading, draft, weight)
    for source, text in reading.destructive:
        draft.unrecognised(source, f"{text}  (destructive: not drafted)")
    for source, text in reading.unknown:
        draft.unrecognised(source, text)


def _describe(seen: _Seen) -> str:
    if seen.kind == "k8s":
        namespace = seen.fields.get("namespace")
        return f"k8s deployment/{seen.fields['deployment']}" + (
            f" -n {namespace}" if namespace else ""
        )
    if seen.kind == "compose":
        return f"compose service {seen.fields['service']} ({seen.fields['file']})"
    detail = next(iter(seen.fields.values()), seen.name)
    return f"{seen.kind} {detail}"


def _attach(reading: _Reading, draft: Draft, weight: Counter[str]) -> None:
    """Checks, backups, notes and log files onto the target each belongs to."""
    for sighting, source, in_block in reading.attached:
        target = _home(sighting.near, draft, weight)
        if not sighting.near and in_block in draft.targets:
            target = draft.targets[in_block]  # the check right after `restart bot` is bot's
        if target is None:
            if sighting.what != "check":
                draft.unrecognised(source, "no target to attach this to: " + _summary(sighting))
                continue
            target = draft.target(_stem(source), "command", {}, source)
            target.note(
                "this runbook names no process, service or container: a command target of its "
                "checks (give it actions.status, or a kind)"
            )
        if sighting.what == "check":
            config = dict(sighting.fields)
            if config["type"] == "telegram":
                config["token_file"] = f"/etc/opsbot/secrets/{target.name}.token"
            target.add_check(config, source, sighting.notes)
        elif sighting.what == "backup":
            target.add_backup(dict(sighting.fields), source, sighting.notes)
        elif sighting.what == "log" and "log_file" in sighting.fields:
            target.config.setdefault("log_file", sighting.fields["log_file"])
            target.cite(source)
        for note in sighting.notes if sighting.what == "note" else ():
            if not any(n.startswith(note) for n in target.notes):  # once, citing the first
                target.note(f"{note} ({source})")


def _home(near: str, draft: Draft, weight: Counter[str]) -> DraftTarget | None:
    if not draft.targets:
        return None
    words = _NEAR.get(near, (near,) if near else ())
    for name, target in draft.targets.items():
        if any(w in re.split(r"[-_.]", name) or name.startswith(w) for w in words):
            return target
    for name, target in draft.targets.items():
        if near and near in name:
            return target
    main = max(draft.targets, key=lambda n: (weight[n], -list(draft.targets).index(n)))
    return draft.targets[main]


def _stem(source: str) -> str:
    stem = source.rsplit(":", 1)[0].rsplit(".", 1)[0]
    return target_name(stem)


def _summary(sighting: Sighting) -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in sighting.fields.items())
    return f"a {sighting.what} ({fields})" if fields else f"a {sighting.what}"
