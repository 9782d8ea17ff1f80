"""Health checks: HTTP, TCP, bot token, command exit status, Prometheus metric, kind's status.

All checks of all targets run concurrently. Each check has its own timeout and each target a
budget for all of its checks together, so a slow or dead target never delays an answer past its
own timeout: what has not answered by then is reported as failed, and the others still report.

The monitor passes a ``gate``: each check then first waits for a slot on its endpoint (see
``endpoint_key``) and only then starts, its timeout and the target's budget counted from that
moment, so opsbot's own queueing never reads as the target being slow. Without one, the same
holds for the slots of ``opsbot.reach.budget`` (SSH handshakes and session opens, HTTP checks):
a check's deadline, its latency and its target's budget leave out the time spent waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from opsbot.config import (
    Check,
    CommandCheck,
    ContainerTarget,
    HttpCheck,
    MetricCheck,
    Target,
    TcpCheck,
    TelegramCheck,
)
from opsbot.errors import OpsbotError
from opsbot.reach.budget import HTTP_CHECKS, deadline
from opsbot.reach.executors import Executor
from opsbot.reach.targets import Runtime, State, container_name, process_status
from opsbot.render import ago


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    state: State
    detail: str
    latency: float | None = None


@dataclass(frozen=True, slots=True)
class TargetHealth:
    target: str
    checks: tuple[CheckResult, ...]
    latency: float

    @property
    def state(self) -> State:
        return max((c.state for c in self.checks), default=State.OK)

    @property
    def summary(self) -> str:
        failing = [c for c in self.checks if c.state is self.state and c.state is not State.OK]
        shown = failing or self.checks[:1]
        return "; ".join(f"{c.name}: {c.detail}" for c in shown)

    @property
    def proof(self) -> str:
        """The check that proved it healthy, in a person's words: " (http /health → 200)"."""
        if not self.checks:
            return ""
        shown = next((c for c in self.checks if c.name.startswith("http ")), self.checks[0])
        name, detail = shown.name, shown.detail
        if name.startswith("http "):
            name = "http " + (urlsplit(name.removeprefix("http ")).path or "/")
            detail = detail.removeprefix("HTTP ")
        more = len(self.checks) - 1
        others = f"; {more} more {'check' if more == 1 else 'checks'} OK" if more else ""
        return f" ({name} → {detail}{others})"


class CheckRuntime(Runtime, Protocol):
    """What checks need beyond executors: an HTTP client and the Bot API root."""

    @property
    def http(self) -> httpx.AsyncClient: ...

    @property
    def telegram_api_url(self) -> str: ...


async def check_all(
    targets: Mapping[str, Target],
    runtime: CheckRuntime,
    on_result: Callable[[TargetHealth], None] | None = None,
) -> list[TargetHealth]:
    """Every target, concurrently; worst first, then by name.

    ``on_result`` is called with each target's health as soon as it is known (for progress).
    """

    async def one(name: str, target: Target) -> TargetHealth:
        result = await check_target(name, target, runtime)
        if on_result is not None:
            on_result(result)
        return result

    results = await asyncio.gather(*(one(n, t) for n, t in targets.items()))
    return sorted(results, key=lambda h: (-h.state, h.target))


#: Checks the monitor runs at once; the shared HTTP pool is sized above it (services.py).
#: Per-endpoint slots do the throttling; this only caps the total, high enough that slow SSH
#: hosts never hold every slot while HTTP and TCP checks wait.
CHECKS_IN_FLIGHT = 512

#: Waits for a slot on an endpoint (an ``endpoint_key``); the check runs inside it.
Gate = Callable[[str], AbstractAsyncContextManager[None]]


def endpoint_key(check: Check | None, target: Target) -> str:
    """What a check talks to: an endpoint name, an HTTP origin or a TCP address.

    ``None`` stands for the target's process status (its kind's own check).
    """
    match check:
        case HttpCheck() | MetricCheck():
            parts = urlsplit(check.url)
            return f"{parts.scheme}://{parts.netloc}"
        case TelegramCheck():
            return "telegram"
        case TcpCheck():
            return f"tcp://{check.host}:{check.port}"
        case CommandCheck():
            return check.endpoint or target.endpoint
    return target.endpoint


