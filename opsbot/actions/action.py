"""What an action is: one object that declares its policy and knows how to plan and run.

Each action (restart, rollback, backup, restore) is one :class:`Action`, declared once: its
name (the request's ``action``), the verb that asks for it, the least role, whether it is
destructive, whether it needs approval and step-up by default, and how it plans (read-only:
what the card shows and the payload that pins exactly what will run) and how it runs and
verifies itself. Everything else reads that declaration: the lifecycle (``lifecycle.py``,
which knows no action by name), approvals, the verb table (hence ``/help``, the command menu
and the authorization matrix). Configuration overrides the defaults: ``approvals.<name>``
for approval, ``approvals.step_up`` / ``step_up_actions`` and per-target ``approvals:`` for
step-up and approvers (``stepup.TargetRules``).

A new action (deploy) is one more subclass, added to ``declared.ACTIONS``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from opsbot.config import Role, Target

if TYPE_CHECKING:
    from opsbot.actions.approvals import Request
    from opsbot.services import Services

#: Where a run reports its current step ("dumping …"); the card adds the clock.
Progress = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Planned:
    """What the card shows (the steps, a note) and the payload that pins what will run."""

    steps: tuple[str, ...]
    note: str
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended, verified: the card's summary, its output, files for the chat."""

    ok: bool
    summary: str
    output: str = ""
    files: tuple[Path, ...] = ()  # small backups to send to the chat (spec.send_max_bytes)


class Action(ABC):
    """One action, declared once. Subclasses set the class attributes and both methods."""

    #: The request's ``action``: on the card, in the audit trail, in ``approvals.<name>``.
    name: ClassVar[str]
    #: The verb that files it (``/backup TARGET restore NAME`` files a restore).
    verb: ClassVar[str]
    #: The least role that may ask for it.
    role: ClassVar[Role] = Role.operator
    #: It changes a live target in a way that cannot simply be taken back.
    destructive: ClassVar[bool] = True
    #: Needs another admin's approval unless ``approvals.<name>`` says otherwise.
    approval: ClassVar[bool] = True
    #: Needs the approver's TOTP code unless the step-up settings say otherwise.
    step_up: ClassVar[bool] = False
    #: A failed card offers a Rollback where the target has one.
    falls_back: ClassVar[bool] = False
    #: A run whose replica died is handed to ``recover`` (else it is marked failed, unknown).
    recovers: ClassVar[bool] = False

    def refusal(self, role: Role, args: tuple[str, ...]) -> str | None:
        """Why someone of ``role`` may not file it with these arguments (beyond ``role``)."""
        del role, args
        return None

    def budget(self, target: Target) -> float:
        """Seconds a run may take at most (its locks are held this long plus a margin)."""
        return target.verify_deadline

    @abstractmethod
    async def plan(
        self, services: Services, name: str, target: Target, args: tuple[str, ...]
    ) -> Planned:
        """Read (never change) what the run will do; bad arguments raise ``UsageError``."""

    @abstractmethod
    async def run(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        """Run exactly what the request's payload pins, then verify it; never run twice
        (the lifecycle calls this once, under the target's lock)."""

    async def recover(
        self, services: Services, request: Request, target: Target, progress: Progress
    ) -> Outcome:
        """Finish a run its replica died in, from what the run persisted (``recovers``)."""
        raise NotImplementedError(f"{self.name} does not recover a run")
