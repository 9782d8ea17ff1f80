"""``--merge config.yaml``: add a draft's new endpoints and targets to a config, keep the rest.

The file is loaded round-trip (ruamel.yaml), so its comments, key order, quoting and hand
edits survive; an entry already there (by name, or a target operating the same process,
unit, service, deployment or container under another name) is left as the file has it.
"""

from __future__ import annotations

import difflib
import io
from typing import Any

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from opsbot.errors import ConfigError
from opsbot.onboarding.draft import Draft, DraftEntry, DraftTarget, entry_node, yaml

#: The keys that say which thing a target of each kind operates.
_IDENTITY = {
    "pm2": ("process",),
    "systemd": ("unit",),
    "compose": ("service", "file"),
    "k8s": ("deployment", "namespace"),
    "container": ("container",),
}


def merge(existing: str, draft: Draft, where: str = "config") -> tuple[str, list[str]]:
    """The file's text with what is new in the draft added, and the ``section.name``s added."""
    try:
        document = yaml().load(existing) if existing.strip() else CommentedMap()
    except YAMLError as exc:  # one line: where and what, not ruamel's multi-line picture
        mark = getattr(exc, "problem_mark", None)
        line = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}{line}: not valid YAML: {problem}") from None
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ConfigError(f"{where}: the top level must be a mapping")
    added: list[str] = []
    sections: tuple[tuple[str, dict[str, Any]], ...] = (
        ("endpoints", draft.endpoints),
        ("targets", draft.targets),
    )
    for section, entries in sections:
        mapping = document.get(section)
        if mapping is None and not entries:
            continue
        if mapping is None:
            mapping = document[section] = CommentedMap()
        if not isinstance(mapping, CommentedMap):
            raise ConfigError(f"{where}: {section} must be a mapping")
        for name, entry in entries.items():
            if name in mapping or _same_thing(entry, mapping):
                continue
            mapping[name] = entry_node(entry)
            if comment := entry.comment():
                mapping.yaml_set_comment_before_after_key(name, before=comment, indent=2)
            added.append(f"{section}.{name}")
    out = io.StringIO()
    yaml().dump(document, out)
    return out.getvalue(), added


def _same_thing(entry: DraftEntry, mapping: CommentedMap) -> bool:
    if not isinstance(entry, DraftTarget):
        return False
    keys = _IDENTITY.get(entry.kind)
    if keys is None:
        return False
    mine = [entry.config.get(k) for k in keys]
    return any(
        isinstance(other, dict)
        and other.get("kind") == entry.kind
        and [other.get(k, entry.config.get(k)) for k in keys] == mine
        for other in mapping.values()
    )


def diff(before: str, after: str, name: str) -> str:
    """A unified diff of the file, as ``git diff`` would show it."""
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{name}",
            tofile=f"b/{name}",
        )
    )
