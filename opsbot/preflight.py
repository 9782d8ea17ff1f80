"""``opsbot check``: reach every endpoint before trusting the config, and say how to fix it.

SSH endpoints are connected to with host key verification and run ``true``; Docker engines are
pinged; opsbot's own token is tried with ``getMe``. Every row is reported (an unreadable secret
file is a row, not the end of the check), each failure with a hint for its kind: the variable
to set, the key file to create, the exact ``ssh-keyscan`` line, DNS, refused, timeout, TLS.
One table, a non-zero exit on any failure.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from opsbot.config import (
    DockerEndpoint,
    LocalEndpoint,
    Settings,
    SSHEndpoint,
    load_config,
    tolerating_unreadable_secret_files,
)
from opsbot.config.errors import env_name
from opsbot.errors import HostKeyError, OpsbotError
from opsbot.services import Services, local_path
from opsbot.state.store import STORE_UNREACHABLE
from opsbot.updates import notices as update_notices

Unreadable = list[tuple[str, Path, str]]  # (x_file key, path, reason)


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    kind: str
    ok: bool
    detail: str
    hint: str = ""


def load_for_check(path: Path) -> tuple[Settings, Unreadable]:
    """The configuration, with unreadable secret files listed instead of fatal."""
    with tolerating_unreadable_secret_files() as unreadable:
        settings = load_config(path)
    return settings, list(unreadable)


# --------------------------------------------------------------------------- hints by failure kind

_DNS = re.compile(
    r"name or service not known|nodename nor servname|temporary failure in name resolution|"
    r"no address associated|getaddrinfo failed|name resolution",
    re.IGNORECASE,
)
_REFUSED = re.compile(r"connection refused|connect call failed|errno 111", re.IGNORECASE)
_TIMEOUT = re.compile(r"timed? ?out|no ssh handshake within|timeout", re.IGNORECASE)
_TLS = re.compile(r"certificate|ssl|tls", re.IGNORECASE)
_NO_SOCKET = re.compile(r"no such file or directory|filenotfounderror", re.IGNORECASE)
_DENIED = re.compile(r"permission denied", re.IGNORECASE)


def network_hint(text: str, host: str, port: int | str) -> str:
    """A hint for a failure to reach host:port, by what the error says."""
    if _TLS.search(text):
        return (
            f"TLS to {host} failed: the certificate is not trusted or does not match the name "
            "(a proxy in between? an expired certificate? the system CA bundle missing?)"
        )
    if _DNS.search(text):
        return f"{host} does not resolve: check the name (typo?) and this machine's DNS"
    if _REFUSED.search(text):
        return f"nothing listens on {host}:{port}: is the service running, is the port right?"
    if _TIMEOUT.search(text):
        return (
            f"no answer from {host}:{port} in time: a firewall dropping packets, "
            "or the wrong host/port"
        )
    return ""


def ssh_hint(config: SSHEndpoint, exc: BaseException) -> str:
    text = str(exc)
    if isinstance(exc, HostKeyError):
        known = config.known_hosts or "~/.ssh/known_hosts"
        return (
            f"ssh-keyscan -p {config.port} {config.host} >> {known}   "
            "(then compare the fingerprint with the host's own `ssh-keygen -lf` output)"
        )
    if "refused login" in text:
        key = f"{config.key_files[0]}.pub" if config.key_files else "~/.ssh/id_ed25519.pub"
        return (
            f"the key is not accepted for {config.user}: "
            f"ssh-copy-id -i {key} -p {config.port} {config.user}@{config.host}"
        )
    return network_hint(text, config.host, config.port)


def key_file_problem(path: Path) -> tuple[str, str] | None:
    """(detail, hint) when a configured private key cannot be used; checked before connecting."""
    full = local_path(path)
    if not full.exists():
        return (
            f"key file {path} does not exist",
            f"create it with `ssh-keygen -t ed25519 -f {path} -N ''` and add {path}.pub to "
            "the host's ~/.ssh/authorized_keys, or fix key_files",
        )
    if not os.access(full, os.R_OK):
        return (
            f"key file {path} is not readable by uid {os.getuid()}",
            f"give this user read access: chown {os.getuid()} {path} && chmod 600 {path} "
            "(in a container: mount it readable by the container's user)",
        )
    return None


def docker_hint(config: DockerEndpoint, text: str) -> str:
    if config.via_ssh is not None:
        return f"is dockerd running on {config.via_ssh}, at {config.remote_socket}?"
    if config.url.startswith("unix://"):
        socket = config.url.removeprefix("unix://")
        if _DENIED.search(text):
            return f"no access to {socket}: run opsbot in the docker group, or use via_ssh"
        if _NO_SOCKET.search(text) or _REFUSED.search(text):
            return f"no Docker engine at {socket}: is dockerd running, is the socket mounted?"
        return ""
    host, _, port = config.url.split("://", 1)[-1].partition(":")
    return network_hint(text, host, port or "2375")


# --------------------------------------------------------------------------- rows


async def check_endpoint(services: Services, name: str) -> Row:
    config = services.settings.all_endpoints[name]
    started = time.monotonic()
    if isinstance(config, SSHEndpoint):
        for key_file in config.key_files:
            problem = key_file_problem(key_file)
            if problem is not None:
                return Row(name, "ssh", False, problem[0], problem[1])
    try:
        match config:
            case SSHEndpoint():
                where = f"{config.user}@{config.host}:{config.port}"
                where += f" via {config.via}" if config.via else ""
                result = await services.executor(name).run(
                    ["true"], timeout=config.connect_timeout
                )
                if not result.ok:
                    return Row(name, "ssh", False, f"{where}: `true` exited {result.exit_status}")
                key = (
                    "host key NOT checked" if config.insecure_no_host_key_check else "host key ok"
                )
                detail = f"{where}, {key}"
            case DockerEndpoint():
                await services.docker(name).ping()
                detail = config.url if config.via_ssh is None else f"via ssh {config.via_ssh}"
            case LocalEndpoint():
                detail = "this machine"
    except (OpsbotError, OSError) as exc:
        match config:
            case SSHEndpoint():
                hint = ssh_hint(config, exc)
            case DockerEndpoint():
                hint = docker_hint(config, str(exc))
            case _:
                hint = ""
        return Row(name, config.type, False, str(exc), hint)
    return Row(name, config.type, True, f"{detail} ({time.monotonic() - started:.2f} s)")


async def check_telegram(services: Services, unreadable: Unreadable | None = None) -> Row:
    telegram = services.settings.telegram
    variable = env_name(("telegram", "token"))
    if telegram.token is None:
        if telegram.token_file is not None:
            reasons = [why for _, path, why in unreadable or [] if path == telegram.token_file]
            return Row(
                "telegram", "bot api", False,
                f"token_file {telegram.token_file}: {reasons[0] if reasons else 'unreadable'}",
                f"put the token from @BotFather in the environment variable {variable}, "
                f"or make {telegram.token_file} readable by uid {os.getuid()}",
            )  # fmt: skip
        return Row(
            "telegram", "bot api", False, "no token (the console needs none; `run` does)",
            f"put the token from @BotFather in the environment variable {variable} "
            "(or a file named by telegram.token_file)",
        )  # fmt: skip
    url = f"{telegram.api_url}/bot{telegram.token.get_secret_value()}/getMe"
    host = re.sub(r"^https?://", "", telegram.api_url).split("/")[0]
    try:
        response = await services.http.get(url, timeout=10)
        answer = response.json()
    except Exception as exc:  # any failure is a row, never a crash
        text = _explain(exc)
        port = "443" if telegram.api_url.startswith("https") else "80"
        name, _, explicit = host.partition(":")
        return Row(
            "telegram", "bot api", False, f"{telegram.api_url}: {text}",
            network_hint(text, name, explicit or port),
        )  # fmt: skip
    if not answer.get("ok"):
        hint = ""
        if response.status_code in (401, 404):
            hint = f"the token was refused: copy it again from @BotFather into {variable}"
        return Row("telegram", "bot api", False, str(answer.get("description")), hint)
    return Row("telegram", "bot api", True, "@" + str(answer["result"].get("username")))


def _explain(exc: BaseException) -> str:
    """The exception and its innermost cause: httpx says "All connection attempts failed", the
    OSError under it says why ("Connect call failed", "Name or service not known")."""
    text = f"{type(exc).__name__}: {exc}".rstrip(": ")
    root: BaseException = exc
    seen = {id(exc)}
    while (nxt := root.__cause__ or root.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        root = nxt
    if root is not exc and str(root) and str(root) not in text:
        text += f" ({root})"
    return text


def secret_file_rows(settings: Settings, unreadable: Unreadable) -> list[Row]:
    """Unreadable secret files other than opsbot's token (that one is the telegram row)."""
    return [
        Row(key, "secret", False, f"{path}: {reason}",
            f"make {path} readable by uid {os.getuid()}, or give the value in the environment")
        for key, path, reason in unreadable
        if path != settings.telegram.token_file
    ]  # fmt: skip


