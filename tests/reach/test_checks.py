"""Checks against real HTTP and TCP servers on loopback: states, latency, budgets."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import pytest_asyncio
from pydantic import TypeAdapter

from opsbot.config import Target
from opsbot.reach.checks import check_all, check_target
from opsbot.reach.executors import Executor
from opsbot.reach.executors.docker import DockerEngine
from opsbot.reach.executors.local import LocalExecutor
from opsbot.reach.targets import State
from tests.lab.ports import free_port

TARGET = TypeAdapter(Target)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(0.6)
        if self.path == "/hang":
            time.sleep(5)
        status = 500 if self.path == "/broken" else 200
        body = json.dumps({"status": "degraded" if self.path == "/degraded" else "ok"}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


class Runtime:
    """The slice of Services that checks use: a real HTTP client and the local executor."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.telegram_api_url = "http://127.0.0.1:1"
        self.local = LocalExecutor()

    def executor(self, endpoint: str) -> Executor:
        return self.local

    def docker(self, endpoint: str) -> DockerEngine:
        raise AssertionError("no docker here")


@pytest_asyncio.fixture
async def runtime() -> AsyncIterator[Runtime]:
    async with httpx.AsyncClient() as http:
        yield Runtime(http)


def target(checks: list[dict[str, Any]], timeout: float = 5) -> Any:
    return TARGET.validate_python({"kind": "command", "checks": checks, "timeout": timeout})


@pytest.mark.parametrize(
    ("check", "state", "detail"),
    [
        ({"url": "/ok"}, State.OK, "HTTP 200"),
        ({"url": "/ok", "json_field": "status", "json_expect": "ok"}, State.OK, "HTTP 200"),
        ({"url": "/degraded", "json_field": "status", "json_expect": "ok"}, State.FAIL,
         "status = 'degraded'"),
        ({"url": "/ok", "json_field": "missing.field"}, State.FAIL, "no JSON field"),
        ({"url": "/broken"}, State.FAIL, "HTTP 500"),
        ({"url": "/slow", "latency_warning": 0.2}, State.WARN, "slow"),
        ({"url": "/hang", "timeout": 0.5}, State.FAIL, "timed out after 0.5 s"),
    ],
)  # fmt: skip
async def test_http_check(
    web: str, runtime: Runtime, check: dict[str, Any], state: State, detail: str
) -> None:
    check = {**check, "type": "http", "url": web + check["url"]}
    health = await check_target("t", target([check]), runtime)
    (result,) = health.checks
    assert result.state is state
    assert detail in result.detail
    assert result.latency is not None


async def test_tcp_check(runtime: Runtime) -> None:
    with closing(socket.socket()) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        up = await check_target("t", target([{"type": "tcp", "host": "127.0.0.1", "port": port}]),
                                runtime)  # fmt: skip
    down = await check_target(
        "t", target([{"type": "tcp", "host": "127.0.0.1", "port": free_port()}]), runtime
    )
    assert up.state is State.OK
    assert down.state is State.FAIL and "connection refused" in down.checks[0].detail


async def test_a_target_budget_cuts_slow_checks_and_keeps_the_rest(
    web: str, runtime: Runtime
) -> None:
    slow = target(
        [
            {"type": "http", "url": web + "/hang", "timeout": 30},
            {"type": "command", "argv": ["echo", "fine"]},
        ],
        timeout=1,
    )
    fast = target([{"type": "command", "argv": ["true"]}])
    started = time.monotonic()
    results = await check_all({"slow": slow, "fast": fast}, runtime)
    assert time.monotonic() - started < 2.5
    assert [r.target for r in results] == ["slow", "fast"]  # worst first
    hung, echoed = results[0].checks
    assert hung.state is State.FAIL and hung.detail == "no answer within 1 s"
    assert echoed.state is State.OK and echoed.detail == "fine"
    assert results[1].state is State.OK
