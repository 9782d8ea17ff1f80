"""Which target a runbook's check, backup, note or log file joins.

A check or backup joins, in this order of evidence:

1. the target it names: ``near`` (Redis to redis, a dump to postgres, ``getMe`` to the bot);
2. the target a command just before it in the same block operates (the check right after
   ``restart bot`` is bot's);
3. the target whose folder holds the files it copies (``tar … /opt/weather/state`` with the
   compose project in ``/opt/weather``);
4. the target the same check or backup joined elsewhere by one of the rules above (one URL
   curled in two sections is one check, of one target);
5. the target another entry of the same block joined by one of those rules (a block is one
   procedure: a backup block's ``BGSAVE`` goes where its ``tar`` went);
6. else the main target of its runbook (the most sources), else of all the runbooks.

What runs against another environment (staging, DR, local development) joins the same way but
becomes a comment of its target (``# staging: http check …``), never config; so does what runs
inside another way of running the target (``kubectl exec`` for a target drafted as compose
with a deployment documented too, ``docker exec`` into its plain-docker alternative's
container): ``# also documented as:``.
"""

from __future__ import annotations

import posixpath
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from opsbot.onboarding.draft import Draft, DraftTarget, identity
from opsbot.onboarding.sighting import Sighting

_NEAR = {
    "postgres": ("postgres", "postgresql", "pg", "db", "database"),
    "redis": ("redis", "cache"),
    "bot": ("bot",),
}
_NAMED, _BESIDE, _FOLDER = 3, 2, 2  # how strong the evidence of rules 1-3 is


@dataclass(frozen=True)
class Loose:
    """A check, backup, note or log file waiting for its target."""

    sighting: Sighting
    source: str  # FILE:LINE
    block: int  # commands on consecutive lines are one block
    after: str  # the target a command before it in the same block operates, or ""
    environment: str = ""  # "" for production, else "staging", "DR", …


def attach(
    loose: list[Loose],
    draft: Draft,
    weight: dict[str, Counter[str]],
    other_ways: dict[str, set[str]] | None = None,
) -> None:
    """Each loose entry onto its target; ``weight`` counts each file's sources per target,
    ``other_ways`` each target's alternatives (``k8s``, ``compose``, ``container:NAME``)."""
    other_ways = other_ways or {}
    if not draft.targets:
        _command_targets(loose, draft, weight)
    if not draft.targets:
        for item in loose:
            what = _summary(item.sighting)
            draft.unrecognised(item.source, f"no target to attach this to: {what}")
        return
    found = {id(item): _evident(item, draft) for item in loose}
    by_identity: dict[str, DraftTarget] = {}
    by_block: dict[int, DraftTarget] = {}
    for item in loose:
        evident = found[id(item)]
        if evident is not None and item.sighting.what in ("check", "backup"):
            by_identity.setdefault(_identity(item.sighting), evident)
            by_block.setdefault(item.block, evident)
    for item in loose:
        target = (
            found[id(item)]
            or by_identity.get(_identity(item.sighting))
            or by_block.get(item.block)
            or _main(item.source, draft, weight)
        )
        _join(item, target, other_ways.get(target.name, set()))


def _evident(item: Loose, draft: Draft) -> DraftTarget | None:
    """The target rules 1-3 give, or None."""
    near = item.sighting.near
    words = _NEAR.get(near, (near,) if near else ())
    for name, target in draft.targets.items():
        if any(w in re.split(r"[-_.]", name) or name.startswith(w) for w in words):
            return target
    for name, target in draft.targets.items():
        if near and near in name:
            return target
    if item.after in draft.targets:
        return draft.targets[item.after]
    paths = item.sighting.fields.get("paths") or [item.sighting.fields.get("path")]
    for target in draft.targets.values():
        folder = _folder(target)
        if folder and all(isinstance(p, str) and _under(p, folder) for p in paths):
            return target
    return None


def _folder(target: DraftTarget) -> str:
    """Where a target's files live, when its config says (a compose project's directory)."""
    file = target.config.get("file")
    if target.kind == "compose" and isinstance(file, str) and file.startswith("/"):
        return posixpath.dirname(file)
    return ""