def objective_rows(settings: Settings) -> list[Row]:
    """What the objectives cover; a target whose own objective cannot be measured fails."""
    if not settings.objectives.enabled:
        return []
    rows = []
    measured = [n for n in settings.targets if settings.objective(n) is not None]
    for name, target in settings.targets.items():
        if target.objective is not None and target.objective.enabled and name not in measured:
            rows.append(Row(f"targets.{name}", "objective", False,
                            "an objective, but the monitor is off for it: no rounds to measure",
                            f"set targets.{name}.monitor.enabled: true, or drop its objective"))
    if not measured:
        return rows
    default = settings.objectives.default
    own = sum(1 for n in measured if settings.targets[n].objective is not None)
    detail = (f"{len(measured)} targets, default {default.availability:g} % over "
              f"{default.window / 86400:g} d ({own} with their own); "
              f"{len(settings.objectives.burn_rules) if settings.objectives.alerts else 0} "
              f"burn-rate rules; report {settings.objectives.report.every}")
    return [Row("objectives", "slo", True, detail), *rows]


async def update_rows(services: Services) -> list[Row]:
    """Each target with update notices: its image read, its registry asked for the tags."""
    names = sorted(update_notices.watched(services))
    found = await asyncio.gather(*(update_notices.probe(services, n) for n in names))
    return [
        Row(f"targets.{name}", "updates", ok, detail, hint)
        for name, (ok, detail, hint) in zip(names, found, strict=True)
    ]


