"""The buttons of an update notice: [Deploy] files ``/deploy TARGET TAG`` through the verb
path (the verb decides, asks for approval, refuses), [Ignore] records the notice ignored.

The handlers (``opsbot.handlers.commands``) call ``tap``; it answers what the tap does, so the
Telegram side only toasts, dispatches and edits.
"""

from __future__ import annotations

from dataclasses import dataclass

from opsbot.config import Role
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.updates import notices
from opsbot.verbs.registry import ButtonSpec, Caller, register_buttons

DEPLOY, IGNORE = notices.DEPLOY, notices.IGNORE
TAPS = (DEPLOY, IGNORE)


@dataclass(frozen=True, slots=True)
class Tap:
    """What one tap does: a toast; a verb to dispatch (``verb``, ``args``); a new card text."""

    toast: str | None = None
    verb: str | None = None
    args: tuple[str, ...] = ()
    card: Reply | None = None


async def tap(services: Services, caller: Caller, key: str, notice_id: str) -> Tap:
    """A Deploy or Ignore tap on the notice ``notice_id``."""
    notice = await notices.load(services, notice_id)
    if notice is None:
        return Tap(toast="This update notice is no longer known.")
    if key == DEPLOY:
        if notice.state == "ignored":
            return Tap(toast=f"{notice.tag} was ignored by {notice.by}: /deploy "
                       f"{notice.target} {notice.tag} deploys it anyway.")  # fmt: skip
        return Tap(verb="deploy", args=(notice.target, notice.tag))
    ignored, mine = await notices.ignore(services, notice_id, caller.name)
    if ignored is None:
        return Tap(toast="This update notice is no longer known.")
    if not mine:
        return Tap(toast=f"Already ignored by {ignored.by}.")
    return Tap(toast=f"{ignored.tag} ignored: it will not be announced again.",
               card=notices.card(ignored))  # fmt: skip


register_buttons(
    ButtonSpec(
        DEPLOY,
        Role.operator,
        "deploy the version an update notice announces (ud:ID)",
        destructive=True,  # it files /deploy, which another admin approves
        verb="deploy",
    ),
    ButtonSpec(IGNORE, Role.operator, "ignore an update notice: never announced again (ui:ID)"),
)
