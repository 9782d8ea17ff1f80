"""``opsbot import``: runbooks' commands → a ``Draft``.

Each file's commands (``markdown.commands``) are split (``shell.simple_commands``) and
recognised (``recognise``); then the sightings become targets. One thing documented several
ways (compose, plain docker, Kubernetes) is one target, drafted as the way the runbook shows
first, the others as comments; something only looked at (``ps``, ``status``, ``describe``) is no
target of its own. Checks and backups join their target as ``attach.py`` says; what runs
against staging, DR or a developer's machine (``environments.py``) is a comment of its target,
never config. Bad input (missing, binary, not Markdown, no commands) is one problem line each,
and the rest is still drafted.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opsbot.onboarding.attach import Loose, attach
from opsbot.onboarding.draft import Draft, target_name
from opsbot.onboarding.environments import environment
from opsbot.onboarding.markdown import Command, commands, looks_like_markdown
from opsbot.onboarding.recognise import PROGRAMS, QUIET, recognise
from opsbot.onboarding.shell import is_placeholder, simple_commands
from opsbot.onboarding.sighting import Sighting, infrastructure

DOCKER_NOTE = (
    "url: the Docker engine of the host the containers run on (tcp://host:2376 with tls, "
    "or via_ssh: an ssh endpoint)"
)


@dataclass
class _Seen:
    """Every sighting of one thing under one kind, in order."""

    kind: str
    name: str
    fields: dict[str, object]
    sources: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    operated: bool = False
    headings: list[str] = field(default_factory=list)  # of the sections it is seen in


@dataclass
class _Reading:
    """What the files said, before it becomes a draft."""

    things: dict[tuple[str, str], _Seen] = field(default_factory=dict)
    loose: list[Loose] = field(default_factory=list)  # checks, backups, notes, log files
    elsewhere: list[tuple[str, Sighting, str]] = field(default_factory=list)  # staging targets
    in_block: str = ""  # the target a command before, in the same block, operates
    block: int = 0
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
            reading.block += 1
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
    where = environment(sighting, command) if sighting.what != "destructive" else ""
    if where and sighting.what in ("target", "mention"):
        reading.elsewhere.append((where, sighting, source))
    elif sighting.what in ("target", "mention"):
        key = (sighting.kind, target_name(sighting.name))
        seen = reading.things.setdefault(
            key, _Seen(sighting.kind, sighting.name, dict(sighting.fields))
        )
        if source not in seen.sources:
            seen.sources.append(source)
            seen.headings.append(command.heading)
        seen.notes += [n for n in sighting.notes if n not in seen.notes]
        seen.operated = seen.operated or sighting.what == "target"
        reading.in_block = _base(sighting.name)
    elif sighting.what in ("check", "backup", "note", "log"):
        reading.loose.append(Loose(sighting, source, reading.block, reading.in_block, where))
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
    _join_lone_container(groups)
    weight: dict[str, Counter[str]] = {}
    other_ways: dict[str, set[str]] = {}
    for base, group in groups.items():
        if not any(s.operated for s in group):
            continue  # only looked at: a database or proxy the runbook mentions
        group.sort(key=lambda s: not s.operated)  # stable: the first way documented leads
        main, others = group[0], group[1:]
        for source in (source for s in group for source in s.sources):
            weight.setdefault(source.rsplit(":", 1)[0], Counter())[base] += 1
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
        other_ways[target.name] = {
            f"container:{s.fields['container']}" if s.kind == "container" else s.kind
            for s in others
        }
    attach(reading.loose, draft, weight, other_ways)
    _elsewhere(reading, draft)
    for source, text in reading.destructive:
        draft.unrecognised(source, f"{text}  (destructive: not drafted)")
    for source, text in reading.unknown:
        draft.unrecognised(source, text)


_ANOTHER_WAY = re.compile(
    r"\b(?:option|alternative(?:ly)?|standalone|instead|plain docker|without (?:docker[- ])?"
    r"compose|without kubernetes|docker run)\b",
    re.IGNORECASE,
)


def _join_lone_container(groups: dict[str, list[_Seen]]) -> None:
    """A plain container under a heading that offers another way ("Option 2: Standalone
    Docker"), beside one compose service or deployment, is that bot run another way, even
    under another name; with two candidates either side nothing is guessed."""
    def operated(kinds: tuple[str, ...]) -> list[str]:
        return [
            base for base, group in groups.items()
            if not infrastructure(base) and any(s.operated for s in group)
            and next(s for s in group if s.operated).kind in kinds
        ]  # fmt: skip

    hosts, containers = operated(("compose", "k8s")), operated(("container",))
    if len(hosts) != 1 or len(containers) != 1:
        return
    lone = groups[containers[0]]
    if any(_ANOTHER_WAY.search(h) for s in lone for h in s.headings):
        groups[hosts[0]] += groups.pop(containers[0])


def _describe(seen: _Seen) -> str:
    if seen.kind == "k8s":
        namespace, context = seen.fields.get("namespace"), seen.fields.get("context")
        return f"k8s deployment/{seen.fields['deployment']}" + (
            f" -n {namespace}" if namespace else ""
        ) + (f" --context {context}" if context else "")
    if seen.kind == "compose":
        return f"compose service {seen.fields['service']} ({seen.fields['file']})"
    detail = next(iter(seen.fields.values()), seen.name)
    return f"{seen.kind} {detail}"


def _elsewhere(reading: _Reading, draft: Draft) -> None:
    """Targets seen only in staging, DR or development: a comment of the production one."""
    for where, sighting, source in reading.elsewhere:
        seen = _Seen(sighting.kind, sighting.name, dict(sighting.fields))
        target = draft.targets.get(_base(sighting.name))
        if target is not None:
            target.add_elsewhere(where, _describe(seen), source)
        else:
            text = f"{_describe(seen)}  ({where}, not production: not drafted)"
            draft.unrecognised(source, text)