def table(rows: list[Row]) -> str:
    widths = [max(len(r.name) for r in rows), max(len(r.kind) for r in rows)]
    lines = [f"{'ENDPOINT':<{widths[0]}}  {'KIND':<{widths[1]}}  RESULT  DETAIL"]
    for r in rows:
        result = "ok" if r.ok else "FAILED"
        lines.append(f"{r.name:<{widths[0]}}  {r.kind:<{widths[1]}}  {result:<6}  {r.detail}")
        if r.hint:
            lines.append(f"{'':<{widths[0]}}  ↳ fix: {r.hint}")
    return "\n".join(lines)


async def store_rows(services: Services) -> list[Row]:
    """With Redis Sentinel: the master the sentinels name (a plain store adds no row)."""
    from opsbot.state.store.sentinel import SentinelStore

    store = services.store
    inner = getattr(store, "inner", store)  # under RedactingStore
    if not isinstance(inner, SentinelStore):
        return []
    try:
        master = await inner.master()
    except STORE_UNREACHABLE as exc:
        hint = "check store.redis_url / store.sentinels and that the sentinels run"
        return [Row("store", "redis sentinel", False, str(exc), hint)]
    detail = (
        f"master {inner.sentinels.service} at {master.host}:{master.port} (config-epoch "
        f"{master.epoch}, {master.answered} of {master.asked} sentinels answered)"
    )
    return [Row("store", "redis sentinel", True, detail)]


async def run_check(
    settings: Settings, out: TextIO = sys.stdout, unreadable: Unreadable | None = None
) -> int:
    unreadable = unreadable or []
    services = Services.build(settings)
    try:
        names = sorted(settings.all_endpoints)
        rows = list(await asyncio.gather(*(check_endpoint(services, n) for n in names)))
        rows.append(await check_telegram(services, unreadable))
        rows += secret_file_rows(settings, unreadable)
        rows += objective_rows(settings)
        rows += await update_rows(services)
        rows += await store_rows(services)
    finally:
        await services.close()
    redact = services.redactor.redact
    rows = [Row(r.name, r.kind, r.ok, redact(r.detail), redact(r.hint)) for r in rows]
    out.write(table(rows) + "\n")
    failed = [r.name for r in rows if not r.ok]
    out.write(f"{len(rows) - len(failed)} ok, {len(failed)} failed\n")
    return 1 if failed else 0
