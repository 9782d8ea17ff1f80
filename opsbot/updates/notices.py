"""Update notices: on a schedule, ask each opted-in target's registry whether a newer image is
out, and announce each one once in the ops chat, with [Deploy] and [Ignore].

Every replica ticks (PTB's JobQueue); each target's check slot (``every`` seconds, 6 h by
default) is claimed in the store first (``store.create`` of ``update-runs/<target>/<slot>``),
as scheduled backups claim theirs, so one replica asks the registry, once per slot. A notice is
a document keyed by what it announces (``update-notices/<id>``: the target and the newer tag,
or the target, its own tag and the digest the tag moved to); whoever creates it announces it,
through the outbox with a ref derived from the id (``once``), so replicas racing and restarts
never announce it twice, and a notice whose announcement a crash lost is sent at the next
check. An ignored notice is kept: that version is never announced again.

A registry that is down, answers 401 or 404, or times out: a warning in the log when the
target's check starts failing (not at every slot), the failure in ``update-checks/<target>``
for ``/health TARGET`` to show, no notice; the next slot retries.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opsbot.config import ComposeTarget, ContainerTarget
from opsbot.config.updates import UpdateNotices
from opsbot.errors import OpsbotError
from opsbot.render import Button, Reply, ago, span
from opsbot.services import Services
from opsbot.state.outbox_notifier import OutboxNotifier
from opsbot.updates.registry import Login, Registry, RegistryError, base_url, parse_ref
from opsbot.updates.running import digests_of, running_image
from opsbot.updates.versions import newest_newer

log = logging.getLogger(__name__)

RUNS = "update-runs"
NOTICES = "update-notices"
CHECKS = "update-checks"
#: Seconds between two looks at the slots (the application's job interval).
TICK_SECONDS = 60.0
NOTICE_TTL = 365 * 86400.0
#: Button keys: Deploy and Ignore on a notice (``ud:ID``, ``ui:ID``).
DEPLOY, IGNORE = "ud", "ui"

Watched = ContainerTarget | ComposeTarget


@dataclass(frozen=True, slots=True)
class Notice:
    id: str
    target: str
    image: str  # the repository, as Docker names it: 127.0.0.1:5000/quizbot
    tag: str  # the version to deploy
    digest: str
    running: str  # the tag running now
    moved: bool  # the running tag itself moved to another digest
    state: str = "announced"  # announced, ignored
    by: str | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "target": self.target, "image": self.image, "tag": self.tag,
            "digest": self.digest, "running": self.running, "moved": self.moved,
            "state": self.state, "by": self.by,
        }  # fmt: skip

    @classmethod
    def from_doc(cls, notice_id: str, doc: dict[str, Any]) -> Notice:
        return cls(
            notice_id, str(doc["target"]), str(doc["image"]), str(doc["tag"]),
            str(doc["digest"]), str(doc["running"]), bool(doc.get("moved")),
            str(doc.get("state") or "announced"), doc.get("by"),
        )  # fmt: skip

    @property
    def ref(self) -> int:
        """The outbox ref of its announcement, the same on every replica."""
        return 2**32 + int(hashlib.sha256(self.id.encode()).hexdigest()[:13], 16)


def notice_id(target: str, tag: str, digest: str | None = None) -> str:
    """A newer tag is announced once whatever digest it has later; a moved tag once per
    digest it moves to. Short enough for a button's 64 bytes."""
    text = f"{target}\n{tag}\n{digest or ''}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def card(notice: Notice) -> Reply:
    """The announcement: what is newer, what runs, and the two buttons."""
    short = notice.digest.partition(":")[2][:12]
    if notice.moved:
        text = (f"⬆️ {notice.target}: the tag {notice.tag} has moved: {notice.image}:"
                f"{notice.tag} is now sha256:{short}…, not the image running")  # fmt: skip
    else:
        text = (f"⬆️ {notice.target}: {notice.image}:{notice.tag} is out (sha256:{short}…); "
                f"running {notice.running}")  # fmt: skip
    if notice.state == "ignored":
        return Reply(text=f"{text}\n🙈 ignored by {notice.by or 'someone'}")
    return Reply(
        text=text,
        buttons=(Button(f"🚀 Deploy {notice.tag}"[:30], f"{DEPLOY}:{notice.id}"),
                 Button("🙈 Ignore", f"{IGNORE}:{notice.id}")),
    )  # fmt: skip


