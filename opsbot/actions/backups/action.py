"""Backup and restore as actions: their declarations, plans and runs.

A backup is not destructive and runs without approval by default (``approvals.backup``
turns that on); a restore replaces live data: destructive, approved first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from opsbot.actions.action import Action, Outcome, Planned, Progress
from opsbot.actions.backups import methods as backup_methods
from opsbot.actions.backups import records as backups
from opsbot.config import Backup, ContainerTarget, Target
from opsbot.errors import OpsbotError, UsageError
from opsbot.reach.executors import Executor
from opsbot.reach.targets import container_name
from opsbot.render import plural

if TYPE_CHECKING:
    from opsbot.actions.approvals import Request
    from opsbot.services import Services


def backup_executor(services: Services, name: str, target: Target) -> Executor:
    """Backups of a container run inside it; others on the target's endpoint."""
    if isinstance(target, ContainerTarget):
        return services.docker(target.endpoint).executor(container_name(name, target))
    return services.executor(target.endpoint)


def spec_for(target: Target, kind: str) -> Backup:
    """The target's configured backup of this kind."""
    for spec in target.backups:
        if spec.type == kind:
            return spec
    raise UsageError(f"the target no longer has a {kind} backup configured")


class _Backups(Action):
    verb = "backup"

    def budget(self, target: Target) -> float:
        return target.verify_deadline + max((b.timeout for b in target.backups), default=0)


class BackupNow(_Backups):
    """/backup TARGET: every configured source, verified and checksummed."""

    name = "backup"
    destructive = False
    approval = False

    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        if not target.backups:
            raise UsageError(f"{name} has no backups configured")
        steps = tuple(f"{spec.type}: {backups.source_of(spec)}" for spec in target.backups)
        count = plural(len(steps), "backup")
        return Planned(steps, f"back up {name}: {count}, verified and checksummed")

    async def run(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        name = request.target
        executor = backup_executor(services, name, target)
        lines, ok, files = [], True, []
        for spec in target.backups:
            await progress(f"backing up ({spec.type})…")
            try:
                record = await backup_methods.run_backup(
                    name, spec, executor, services.store, services.backups_dir, progress=progress
                )
                lines.append(backups.describe(record))
                if record.local_path and record.size <= spec.send_max_bytes:
                    files.append(Path(record.local_path))
            except OpsbotError as exc:
                ok = False
                lines.append(f"{spec.type}: failed: {exc}")
        return Outcome(ok, "\n".join(lines), files=tuple(files))


class Restore(_Backups):
    """/backup TARGET restore NAME: a kept backup over the live data."""

    name = "restore"

    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        record = await _find_backup(services, name, args)
        spec = spec_for(target, record.kind)
        steps = (
            f"{spec.type}: restore {backups.describe(record)}",
            f"over {backups.source_of(spec)} (the current data is replaced)",
        )
        note = f"restores {record.name} over the live data"
        return Planned(steps, note, {"record": record.to_doc()})

    async def run(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        record = backups.BackupRecord.from_doc(request.payload["record"])
        await progress(f"restoring {record.name}…")
        spec = spec_for(target, record.kind)
        executor = backup_executor(services, request.target, target)
        said = await backup_methods.restore_backup(request.target, spec, record, executor)
        return Outcome(True, f"restored {record.name}", said)


async def _find_backup(
    services: Services, name: str, args: tuple[str, ...]
) -> backups.BackupRecord:
    if len(args) != 1:
        raise UsageError(f"usage: /backup {name} restore NAME (see /backup {name} list)")
    for record in await backups.list_backups(name, services.store):
        if record.name == args[0]:
            return record
    raise UsageError(f"no backup named {args[0][:80]!r} for {name}; see /backup {name} list")


BACKUP, RESTORE = BackupNow(), Restore()
