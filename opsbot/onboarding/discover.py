"""``opsbot discover``: what runs on each endpoint, found read-only and within a deadline.

Each endpoint's probes run concurrently (Docker, pm2, systemd unit files, kubectl, ``ss``),
then every published or listening port of what was found is asked whether it answers HTTP.
A probe that fails says so in one line and the others go on: the draft holds what was
found by the deadline. Nothing probed is changed, no file is read, no environment is kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass, field

import httpx

from opsbot.config.targets import DockerEndpoint, SSHEndpoint
from opsbot.errors import ExecutorError
from opsbot.onboarding.containers import discover_containers
from opsbot.onboarding.findings import Findings, PM2Process, PortCheck, Unit
from opsbot.onboarding.hosts import DEFAULT_SOCKET, Engine, Hosts, address
from opsbot.onboarding.kubectl import discover_deployments
from opsbot.onboarding.pm2 import discover_pm2
from opsbot.onboarding.ports import (
    discover_listening,
    is_loopback,
    port_checks,
    reachable_from_here,
)
from opsbot.onboarding.probing import probe, why
from opsbot.onboarding.sources import Source
from opsbot.onboarding.systemd import discover_units
from opsbot.reach.executors import Executor

#: Seconds one endpoint's whole discovery may take.
DEADLINE = 20.0
#: Processes whose listening ports belong to something else found (Docker's port proxy).
_NOT_THEIRS = ("docker-proxy",)


@dataclass(slots=True)
class Discovery:
    """One endpoint's findings, with the Docker engine they were read from (if any)."""

    source: Source
    findings: Findings
    engine: Engine | None = None
    ports: dict[tuple[str, int], PortCheck] = field(default_factory=dict)


async def discover(
    sources: list[Source], hosts: Hosts, *, deadline: float = DEADLINE
) -> list[Discovery]:
    """Every source discovered concurrently, each within ``deadline`` seconds."""
    # Only http:// URLs are ever asked (a published port's plain HTTP); no TLS context is
    # needed, and making one (loading the CA bundle) costs a second of a cold start.
    async with httpx.AsyncClient(
        follow_redirects=False,
        trust_env=False,
        verify=False,  # noqa: S501 (http:// only: no TLS is ever spoken)
    ) as http:
        return list(await asyncio.gather(*(_one(s, hosts, http, deadline) for s in sources)))


async def _one(
    source: Source, hosts: Hosts, http: httpx.AsyncClient, deadline: float
) -> Discovery:
    found = Discovery(source, Findings(source.name))
    try:
        async with asyncio.timeout(deadline):
            await _probe_all(found, hosts)
            await _check_ports(found, http)
    except TimeoutError:
        found.findings.problems.append(
            f"not finished within {deadline:g} s: the draft has what was found by then"
        )
    except ExecutorError as exc:
        found.findings.problems.append(str(exc))
    except Exception as exc:  # one line and the other endpoints' draft, never a traceback
        text = str(exc).splitlines()[0] if str(exc) else ""
        found.findings.problems.append(f"failed: {type(exc).__name__}: {text}")
    return found


async def _probe_all(found: Discovery, hosts: Hosts) -> None:
    findings, executor = found.findings, hosts.executor(found.source)
    if executor is None:  # a Docker endpoint: containers only
        found.engine = hosts.engine(found.source)
        await discover_containers(found.engine.engine, findings)
        config = found.source.config
        if findings.problems and isinstance(config, DockerEndpoint) and config.via_ssh:
            bastion = found.source.endpoints[config.via_ssh]
            via = hosts.executor(dataclasses.replace(found.source, config=bastion))
            if via is not None and isinstance(bastion, SSHEndpoint):
                await _say_why(found, via, config.remote_socket, bastion.user)
        return
    reached = await probe(executor, ["true"])  # one clear line if the host cannot be reached
    if not reached.ok:
        findings.problems.append(f"cannot run commands: {why(reached)}")
        return
    await asyncio.gather(
        _host_docker(found, hosts, executor),
        discover_pm2(executor, findings),
        discover_units(executor, findings),
        discover_deployments(executor, findings),
        discover_listening(executor, findings),
    )


async def _host_docker(found: Discovery, hosts: Hosts, executor: Executor) -> None:
    """The host's own engine, on its default socket, if it has one."""
    socket = await probe(executor, ["test", "-S", DEFAULT_SOCKET])
    if not socket.ok:
        found.findings.notes.append(f"docker: no engine socket at {DEFAULT_SOCKET}")
        return
    found.engine = hosts.engine(found.source)
    await discover_containers(found.engine.engine, found.findings)
    config = found.source.config
    if found.findings.problems and isinstance(config, SSHEndpoint):
        await _say_why(found, executor, DEFAULT_SOCKET, config.user)


async def _say_why(found: Discovery, executor: Executor, socket: str, user: str) -> None:
    """Over ssh the SDK only sees a dropped connection when sshd may not open the engine's
    socket: ask the host, as the ssh user, whether it may, and say that instead."""
    if not (await probe(executor, ["test", "-S", socket])).ok:
        reason = f"no engine socket at {socket}"
    elif not (await probe(executor, ["test", "-r", socket, "-a", "-w", socket])).ok:
        reason = (
            f"permission denied on {socket} for the ssh user {user!r} "
            "(add it to the socket's group, e.g. docker)"
        )
    else:
        return
    found.findings.problems[-1] = f"docker: {reason}"


async def _check_ports(found: Discovery, http: httpx.AsyncClient) -> None:
    """Ask each port of what was found what it answers; attach the checks."""
    findings, host = found.findings, address(found.source)
    owners: list[PM2Process | Unit] = [*findings.pm2, *findings.units]
    claimed = {o.pid for o in owners if o.pid is not None}
    by_pid: dict[int, list[tuple[str, int]]] = {}
    for listening in findings.listening:
        if listening.pid not in claimed or listening.pid is None:
            continue
        where = reachable_from_here(listening.address, host)
        if where is not None:
            by_pid.setdefault(listening.pid, []).append((where, listening.port))
        else:
            findings.notes.append(
                f"port {listening.port} ({listening.process}) listens on {listening.address} "
                "only: opsbot cannot reach it from here, no check drafted"
            )
    wanted = {(host, port) for c in findings.containers for port in c.published}
    wanted.update(key for keys in by_pid.values() for key in keys)
    found.ports = await port_checks(http, sorted(wanted))
    findings.containers[:] = [
        dataclasses.replace(c, checks=tuple(found.ports[(host, p)] for p in c.published))
        for c in findings.containers
    ]
    findings.pm2[:] = [
        dataclasses.replace(p, checks=_owned(found, by_pid, p.pid)) for p in findings.pm2
    ]
    findings.units[:] = [
        dataclasses.replace(u, checks=_owned(found, by_pid, u.pid)) for u in findings.units
    ]
    others = sorted(
        f"{item.port} ({item.process or 'process not shown'})"
        for item in findings.listening
        if item.pid not in claimed
        and item.process not in _NOT_THEIRS
        and (is_loopback(host) or not is_loopback(item.address))
    )
    if others:
        shown = ", ".join(others[:12]) + (
            f" and {len(others) - 12} more" if len(others) > 12 else ""
        )
        findings.notes.append(f"listening, not drafted (nothing found owns them): {shown}")


def _owned(
    found: Discovery, by_pid: dict[int, list[tuple[str, int]]], pid: int | None
) -> tuple[PortCheck, ...]:
    if pid is None:
        return ()
    return tuple(found.ports[key] for key in sorted(by_pid.get(pid, ())) if key in found.ports)