def watched(services: Services) -> dict[str, tuple[Watched, UpdateNotices]]:
    """The targets with update notices on."""
    found: dict[str, tuple[Watched, UpdateNotices]] = {}
    for name, target in services.settings.targets.items():
        if isinstance(target, ContainerTarget | ComposeTarget):
            spec = target.updates
            if spec is not None and spec.enabled:
                found[name] = (target, spec)
    return found


def registry_for(spec: UpdateNotices, image: str) -> tuple[Registry, str]:
    """The registry client and the repository name for a running image."""
    ref = parse_ref(image)
    if ref is None:
        raise RegistryError("bad answer", f"{image[:80]!r} is not an image reference")
    login = None
    if spec.username is not None and spec.password is not None:
        login = Login(spec.username, spec.password.get_secret_value())
    url = spec.registry or base_url(ref)
    registry = Registry(url, login=login, timeout=spec.timeout, verify=spec.verify_tls)
    return registry, spec.repository or ref.repository


class UpdateChecker:
    """``tick()``: check each opted-in target whose slot has come; announce what is new."""

    def __init__(self, services: Services, notifier: OutboxNotifier, *,
                 now: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.services = services
        self.notifier = notifier
        self.now = now

    @property
    def active(self) -> bool:
        chat = self.services.settings.telegram.ops_chat_id
        return chat is not None and bool(watched(self.services))

    async def tick(self) -> list[Notice]:
        """The notices this replica announced now."""
        announced: list[Notice] = []
        for name, (target, spec) in watched(self.services).items():
            slot = int(self.now() // spec.every)
            claim = {"slot": slot, "claimed_at": self.now()}
            if not await self.services.store.create(RUNS, f"{name}/{slot}", claim,
                                                    ttl=2 * spec.every):  # fmt: skip
                continue  # this slot is checked already (here, or on another replica)
            try:
                announced += await self.check(name, target, spec)
            except Exception:  # one target's surprise must not stop the others' checks
                log.exception("%s: update check failed unexpectedly", name)
        return announced

    async def check(self, name: str, target: Watched, spec: UpdateNotices) -> list[Notice]:
        """Ask the registry about one target now; announce what is new."""
        try:
            found = await self._look(name, target, spec)
        except (RegistryError, OpsbotError) as exc:
            await self._record(name, error=self.services.redactor.redact(str(exc)))
            return []
        await self._record(name, error=None)
        announced = []
        for notice in found:
            if await self._announce(notice):
                announced.append(notice)
        return announced

    async def _look(self, name: str, target: Watched, spec: UpdateNotices) -> list[Notice]:
        running = await running_image(name, target, self.services)
        ref = parse_ref(running.image)
        if ref is None or ref.tag is None or ref.digest is not None:
            raise OpsbotError(f"{name} runs {running.image[:80]}, pinned or not a tag: "
                              "nothing to compare")  # fmt: skip
        registry, repository = registry_for(spec, running.image)
        try:
            notices = []
            ours = digests_of(running, ref.name)
            current = await registry.digest(repository, ref.tag)
            if current is not None and ours and current not in ours:
                notices.append(Notice(notice_id(name, ref.tag, current), name, ref.name,
                                      ref.tag, current, ref.tag, moved=True))  # fmt: skip
            newer = newest_newer(ref.tag, await registry.tags(repository), spec.tags)
            if newer is not None:
                digest = await registry.digest(repository, newer)
                if digest is not None:
                    notices.append(Notice(notice_id(name, newer), name, ref.name, newer,
                                          digest, ref.tag, moved=False))  # fmt: skip
            return notices
        finally:
            await registry.aclose()

    async def _announce(self, notice: Notice) -> bool:
        """Announce it unless some replica did: True when this one queued it now."""
        store = self.services.store
        chat = self.services.settings.telegram.ops_chat_id
        if chat is None:
            return False
        doc = {**notice.to_doc(), "announced_at": self.now(), "queued": False}
        if not await store.create(NOTICES, notice.id, doc, ttl=NOTICE_TTL):
            stored = await store.get(NOTICES, notice.id)
            if stored is None or stored.value.get("queued"):
                return False  # announced already (or ignored)
            # created by a check that stopped before queueing it: this one sends it
        await self.notifier.send(chat, card(notice), ref=notice.ref, once=True)
        await store.update(NOTICES, notice.id, lambda d: {**d, "queued": True} if d else None)
        log.info("%s: update notice %s:%s announced", notice.target, notice.image, notice.tag)
        return True

    async def _record(self, name: str, *, error: str | None) -> None:
        """The check's outcome for /health; a warning only when a target starts failing."""
        now = self.now()

        def change(doc: dict[str, Any] | None) -> dict[str, Any]:
            failing_since = (doc or {}).get("failing_since")
            if error is None:
                return {"at": now, "error": None, "failing_since": None}
            return {"at": now, "error": error, "failing_since": failing_since or now}

        updated = await self.services.store.update(CHECKS, name, change)
        before = (updated.before or {}) if updated is not None else {}
        if error is not None and before.get("error") is None:
            log.warning("%s: update check failed (retried at the next check): %s", name, error)
        elif error is None and before.get("error") is not None:
            log.info("%s: update check works again", name)


#: What to change when ``opsbot check`` finds a registry that does not answer, by problem.
HINTS = {
    "unreachable": "set updates.registry to the registry's URL (http://host:port for one "
    "without TLS)",
    "timeout": "raise updates.timeout, or check the way to the registry",
    "unauthorized": "set updates.username and updates.password (or password_file)",
    "not found": "set updates.repository to the image's repository at the registry",
    "bad answer": "set updates.registry to the registry's own URL",
}


async def probe(services: Services, name: str) -> tuple[bool, str, str]:
    """``opsbot check``'s row of one target's update notices: ok, detail, hint."""
    target, spec = watched(services)[name]
    try:
        running = await running_image(name, target, services)
        registry, repository = registry_for(spec, running.image)
    except (RegistryError, OpsbotError) as exc:
        return False, str(exc), "start the target, or check its endpoint"
    try:
        tags = await registry.tags(repository)
    except RegistryError as exc:
        return False, str(exc), HINTS[exc.problem]
    finally:
        await registry.aclose()
    every = span(spec.every)
    return True, f"{registry.url}/{repository}: {len(tags)} tags, asked every {every}", ""


async def check_line(services: Services, name: str) -> str | None:
    """``/health TARGET``'s line about a failing update check, None when there is none."""
    target = services.settings.targets.get(name)
    if not isinstance(target, ContainerTarget | ComposeTarget) or target.updates is None:
        return None
    stored = await services.store.get(CHECKS, name)
    if stored is None or not stored.value.get("error"):
        return None
    since = float(stored.value.get("failing_since") or stored.value.get("at") or 0)
    return (f"⚠️ update check failing since {ago(time.time() - since)}: "
            f"{str(stored.value['error'])[:160]}")  # fmt: skip


async def load(services: Services, notice_id_: str) -> Notice | None:
    stored = await services.store.get(NOTICES, notice_id_)
    return Notice.from_doc(notice_id_, stored.value) if stored is not None else None


async def ignore(services: Services, notice_id_: str, who: str) -> tuple[Notice | None, bool]:
    """Mark the notice ignored: (the notice, whether this call ignored it)."""

    def change(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None or doc.get("state") == "ignored":
            return None
        return {**doc, "state": "ignored", "by": who, "ignored_at": time.time()}

    updated = await services.store.update(NOTICES, notice_id_, change)
    if updated is None:
        return None, False
    doc = updated.after or updated.before
    if doc is None:
        return None, False
    return Notice.from_doc(notice_id_, doc), updated.after is not None
