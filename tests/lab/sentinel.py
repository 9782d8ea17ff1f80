"""A real Sentinel lab on loopback: a master, a replica and three ``redis-server --sentinel``.

The sentinels agree on a failure in about a second (``down-after-milliseconds 1000``, quorum
2) and may fail over again soon after (``failover-timeout 2000``), so a bench can run rounds.
``failover()`` is ``SENTINEL FAILOVER``; ``kill_master()`` is SIGKILL; ``restart()`` brings a
killed server back on its port (the sentinels make it a replica of the new master);
``settle()`` waits until the sentinels agree on a master that has a replica in sync, the state
every test and round starts from.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.lab.ports import (
    LabError,
    free_port,
    require_binary,
    start_process,
    stop_process,
    wait_until,
)
from tests.lab.redis import pings

SERVICE = "opsmaster"


def _pairs(reply: object) -> dict[str, object]:
    """A sentinel's state reply, as redis-py parsed it (a dict) or not (field, value, ...)."""
    if isinstance(reply, dict):
        return {str(k): v for k, v in reply.items()}
    assert isinstance(reply, list)
    return {str(k): v for k, v in zip(reply[::2], reply[1::2], strict=True)}


@dataclass
class SentinelLab:
    folder: Path
    ports: list[int]  # the two data servers
    sentinel_ports: list[int]
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    service: str = SERVICE

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{self.service}"

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", p) for p in self.sentinel_ports]

    def ask(self, port: int, *command: str) -> object:
        with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as client:
            return client.execute_command(*command)

    def master_port(self) -> int:
        """The master the sentinels agree on (every one that answers names the same)."""
        named = set()
        for port in self.sentinel_ports:
            reply = self.ask(port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service)
            assert isinstance(reply, list | tuple)
            named.add(int(reply[1]))
        if len(named) != 1:
            raise LabError(f"the sentinels disagree on the master: {sorted(named)}")
        return named.pop()

    def replica_port(self) -> int:
        master = self.master_port()
        return next(p for p in self.ports if p != master)

    def _settled(self) -> bool:
        master = self.master_port()
        role = self.ask(master, "ROLE")
        replica = self.replica_port()
        replica_role = self.ask(replica, "ROLE")
        assert isinstance(role, list) and isinstance(replica_role, list)
        if role[0] != "master" or replica_role[0] != "slave":
            return False
        if int(replica_role[2]) != master or replica_role[3] != "connected":
            return False
        for port in self.sentinel_ports:  # each sees the replica, up and linked
            replicas = self.ask(port, "SENTINEL", "REPLICAS", self.service)
            assert isinstance(replicas, list)
            states = [_pairs(r) for r in replicas]
            if not any(
                int(str(s["port"])) == replica and s["flags"] == "slave"
                and s.get("master-link-status") == "ok"
                for s in states
            ):  # fmt: skip
                return False
            master_state = _pairs(self.ask(port, "SENTINEL", "MASTER", self.service))
            if "failover_in_progress" in str(master_state["flags"]):
                return False
        return True

    def settle(self, timeout: float = 60.0) -> int:
        """Wait until a master with an in-sync replica is agreed on; return its port."""
        wait_until(self._settled, what="sentinel lab settled", log=self.folder / "lab.log",
                   timeout=timeout)  # fmt: skip
        return self.master_port()

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: the replica is promoted, the old master is left running."""
        self.ask(self.sentinel_ports[0], "SENTINEL", "FAILOVER", self.service)

    def kill_master(self) -> int:
        port = self.master_port()
        proc = self.procs[port]
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return port

    def restart(self, port: int) -> None:
        """Start a killed data server again, empty, on its port."""
        if port in self.procs and self.procs[port].poll() is None:
            return
        self._start_server(port)

    def _start_server(self, port: int, replica_of: int | None = None) -> None:
        folder = self.folder / f"redis-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        argv = [require_binary("redis-server", "redis-server"), "--port", str(port),
                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(folder), "--daemonize", "no"]  # fmt: skip
        if replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(replica_of)]
        log = folder / "redis.log"
        self.procs[port] = start_process(argv, log)
        wait_until(lambda: pings(port), what=f"redis-server :{port}", log=log,
                   proc=self.procs[port])  # fmt: skip

    def _start_sentinel(self, port: int, master: int) -> None:
        folder = self.folder / f"sentinel-{port}"
        folder.mkdir(parents=True, exist_ok=True)
        conf = folder / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {master} 2\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 2000\n"
            f"sentinel parallel-syncs {self.service} 1\n"
        )
        log = folder / "sentinel.log"
        self.procs[port] = start_process(
            [require_binary("redis-server", "redis-server"), str(conf), "--sentinel"], log
        )
        wait_until(lambda: pings(port), what=f"redis-sentinel :{port}", log=log,
                   proc=self.procs[port])  # fmt: skip

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_process(proc)


@contextmanager
def start_sentinel_lab(folder: Path) -> Iterator[SentinelLab]:
    folder.mkdir(parents=True, exist_ok=True)
    lab = SentinelLab(folder, [free_port(), free_port()], [free_port() for _ in range(3)])
    with ExitStack() as stack:
        stack.callback(lab.stop)
        master, replica = lab.ports
        lab._start_server(master)
        lab._start_server(replica, replica_of=master)
        for port in lab.sentinel_ports:
            lab._start_sentinel(port, master)
        started = time.monotonic()
        lab.settle()
        (folder / "lab.log").write_text(f"settled in {time.monotonic() - started:.1f} s\n")
        yield lab
