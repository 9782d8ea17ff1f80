"""A deploy's plan: the version validated, what runs now read, the exact calls to make.

Nothing here changes a target. A bad version, an unknown tag, a registry that is down or
refuses the login, or the version already running raise ``UsageError``: a clear message,
nothing run, no card.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from opsbot.actions.versions import short_id
from opsbot.config import ContainerTarget, Target
from opsbot.config.deploy import valid_version
from opsbot.config.updates import UpdateNotices
from opsbot.errors import OpsbotError, UsageError
from opsbot.reach.targets import container_name
from opsbot.updates.notices import registry_for
from opsbot.updates.registry import RegistryError, parse_ref
from opsbot.updates.running import digests_of, running_image

if TYPE_CHECKING:
    from opsbot.services import Services

Kind = Literal["container", "argv", "compose", "k8s"]

#: Budget of a pull, beyond the target's verify deadline.
PULL_BUDGET = 300.0


@dataclass(frozen=True, slots=True)
class DeployPlan:
    """What the card shows and exactly what ``steps.run_plan`` runs."""

    kind: Kind
    target: str
    endpoint: str
    version: str
    from_label: str  # what runs now, for the card: 127.0.0.1:5000/quizbot:2.0
    to_label: str  # what will run: 127.0.0.1:5000/quizbot:2.1
    steps: tuple[str, ...]
    backup: bool  # a verified backup first
    container: str | None = None  # container: its name
    repository: str | None = None  # container: the repository pulled from
    from_image: str | None = None  # container: the image as configured now
    from_image_id: str | None = None  # container: the image id running now (the rollback)
    digest: str | None = None  # container: the digest the registry gave for the tag
    commands: tuple[tuple[str, ...], ...] = ()  # argv kinds: the deploy, then its wait
    undo: tuple[tuple[str, ...], ...] = ()  # argv kinds: the rollback to from_label
    timeout: float = 300.0  # argv kinds: per command
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def image(self) -> str:
        return f"{self.repository}:{self.version}"

    def to_doc(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["steps"] = list(self.steps)
        doc["commands"] = [list(c) for c in self.commands]
        doc["undo"] = [list(c) for c in self.undo]
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> DeployPlan:
        values = dict(doc)
        values["steps"] = tuple(doc["steps"])
        values["commands"] = tuple(tuple(c) for c in doc.get("commands", ()))
        values["undo"] = tuple(tuple(c) for c in doc.get("undo", ()))
        return cls(**values)


def check_version(name: str, target: Target, version: str) -> None:
    """The version matches the target's pattern (never an option, a path, a shell word)."""
    if not valid_version(target.deploy, version):
        shown = version if len(version) <= 32 else version[:32] + "…"
        raise UsageError(
            f"{shown!r} is not a version {name} takes: a tag's characters (letters, digits, "
            "'.', '_', '-'; a letter or digit first)"
            + ("" if target.deploy is None else f" matching {target.deploy.versions}")
        )


def backs_up_first(target: Target) -> bool:
    return bool(target.backups) and (target.deploy is None or target.deploy.backup_first)


def backup_step(target: Target) -> str:
    kinds = ", ".join(spec.type for spec in target.backups)
    return f"backup first: {kinds}, verified by a test restore"


async def registry_digest(
    name: str, spec: UpdateNotices | None, image: str, version: str
) -> str:
    """The digest the registry has for ``image``'s repository at ``version``; a tag it does
    not have, or a registry that is down or refuses the login, is a ``UsageError``."""
    registry, repository = registry_for(spec or UpdateNotices(), image)
    try:
        digest = await registry.digest(repository, version)
    except RegistryError as exc:
        raise UsageError(f"{name}: not deployed, the registry did not answer: {exc}") from None
    finally:
        await registry.aclose()
    if digest is None:
        ref = parse_ref(image)
        shown = f"{ref.name if ref else repository}:{version}"
        raise UsageError(f"{name}: there is no {shown} in the registry ({registry.url})")
    return digest


async def plan_container(
    services: Services, name: str, target: ContainerTarget, version: str
) -> DeployPlan:
    """Pull ``<repository>:VERSION``, recreate the container with it, keeping the rest."""
    cname = container_name(name, target)
    engine = services.docker(target.endpoint)
    status = await engine.container_status(cname)
    if not status.exists or status.image is None:
        raise UsageError(f"{name}: there is no container {cname} on {target.endpoint}")
    ref = parse_ref(status.image)
    if ref is None or ref.digest is not None:
        raise UsageError(f"{name} runs {status.image[:80]}: pinned, or not a tag to replace")
    digest = await registry_digest(name, target.updates, status.image, version)
    new = f"{ref.name}:{version}"
    if ref.tag == version and digest in await _running_digests(services, name, target, ref.name):
        raise UsageError(f"{name} runs {new} already (sha256:{digest[7:19]}…): nothing to do")
    steps = [backup_step(target)] if backs_up_first(target) else []
    steps += [
        f"POST /images/create?fromImage={ref.name}&tag={version}",
        f"recreate {cname} with {new.rsplit('/', 1)[-1]}: same name, env, mounts, networks, "
        "restart policy",
        f"  POST /containers/create, /containers/{cname}/stop, /rename (both), /start",
        f"checks until healthy, {target.verify_deadline:g} s at most; else back to "
        f"{short_id(status.image_id or '') or status.image}",
    ]
    return DeployPlan(
        "container", name, target.endpoint, version, status.image, new, tuple(steps),
        backup=backs_up_first(target), container=cname, repository=ref.name,
        from_image=status.image, from_image_id=status.image_id, digest=digest,
    )  # fmt: skip


async def _running_digests(
    services: Services, name: str, target: ContainerTarget, repository: str
) -> set[str]:
    try:
        return digests_of(await running_image(name, target, services), repository)
    except OpsbotError:
        return set()
