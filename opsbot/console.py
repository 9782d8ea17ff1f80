"""The console: the same verbs, services and store as the bot, without Telegram.

Interactive when standard input is a terminal (line editing and a history file under
``data_dir``); otherwise it reads one command per line, so a runbook can be scripted
(``echo /health | opsbot console --config ...``) and the exit status is 1 when any command
failed. Output is printed whole: a terminal has no 4096-character limit, so long text that
Telegram would get as a document is printed inline (binary documents are saved to a file).

``--as NAME`` acts as a configured person with that person's role; by default the console is
an admin named "console". Approvals follow the same policy as in the chats: ``/restart``
files a request that another admin approves with ``/approve ID`` (in another console with
``--as``, or in Telegram). ``/alerts``, ``/ack``, ``/silence`` and ``/incident`` work on the
same store; messages those services would post to a chat are printed.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from opsbot.actions.approvals import APPROVALS, Approvals
from opsbot.actions.stepup import TargetRules
from opsbot.alerting.engine import ALERT_ENGINE, AlertEngine
from opsbot.catalog import dispatch_outcome
from opsbot.config import Role, Settings
from opsbot.errors import ConfigError
from opsbot.incidents import timeline
from opsbot.incidents.state import INCIDENTS, Incidents
from opsbot.reach.checks import check_all
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.registry import Caller

PROMPT = "opsbot> "
HISTORY_FILE = "console_history"
HISTORY_LENGTH = 1000


def render(reply: Reply, documents: Path) -> str:
    """A reply as terminal text: everything inline; binary documents saved to a file."""
    document = reply.document
    text = reply.text
    if document is not None and not document.raw:  # printed below, not attached
        text = re.sub(r",? attached(\n.*)?$", "", text, flags=re.DOTALL)  # and its tail
    parts = [text]
    if reply.block:
        parts.append(reply.block)
    if document is not None and not document.raw:
        parts.append(document.content.decode("utf-8", errors="replace").rstrip("\n"))
    elif document is not None:
        documents.mkdir(parents=True, exist_ok=True)
        path = documents / document.filename
        path.write_bytes(document.content)
        parts.append(f"({len(document.content)} bytes saved to {path})")
    if reply.request_id is not None:
        parts.append(f"→ /approve {reply.request_id} or /deny {reply.request_id}")
    return "\n".join(parts)


class PrintNotifier:
    """The Notifier port on a terminal: posts are printed, edits print the new state."""

    def __init__(self, out: TextIO, services: Services, documents: Path) -> None:
        self.out, self.services, self.documents = out, services, documents
        self._sent = 0

    def _print(self, prefix: str, reply: Reply) -> None:
        text = render(reply.redacted(self.services.redactor), self.documents)
        self.out.write(prefix + text + "\n")
        self.out.flush()

    async def send(
        self,
        chat_id: int,
        reply: Reply,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
    ) -> int:
        self._sent += 1
        self._print(f"[to chat {chat_id}] ", reply)
        return self._sent

    async def edit(self, chat_id: int, message_id: int, reply: Reply) -> None:
        self._print("[updated] ", reply)

    async def pin(self, chat_id: int, message_id: int, *, pinned: bool = True) -> None:
        return None

    async def create_topic(self, chat_id: int, name: str) -> int | None:
        return None


def console_caller(settings: Settings, as_name: str | None) -> Caller:
    if as_name is None:
        return Caller("console", Role.admin)
    for person in settings.people:
        if person.name.casefold() == as_name.casefold():
            return Caller(person.name, person.role, user_id=person.id)
    known = ", ".join(p.name for p in settings.people) or "nobody (people: is empty)"
    raise ConfigError(f"--as {as_name}: no such person in the configuration; known: {known}")


def attach_services(services: Services, notifier: PrintNotifier) -> None:
    """The approvals, the alert engine and incidents over the same store, posting through
    the printer."""
    settings = services.settings
    rules = TargetRules(settings)
    services.bind(APPROVALS, Approvals(services.store, settings.approvals, rules))

    async def health(names: Sequence[str]) -> str:
        known = {n: settings.targets[n] for n in names if n in settings.targets}
        results = await check_all(known, services)
        return " · ".join(f"{r.state.icon} {r.target}" for r in results)

    services.console_notifier = notifier
    engine = AlertEngine(services.store, settings, notifier, metrics=services.metrics)
    services.bind(ALERT_ENGINE, engine)
    incidents = Incidents(services.store, settings, notifier, health=health)
    services.bind(INCIDENTS, incidents)
    services.audit.listeners.append(timeline.audit_listener(incidents))


async def run_console(
    settings: Settings,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    *,
    as_name: str | None = None,
) -> int:
    """Run commands until end of input; 1 if a scripted command failed, else 0."""
    caller = console_caller(settings, as_name)
    services = Services.build(settings)
    documents = settings.data_dir / "console"
    attach_services(services, PrintNotifier(out, services, documents))
    interactive = stdin.isatty()
    history = History(settings.data_dir / HISTORY_FILE) if interactive else None
    failures = 0
    if interactive:
        out.write(
            f"opsbot console as {caller.name} ({caller.role.value}): "
            "/help lists the commands, Ctrl-D quits.\n"
        )
    try:
        while True:
            line = _prompt() if interactive else stdin.readline()
            if line is None or line == "":
                break
            words = line.strip().split()
            if not words or words[0].startswith("#"):
                continue
            verb = words[0].lstrip("/").lower()
            if verb in ("quit", "exit"):
                break
            reply, outcome = await dispatch_outcome(services, caller, verb, words[1:])
            if outcome != "ok" or reply.text.startswith("❌"):
                failures += 1
            out.write(render(reply, documents) + "\n")
            out.flush()
    finally:
        if history is not None:
            history.save()
        await services.close()
    if failures and not interactive:
        print(f"opsbot console: {failures} command(s) failed", file=sys.stderr)
        return 1
    return 0


def _prompt() -> str | None:
    """One line from the terminal; None at end of input. Ctrl-C abandons the line."""
    while True:
        try:
            return input(PROMPT) + "\n"
        except KeyboardInterrupt:
            print()
        except EOFError:
            print()
            return None


class History:
    """Line editing and a persistent history, where the readline module exists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            import readline
        except ImportError:  # e.g. Windows without pyreadline: plain input() still works
            self._readline = None
            return
        self._readline = readline
        readline.set_history_length(HISTORY_LENGTH)
        with contextlib.suppress(OSError):
            readline.read_history_file(path)

    def save(self) -> None:
        if self._readline is None:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._readline.write_history_file(self.path)