def _under(path: str, folder: str) -> bool:
    return path.startswith("/") and posixpath.commonpath([path, folder]) == folder != "/"


def _identity(sighting: Sighting) -> str:
    return f"{sighting.what} {identity(sighting.fields)}"


def _main(source: str, draft: Draft, weight: dict[str, Counter[str]]) -> DraftTarget:
    names = list(draft.targets)
    mine = weight.get(_file(source), Counter())
    overall: Counter[str] = sum(weight.values(), Counter())
    main = max(names, key=lambda n: (mine[n], overall[n], -names.index(n)))
    return draft.targets[main]


def _another_way(sighting: Sighting, target: DraftTarget, ways: set[str]) -> bool:
    """Whether a check or backup runs inside one of the target's other ways of running
    (``kubectl exec`` when it is drafted as compose with Kubernetes documented too); through
    a compose beside a pm2 bot, say, it is the host's own command."""
    tool, _, where = sighting.through.partition(":")
    if tool == "kubectl":
        return target.kind != "k8s" and "k8s" in ways
    if tool == "compose":
        return target.kind != "compose" and "compose" in ways
    return tool == "docker" and f"container:{where}" in ways


def _join(item: Loose, target: DraftTarget, ways: set[str]) -> None:
    sighting, source = item.sighting, item.source
    if item.environment:
        target.add_elsewhere(item.environment, _summary(sighting), source)
        return
    if _another_way(sighting, target, ways):
        target.add_alternative(_summary(sighting), source)
        return
    fields = _in_project(sighting, target)
    if sighting.what == "check":
        config = dict(fields)
        if config["type"] == "telegram":
            config["token_file"] = f"/etc/opsbot/secrets/{target.name}.token"
        target.add_check(config, source, sighting.notes)
    elif sighting.what == "backup":
        target.add_backup(fields, source, sighting.notes)
    elif sighting.what == "log" and "log_file" in sighting.fields:
        target.config.setdefault("log_file", sighting.fields["log_file"])
        target.cite(source)
    for note in sighting.notes if sighting.what == "note" else ():
        if not any(n.startswith(note) for n in target.notes):  # once, citing the first
            target.note(f"{note} ({source})")


def _in_project(sighting: Sighting, target: DraftTarget) -> dict[str, Any]:
    """A ``docker compose exec`` shown without ``-f`` (after a ``cd`` elsewhere) gets the
    target's compose file, so it runs from anywhere on the host."""
    fields = dict(sighting.fields)
    file = target.config.get("file")
    if not sighting.through.startswith("compose:") or not str(file).startswith("/"):
        return fields
    for key, value in fields.items():
        at = value.index("exec") if isinstance(value, list) and "exec" in value else -1
        if at > 0 and "-f" not in value[:at]:
            fields[key] = [*value[:at], "-f", file, *value[at:]]
    return fields


def _command_targets(loose: list[Loose], draft: Draft, weight: dict[str, Counter[str]]) -> None:
    """No target at all: a runbook with checks gets a command target of its own for them."""
    for item in loose:
        if item.sighting.what == "check" and not item.environment:
            file = _file(item.source)
            target = draft.target(file.rsplit(".", 1)[0], "command", {}, item.source)
            target.note(
                "this runbook names no process, service or container: a command target of its "
                "checks (give it actions.status, or a kind)"
            )
            weight.setdefault(file, Counter())[target.name] += 1


def _file(source: str) -> str:
    return source.rsplit(":", 1)[0]


def _summary(sighting: Sighting) -> str:
    """One line of what an entry is: ``http check https://…/health``, ``postgres backup app``."""
    fields = sighting.fields
    kind = str(fields.get("type", ""))
    detail = fields.get("url") or fields.get("database") or fields.get("path") or " ".join(
        str(v) for v in (fields.get("argv") or fields.get("paths") or [])
    )
    if sighting.what in ("check", "backup"):
        return " ".join(filter(None, [kind, sighting.what, str(detail or "")]))
    notes = "; ".join(sighting.notes)
    return f"a {sighting.what}" + (f" ({notes})" if notes else "")