async def check_target(
    name: str, target: Target, runtime: CheckRuntime, *, gate: Gate | None = None
) -> TargetHealth:
    """All checks of one target within the target's timeout budget.

    With a ``gate``, each check waits for its endpoint's slot first and the budget applies to
    each check from the moment it got one.
    """
    started = time.monotonic()
    probes: list[tuple[str, str, Callable[[], Awaitable[CheckResult]]]] = []
    if target.status_check and (target.kind != "command" or target.actions.status):
        status = partial(_process, name, target, runtime)
        probes.append((_process_label(target), endpoint_key(None, target), status))
    for check in target.checks:
        run = partial(_run_check, check, name, target, runtime)
        probes.append((_label(check), endpoint_key(check, target), run))
    if gate is None and len(probes) == 1:  # the common case, without a task of its own
        label, _, probe = probes[0]
        try:
            async with deadline(target.timeout) as spent:
                result = await probe()
        except TimeoutError:
            result = CheckResult(label, State.FAIL, f"no answer within {target.timeout:g} s")
        return TargetHealth(name, (result,), spent.elapsed())
    # Each check keeps the target's budget, from when it starts (gated: once it has its slot)
    # and less its slot waits: the checks run at once, so together they keep it too.
    tasks = [
        asyncio.ensure_future(_gated(gate, key, probe, label, target.timeout))
        for label, key, probe in probes
    ]
    try:
        done, pending = await asyncio.wait(tasks) if tasks else (set(), set())
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    for task in pending:
        task.cancel()
    results = []
    for (label, _, _), task in zip(probes, tasks, strict=True):
        if task in done:
            results.append(task.result())
        else:
            results.append(
                CheckResult(label, State.FAIL, f"no answer within {target.timeout:g} s")
            )
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    latencies = [r.latency for r in results]
    # The slowest check's time (slot waits left out), when every check measured its own.
    latency = time.monotonic() - started
    if latencies and None not in latencies:
        latency = max(x for x in latencies if x is not None)
    return TargetHealth(name, tuple(results), latency)


async def _gated(
    gate: Gate | None,
    key: str,
    probe: Callable[[], Awaitable[CheckResult]],
    label: str,
    budget: float,
) -> CheckResult:
    async with contextlib.nullcontext() if gate is None else gate(key):
        try:
            async with deadline(budget):
                return await probe()
        except TimeoutError:
            return CheckResult(label, State.FAIL, f"no answer within {budget:g} s")


def _process_label(target: Target) -> str:
    return {"container": "container", "command": "status"}.get(target.kind, target.kind)


def check_phrase(label: str) -> str:
    """A check's label as a person reads it beside its target: ``http /health`` for
    ``http http://10.0.0.5:8080/health`` (the target names the host; the label keeps the whole
    URL as the check's identity)."""
    if not label.startswith("http "):
        return label
    url, hash_, count = label.removeprefix("http ").partition(" #")
    return f"http {urlsplit(url).path or '/'}{hash_}{count}"


def _label(check: Check) -> str:
    match check:
        case HttpCheck():
            return f"http {check.url}"
        case TcpCheck():
            return f"tcp {check.host}:{check.port}"
        case TelegramCheck():
            return "telegram bot"
        case CommandCheck():
            return f"command {check.argv[0]}"
        case MetricCheck():
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(check.labels.items()))
            return f"metric {check.metric}" + (f"{{{labels}}}" if labels else "")


async def _timed(
    label: str, timeout: float, probe: Callable[[], Awaitable[CheckResult]]
) -> CheckResult:
    """Run one probe under its own timeout; any failure becomes a FAIL result, never a crash.
    Its timeout and latency leave out the probe's slot waits (``opsbot.reach.budget``)."""
    try:
        async with deadline(timeout) as spent:
            result = await probe()
    except TimeoutError:
        return CheckResult(label, State.FAIL, f"timed out after {timeout:g} s", timeout)
    except (OSError, httpx.HTTPError, OpsbotError) as exc:
        # httpx errors carry the URL, which may hold a token: name the error class only,
        # plus the message for our own errors, which never contain secrets.
        why = _explain(exc)
        return CheckResult(label, State.FAIL, why, spent.elapsed())
    return CheckResult(result.name, result.state, result.detail, spent.elapsed())


def _explain(exc: BaseException) -> str:
    if isinstance(exc, OpsbotError):
        return str(exc)
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    return {
        "ConnectError": "connection failed",
        "ConnectTimeout": "connect timed out",
        "ReadTimeout": "read timed out",
        "RemoteProtocolError": "protocol error",
    }.get(type(exc).__name__, type(exc).__name__)


def _run_check(
    check: Check, name: str, target: Target, runtime: CheckRuntime
) -> Awaitable[CheckResult]:
    label = _label(check)
    match check:
        case HttpCheck():
            return _timed(label, check.timeout, lambda: _http(label, check, runtime.http))
        case TcpCheck():
            return _timed(label, check.timeout, lambda: _tcp(label, check))
        case TelegramCheck():
            return _timed(label, check.timeout, lambda: _telegram(label, check, runtime))
        case CommandCheck():
            return _timed(
                label, check.timeout + 1, lambda: _command(label, check, name, target, runtime)
            )
        case MetricCheck():
            return _timed(label, check.timeout, lambda: _metric(label, check, runtime.http))


async def _process(name: str, target: Target, runtime: Runtime) -> CheckResult:
    label = _process_label(target)

    async def probe() -> CheckResult:
        status = await process_status(name, target, runtime, timeout=target.timeout)
        return CheckResult(label, status.state, status.detail)

    return await _timed(label, target.timeout, probe)


