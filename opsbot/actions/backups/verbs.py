"""The backup verbs: /backup TARGET [list | verify [NAME] | restore NAME] and /backups."""

from __future__ import annotations

import time

from opsbot.actions.backups import records as backups
from opsbot.actions.backups import schedule as backup_schedule
from opsbot.actions.backups.action import BACKUP, RESTORE, backup_executor
from opsbot.actions.backups.verify import verify_restore
from opsbot.actions.verbs import request_as
from opsbot.alerting.silences import describe as describe_duration
from opsbot.config import Backup, Role, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.render import Reply, clock, moment
from opsbot.services import Services
from opsbot.verbs.registry import Caller, Verb, parse_target, register

BACKUP_USAGE = "usage: /backup TARGET [list | verify [NAME] | restore NAME]"


async def backup(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/backup TARGET [list | verify [NAME] | restore NAME]"""
    if not args or len(args) > 3:
        raise UsageError(BACKUP_USAGE)
    name, target = parse_target(services, args[0])
    sub = args[1].lower() if len(args) > 1 else ""
    if sub == "verify":
        return await _verify_backups(services, name, target, args[2] if len(args) == 3 else None)
    if sub == "list" and len(args) == 2:
        records = await backups.list_backups(name, services.store)
        if not records:
            return Reply(text=f"No backups of {name} yet.")
        lines = [backups.describe(r) for r in records]
        return Reply(text=f"💾 backups of {name}, newest first", block="\n".join(lines))
    if sub == "restore" and len(args) == 3:
        return await request_as(caller, services, RESTORE, name, target, (args[2],))
    if sub:
        raise UsageError(BACKUP_USAGE)
    return await request_as(caller, services, BACKUP, name, target)


async def _verify_backups(
    services: Services, name: str, target: Target, wanted: str | None
) -> Reply:
    """The test restore of one backup, or of the newest backup of each configured source."""
    if not target.backups:
        raise UsageError(f"{name} has no backups configured")
    records = await backups.list_backups(name, services.store)
    if wanted is not None:
        chosen = [r for r in records if r.name == wanted]
        if not chosen:
            shown = wanted if len(wanted) <= 80 else wanted[:80] + "…"
            raise UsageError(f"no backup named {shown!r} for {name}; see /backup {name} list")
    else:
        newest = (backup_schedule.newest(records, spec) for spec in target.backups)
        chosen = [r for r in newest if r is not None]
        if not chosen:
            raise UsageError(f"no backups of {name} yet; /backup {name} makes one")
    executor = backup_executor(services, name, target)
    reports, ok = [], True
    for record in chosen:
        spec = _spec_of(target, record)
        if spec is None:
            reports.append(f"{record.name}: no {record.kind} backup is configured any more")
            ok = False
            continue
        try:
            reports.append(
                await verify_restore(name, spec, record, executor, store=services.store)
            )
        except OpsbotError as exc:
            ok = False
            reports.append(f"test restore of {record.name} FAILED: {exc}")
    icon = "✅" if ok else "❌"
    return Reply(text=f"{icon} test restore of {name} · {clock()}", block="\n\n".join(reports))


def _spec_of(target: Target, record: backups.BackupRecord) -> Backup | None:
    """The configured backup a record came from (same kind and source), else one of its kind."""
    same_kind = [s for s in target.backups if s.type == record.kind]
    exact = [s for s in same_kind if backups.source_of(s) == record.source]
    found = exact or same_kind
    return found[0] if found else None


async def backups_overview(services: Services, caller: Caller, args: list[str]) -> Reply:
    """/backups"""
    if args:
        raise UsageError("usage: /backups")
    now = time.time()
    lines: list[str] = []
    worst = "✅"
    for name, target in services.settings.targets.items():
        if not target.backups:
            continue
        records = await backups.list_backups(name, services.store)
        for spec in target.backups:
            icon, line = _backup_line(name, target, spec, records, now)
            lines.append(f"{icon} {line}")
            worst = "❌" if "❌" in (icon, worst) else ("⚠️" if "⚠️" in (icon, worst) else "✅")
    if not lines:
        return Reply(text="No backups are configured.")
    return Reply(text=f"{worst} backups · {clock()}", block="\n".join(lines))


def _backup_line(
    name: str, target: Target, spec: Backup, records: list[backups.BackupRecord], now: float
) -> tuple[str, str]:
    """(icon, lines) for one configured backup: newest, age against the RPO, size trend."""
    head = f"{name} {spec.type} {backups.source_of(spec)}"
    same = [r for r in records if r.kind == spec.type and r.source == backups.source_of(spec)]
    rpo = target.rpo
    limit = f"RPO {describe_duration(rpo)}" if rpo is not None else "no RPO"
    after = backup_schedule.next_slot(spec, now)
    nxt = moment(after, now) if after is not None else None
    plan = f"next {nxt} ({spec.schedule})" if nxt else "not scheduled"
    if not same:
        icon = "❌" if rpo is not None else "⚠️"
        return icon, f"{head}\n   no backup yet · {limit} · {plan}"
    newest = same[0]
    age = now - newest.created
    icon = "❌" if rpo is not None and age > rpo else ("⚠️" if newest.shrunk else "✅")
    over = " — over it" if rpo is not None and age > rpo else ""
    sizes = " → ".join(backups.human_size(r.size) for r in reversed(same[:5]))
    return icon, (
        f"{head}\n   {newest.name} · {describe_duration(age)} old · {limit}{over}\n"
        f"   size {sizes} ({backups.describe_change(newest)}) · {plan}"
    )


register(
    Verb(
        BACKUP.verb,
        BACKUP.role,  # a restore checks its own when filed
        "/backup TARGET [list | verify [NAME] | restore NAME]",
        "verified backup; list them; test-restore one into scratch; restore one",
        backup,
        destructive=BACKUP.destructive or RESTORE.destructive,  # it can restore
    ),
    Verb(
        "backups",
        Role.viewer,
        "/backups",
        "every target's newest backup, its age against the RPO, its size trend",
        backups_overview,
        reads_only=True,
    ),
)
