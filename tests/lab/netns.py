"""A bastion network: a host that only a bastion can reach, made of two network namespaces.

    this machine ── veth ── [bastion ns] ── veth ── [target ns]
     198.18.x.1           198.18.x.2  198.19.x.1     198.19.x.2

The bastion namespace has one address on each link; the target namespace only knows the
bastion's link. This machine gets an ``unreachable`` route for the target's link, so a direct
connection fails at once (instead of leaving through the default route). Addresses come from
198.18.0.0/15 (reserved for benchmarks and labs), one /30 pair per process id, so parallel
test sessions do not collide. Root only; everything is removed on exit.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.ports import require_binary, run_logged


@dataclass(frozen=True)
class BastionNet:
    bastion_ns: str
    bastion_address: str  # reachable from this machine
    target_ns: str
    target_address: str  # reachable only from the bastion namespace


@contextmanager
def bastion_network(log: Path) -> Iterator[BastionNet]:
    ip = require_binary("ip", "iproute2")
    slot = os.getpid() % 16384
    third, fourth = slot // 64, (slot % 64) * 4
    near = f"198.18.{third}.{fourth}"  # the /30 network between here and the bastion
    far = f"198.19.{third}.{fourth}"  # the /30 network between the bastion and the target
    tag = f"{os.getpid() % 100000}"
    bastion_ns, target_ns = f"opsbot-bastion-{tag}", f"opsbot-target-{tag}"
    here, b_out, b_in, t_in = f"obh{tag}", f"obb{tag}", f"obc{tag}", f"obt{tag}"

    def host(*args: str) -> None:
        run_logged([ip, *args], log, "ip " + " ".join(args))

    def inside(ns: str, *args: str) -> None:
        run_logged([ip, "netns", "exec", ns, ip, *args], log, f"ip ({ns}) " + " ".join(args))

    def plus(network: str, n: int) -> str:
        a, b, c, d = network.split(".")
        return f"{a}.{b}.{c}.{int(d) + n}"

    with ExitStack() as cleanup:
        for ns in (bastion_ns, target_ns):
            host("netns", "add", ns)
            cleanup.callback(run_logged, [ip, "netns", "del", ns], log, f"ip netns del {ns}")
            inside(ns, "link", "set", "lo", "up")
        host("link", "add", here, "type", "veth", "peer", "name", b_out)
        host("link", "set", b_out, "netns", bastion_ns)
        host("addr", "add", f"{plus(near, 1)}/30", "dev", here)
        host("link", "set", here, "up")
        inside(bastion_ns, "addr", "add", f"{plus(near, 2)}/30", "dev", b_out)
        inside(bastion_ns, "link", "set", b_out, "up")
        host("link", "add", b_in, "netns", bastion_ns, "type", "veth", "peer", "name", t_in,
             "netns", target_ns)  # fmt: skip
        inside(bastion_ns, "addr", "add", f"{plus(far, 1)}/30", "dev", b_in)
        inside(bastion_ns, "link", "set", b_in, "up")
        inside(target_ns, "addr", "add", f"{plus(far, 2)}/30", "dev", t_in)
        inside(target_ns, "link", "set", t_in, "up")
        host("route", "add", "unreachable", f"{far}/30")
        cleanup.callback(
            run_logged, [ip, "route", "del", "unreachable", f"{far}/30"], log, "ip route del"
        )
        yield BastionNet(bastion_ns, plus(near, 2), target_ns, plus(far, 2))
