"""A real redis-server on a loopback port, no persistence."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.ports import free_port, require_binary, start_process, stop_process, wait_until


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    url: str


def pings(port: int) -> bool:
    """A Redis (or Sentinel) on loopback ``port`` answers PING."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def start_redis(tmp_path: Path) -> Iterator[RedisServer]:
    binary = require_binary("redis-server", "redis-server")
    tmp_path.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = tmp_path / "redis.log"
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(tmp_path), "--daemonize", "no"]  # fmt: skip
    proc = start_process(argv, log)
    try:
        wait_until(lambda: pings(port), what="redis-server", log=log, proc=proc)
        yield RedisServer(host="127.0.0.1", port=port, url=f"redis://127.0.0.1:{port}/0")
    finally:
        stop_process(proc)
