"""Listening ports (``ss -ltnp``), and what a port answers: HTTP on a health path, or TCP.

A port is asked ``GET /health``, ``/healthz`` then ``/`` (no body is kept, only the status);
the first that answers below 400 makes an http check, else the port is a tcp check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

import httpx

from opsbot.onboarding.findings import Findings, Listening, PortCheck
from opsbot.onboarding.probing import NOT_INSTALLED, probe, why
from opsbot.reach.executors import Executor

HEALTH_PATHS = ("/health", "/healthz", "/")
#: Seconds each HTTP question may take.
HTTP_TIMEOUT = 1.5

_USERS = re.compile(r'\("([^"]+)",pid=(\d+)')


async def discover_listening(executor: Executor, findings: Findings) -> None:
    result = await probe(executor, ["ss", "-ltnpH"])
    if result.exit_status in NOT_INSTALLED:
        findings.notes.append("ports: ss is not installed (iproute2)")
        return
    if not result.ok:
        findings.notes.append(f"ports: ss -ltnp: {why(result)}")
        return
    findings.listening.extend(parse_ss(result.stdout))


def parse_ss(stdout: str) -> list[Listening]:
    """``LISTEN 0 511 127.0.0.1:3000 0.0.0.0:* users:(("node",pid=42,fd=20))`` lines."""
    found: dict[tuple[str, int], Listening] = {}
    for line in stdout.splitlines():
        words = line.split()
        if len(words) < 5 or words[0] != "LISTEN":
            continue
        address, _, port = words[3].rpartition(":")
        if not port.isdigit():
            continue
        users = _USERS.search(line)
        key = (address.strip("[]"), int(port))
        if key not in found:
            found[key] = Listening(
                address=key[0],
                port=key[1],
                process=users.group(1) if users else None,
                pid=int(users.group(2)) if users else None,
            )
    return list(found.values())


def reachable_from_here(address: str, host: str) -> str | None:
    """Where opsbot can reach a port listening on ``address`` of ``host`` (None: it can't).

    A wildcard address is reached at the host; a loopback one only when the host is this
    machine (then at that loopback address).
    """
    bare = address.split("%", 1)[0]
    if bare in ("0.0.0.0", "::", "*", ""):  # noqa: S104 (a wildcard we read, not bind)
        return host
    try:
        ip = ipaddress.ip_address(bare)
    except ValueError:
        return None
    if ip.is_loopback:
        return bare if is_loopback(host) else None
    return bare


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def port_checks(
    http: httpx.AsyncClient, targets: list[tuple[str, int]]
) -> dict[tuple[str, int], PortCheck]:
    """Each (host, port) asked concurrently what it answers."""
    checks = await asyncio.gather(*(_check(http, host, port) for host, port in targets))
    return dict(zip(targets, checks, strict=True))


async def _check(http: httpx.AsyncClient, host: str, port: int) -> PortCheck:
    where = f"[{host}]" if ":" in host else host
    for path in HEALTH_PATHS:
        url = f"http://{where}:{port}{path}"
        try:
            response = await http.get(url, timeout=HTTP_TIMEOUT)
        except httpx.HTTPError:
            break  # refused, timed out or not HTTP: no other path will do better
        if response.status_code < 400:
            return PortCheck("http", host, port, url=url, status=response.status_code)
    return PortCheck("tcp", host, port)
