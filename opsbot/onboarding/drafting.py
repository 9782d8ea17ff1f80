"""From what discovery found to a ``Draft`` (``draft.py``, the model ``import`` fills too).

- a compose project's container → a ``compose`` target on the endpoint that can run its
  compose file (its host), else a ``container`` target on the Docker endpoint;
- a HEALTHCHECK → the target's status check (which reads the container's health);
- a published or listening port → an http check where it answered, else a tcp check;
- pm2 processes, admin-installed systemd units, Kubernetes deployments → their kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opsbot.config import Settings
from opsbot.config.targets import SSHEndpoint
from opsbot.onboarding.discover import DEADLINE, Discovery, discover
from opsbot.onboarding.draft import Draft, DraftTarget, target_name
from opsbot.onboarding.findings import Container, PortCheck
from opsbot.onboarding.hosts import Hosts, endpoint_config
from opsbot.onboarding.sources import Source, parse_source
from opsbot.reach.executors.ssh import SSHPool


def build_draft(discoveries: list[Discovery], origin: str) -> Draft:
    draft = Draft(origin)
    for found in discoveries:
        source, findings = found.source, found.findings
        where = source.word
        for problem in findings.problems:
            draft.problem(f"{where}: {problem}")
        if not findings.found and findings.problems:
            continue  # nothing reached: no endpoint to draft either
        _endpoints(draft, source)
        if found.engine is not None and findings.containers:
            engine = found.engine
            draft.endpoint(engine.endpoint, engine.config, f"{where}: the Docker engine")
            for container in findings.containers:
                _container(draft, container, engine.endpoint, engine.compose_endpoint, where)
        for process in findings.pm2:
            target = _target(draft, process.name, "pm2", {"process": process.name}, source,
                             f"{where}: pm2 jlist ({process.status})")  # fmt: skip
            _checks(target, process.checks, where)
        for unit in findings.units:
            state = f" ({unit.state})" if unit.state else ""
            target = _target(draft, unit.unit.removesuffix(".service"), "systemd",
                             {"unit": unit.unit}, source,
                             f"{where}: /etc/systemd/system/{unit.unit}{state}")  # fmt: skip
            _checks(target, unit.checks, where)
        for deployment in findings.deployments:
            fields = {"deployment": deployment.name, "namespace": deployment.namespace}
            ready = f"{deployment.ready}/{deployment.replicas} ready"
            _target(draft, deployment.name, "k8s", fields, source,
                    f"{where}: kubectl get deployments ({deployment.namespace}, {ready})",
                    alias=f"{deployment.namespace}-{deployment.name}")  # fmt: skip
    return draft


def _endpoints(draft: Draft, source: Source) -> None:
    """The source's endpoint, and the bastion or ssh host it is reached through."""
    draft.endpoint(source.name, endpoint_config(source.config), f"discover {source.word}")
    config = source.config
    via = getattr(config, "via", None) or getattr(config, "via_ssh", None)
    while via is not None:
        hop = source.endpoints[via]
        draft.endpoint(via, endpoint_config(hop), f"reached through by {source.word}")
        via = hop.via if isinstance(hop, SSHEndpoint) else None


def _container(
    draft: Draft, container: Container, docker: str, compose: str | None, where: str
) -> None:
    cited = f"{where}: docker ps ({container.state}, {container.image})"
    fields: dict[str, Any]
    if container.compose_file and container.compose_service and compose is not None:
        fields = {"file": container.compose_file, "service": container.compose_service}
        if container.compose_command != ("docker", "compose"):
            fields["compose_command"] = list(container.compose_command)
        name, kind, endpoint = container.compose_service, "compose", compose
        alias = f"{container.compose_project}-{container.compose_service}"
        cited += f", compose project {container.compose_project}"
    else:
        fields, name, kind, endpoint = (
            {"container": container.name},
            container.name,
            "container",
            docker,
        )
        alias = f"{docker}-{container.name}"
    notes = []
    if container.compose_file and compose is None:
        notes.append(
            f"compose project {container.compose_project} (service {container.compose_service},"
            f" {container.compose_file}): add an ssh endpoint of its host to operate it with"
            " compose"
        )
    if container.healthcheck:
        fields["status_check"] = True
        cited += ", HEALTHCHECK read by its status check"
    target = _target(draft, name, kind, fields, None, cited, endpoint=endpoint, alias=alias)
    for text in notes:
        target.note(text)
    _checks(target, container.checks, where)


def _target(
    draft: Draft,
    name: str,
    kind: str,
    fields: dict[str, Any],
    source: Source | None,
    cited: str,
    *,
    endpoint: str | None = None,
    alias: str | None = None,
) -> DraftTarget:
    """A target, under another name when its own is taken by something else."""
    endpoint = endpoint or (source.name if source is not None else "local")
    for candidate in (name, alias or f"{endpoint}-{name}", f"{endpoint}-{alias or name}"):
        taken = draft.targets.get(target_name(candidate))
        if taken is None or (
            taken.kind == kind
            and taken.config.get("endpoint") == endpoint
            and all(taken.config.get(k) == v for k, v in fields.items())
        ):
            return draft.target(candidate, kind, fields, cited, endpoint)  # fmt: skip
    return draft.target(f"{endpoint}-{kind}-{name}", kind, fields, cited, endpoint)


def _checks(target: DraftTarget, checks: tuple[PortCheck, ...], where: str) -> None:
    for check in checks:
        if check.type == "http" and check.url is not None:
            config: dict[str, Any] = {"type": "http", "url": check.url}
            if check.status not in (None, 200):
                config["expect_status"] = [check.status]
            target.add_check(config, f"{where}: port {check.port} answered HTTP {check.status}")
        else:
            target.add_check(
                {"type": "tcp", "host": check.host, "port": check.port},
                f"{where}: port {check.port} (no HTTP answer on /health, /healthz or /)",
            )


async def discover_draft(
    words: list[str],
    settings: Settings | None,
    *,
    pool: SSHPool | None = None,
    deadline: float = DEADLINE,
) -> Drafted:
    """Discover each endpoint a word names and draft what was found.

    Every word is parsed first: a word naming no endpoint raises ``UsageError`` and nothing
    runs.
    """
    sources = [parse_source(word, settings) for word in words]
    hosts = Hosts(pool)
    try:
        discoveries = await discover(sources, hosts, deadline=deadline)
    finally:
        await hosts.close()
    draft = build_draft(discoveries, "opsbot discover " + " ".join(words))
    notes = [f"{d.source.word}: {note}" for d in discoveries for note in d.findings.notes]
    return Drafted(draft, discoveries, notes)


@dataclass(frozen=True, slots=True)
class Drafted:
    """A discovery's draft, what it was built from, and its notes (not problems)."""

    draft: Draft
    discoveries: list[Discovery]
    notes: list[str]

    @property
    def failed(self) -> bool:
        return bool(self.draft.problems)

    def summary(self) -> list[str]:
        """One line per endpoint: what was found there."""
        lines = []
        for found in self.discoveries:
            f = found.findings
            counts = [
                f"{len(items)} {what}"
                for items, what in (
                    (f.containers, "container(s)"), (f.pm2, "pm2 process(es)"),
                    (f.units, "systemd unit(s)"), (f.deployments, "deployment(s)"),
                )
                if items
            ]  # fmt: skip
            state = "❌" if f.problems else "✅"
            lines.append(f"{state} {found.source.word}: {', '.join(counts) or 'nothing found'}")
        return lines