async def _http(label: str, check: HttpCheck, http: httpx.AsyncClient) -> CheckResult:
    async with HTTP_CHECKS.hold():
        started = time.monotonic()
        response = await http.get(check.url, timeout=check.timeout)
        latency = time.monotonic() - started
    if response.status_code not in check.expect_status:
        return CheckResult(label, State.FAIL, f"HTTP {response.status_code}")
    if check.json_field is not None:
        try:
            value: Any = response.json()
            for part in check.json_field.split("."):
                value = value[part]
        except (ValueError, KeyError, TypeError, IndexError):
            return CheckResult(label, State.FAIL, f"no JSON field {check.json_field}")
        if check.json_expect is not None and value != check.json_expect:
            return CheckResult(label, State.FAIL, f"{check.json_field} = {value!r}")
    if latency > check.latency_warning:
        return CheckResult(
            label, State.WARN, f"HTTP {response.status_code}, slow ({latency:.1f} s)"
        )
    return CheckResult(label, State.OK, f"HTTP {response.status_code}")


async def _metric(label: str, check: MetricCheck, http: httpx.AsyncClient) -> CheckResult:
    from prometheus_client.parser import text_string_to_metric_families  # only metric checks

    async with HTTP_CHECKS.hold():
        response = await http.get(check.url, timeout=check.timeout)
    if response.status_code != 200:
        return CheckResult(label, State.FAIL, f"HTTP {response.status_code}")
    try:
        values = [
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == check.metric
            and all(sample.labels.get(k) == v for k, v in check.labels.items())
        ]
    except ValueError:
        return CheckResult(label, State.FAIL, "cannot parse the metrics text")
    if not values:
        return CheckResult(label, State.FAIL, f"no metric {check.metric}")
    value = float(sum(values))  # the parser gives ints for whole numbers, despite its types
    shown = f"{check.metric} = {_number(value)}"
    for limit, state in ((check.critical, State.FAIL), (check.warning, State.WARN)):
        if limit is not None and (value < limit if check.below else value > limit):
            sign = "<" if check.below else ">"
            return CheckResult(label, state, f"{shown} ({sign} {_number(limit)})")
    return CheckResult(label, State.OK, shown)


def _number(value: float) -> str:
    """Whole numbers in full (bytes, counts), others to four significant digits."""
    return f"{value:.0f}" if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"


async def _tcp(label: str, check: TcpCheck) -> CheckResult:
    _, writer = await asyncio.open_connection(check.host, check.port)
    writer.close()
    await writer.wait_closed()
    return CheckResult(label, State.OK, "connected")


async def _telegram(label: str, check: TelegramCheck, runtime: CheckRuntime) -> CheckResult:
    base = f"{check.api_url or runtime.telegram_api_url}/bot{check.secret()}"
    async with HTTP_CHECKS.hold():
        me = (await runtime.http.get(f"{base}/getMe", timeout=check.timeout)).json()
    if not me.get("ok"):
        why = "token revoked or invalid" if me.get("error_code") == 401 else me.get("description")
        return CheckResult(label, State.FAIL, f"getMe: {why}")
    username = "@" + str(me["result"].get("username", "?"))
    async with HTTP_CHECKS.hold():
        info = (await runtime.http.get(f"{base}/getWebhookInfo", timeout=check.timeout)).json()
    if not info.get("ok"):
        return CheckResult(
            label, State.WARN, f"{username}; getWebhookInfo: {info.get('description')}"
        )
    hook = info["result"]
    pending = int(hook.get("pending_update_count", 0))
    notes = [f"{pending} pending"] if hook.get("url") or pending else []
    state = State.OK
    if pending > check.pending_warning:
        state = State.WARN
    last_error = hook.get("last_error_date")
    if last_error and time.time() - int(last_error) < 3600:
        state = State.WARN
        error = hook.get("last_error_message")
        notes.append(f"webhook error {ago(time.time() - int(last_error))}: {error}")
    return CheckResult(label, state, ", ".join([username, *notes]))


async def _command(
    label: str, check: CommandCheck, name: str, target: Target, runtime: Runtime
) -> CheckResult:
    executor: Executor
    if check.endpoint is None and isinstance(target, ContainerTarget):
        # No endpoint given on a container: run it inside the container, like `compose exec`.
        executor = runtime.docker(target.endpoint).executor(container_name(name, target))
    else:
        executor = runtime.executor(check.endpoint or target.endpoint)
    result = await executor.run(check.argv, timeout=check.timeout, probe=True)
    if result.timed_out:
        return CheckResult(label, State.FAIL, f"timed out after {check.timeout:g} s")
    if result.exit_status == 0:
        last = result.stdout.strip().splitlines()[-1:]
        return CheckResult(label, State.OK, last[0][:120] if last else "exit 0")
    why = (result.stderr or result.stdout).strip().splitlines()[:1]
    return CheckResult(
        label, State.FAIL, f"exit {result.exit_status}" + (f": {why[0][:120]}" if why else "")
    )
