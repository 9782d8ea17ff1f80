"""``opsbot check``: reach every endpoint before trusting the config, and say what failed.

SSH endpoints are connected to with host key verification and run ``true``; Docker engines are
pinged; opsbot's own token is tried with ``getMe``. One table, a non-zero exit on any failure.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from opsbot.config import DockerEndpoint, LocalEndpoint, Settings, SSHEndpoint
from opsbot.errors import OpsbotError
from opsbot.services import Services


@dataclass(frozen=True, slots=True)
class Row:
    name: str
    kind: str
    ok: bool
    detail: str


async def check_endpoint(services: Services, name: str) -> Row:
    config = services.settings.all_endpoints[name]
    started = time.monotonic()
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
        return Row(name, config.type, False, str(exc))
    return Row(name, config.type, True, f"{detail} ({time.monotonic() - started:.2f} s)")


async def check_telegram(services: Services) -> Row | None:
    telegram = services.settings.telegram
    if telegram.token is None:
        return None
    url = f"{telegram.api_url}/bot{telegram.token.get_secret_value()}/getMe"
    try:
        answer = (await services.http.get(url, timeout=10)).json()
    except Exception as exc:  # any failure is a row, never a crash
        return Row("telegram", "bot api", False, f"{telegram.api_url}: {type(exc).__name__}")
    if not answer.get("ok"):
        return Row("telegram", "bot api", False, str(answer.get("description")))
    return Row("telegram", "bot api", True, "@" + str(answer["result"].get("username")))


def table(rows: list[Row]) -> str:
    widths = [max(len(r.name) for r in rows), max(len(r.kind) for r in rows)]
    lines = [f"{'ENDPOINT':<{widths[0]}}  {'KIND':<{widths[1]}}  RESULT  DETAIL"]
    for r in rows:
        result = "ok" if r.ok else "FAILED"
        lines.append(f"{r.name:<{widths[0]}}  {r.kind:<{widths[1]}}  {result:<6}  {r.detail}")
    return "\n".join(lines)


async def run_check(settings: Settings, out: TextIO = sys.stdout) -> int:
    services = Services.build(settings)
    try:
        names = sorted(settings.all_endpoints)
        rows = list(await asyncio.gather(*(check_endpoint(services, n) for n in names)))
        telegram = await check_telegram(services)
        if telegram is not None:
            rows.append(telegram)
    finally:
        await services.close()
    rows = [Row(r.name, r.kind, r.ok, services.redactor.redact(r.detail)) for r in rows]
    out.write(table(rows) + "\n")
    failed = [r.name for r in rows if not r.ok]
    out.write(f"{len(rows) - len(failed)} ok, {len(failed)} failed\n")
    return 1 if failed else 0
