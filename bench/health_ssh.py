"""Benchmark: /health over many SSH targets, cold and warm.

Starts the lab sshd (tests/lab, root needed), configures N command targets on it (each
running `true` as its status over SSH, with a per-host concurrency limit of 8), then runs the
/health verb the way the bot does: once cold (no connection yet) and R times warm. Reports
the wall time of each and the SSH handshakes sshd accepted, and appends to bench/RESULTS.md.

    python bench/health_ssh.py [--targets 100] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opsbot.commands import Caller, dispatch  # noqa: E402
from opsbot.config import Role, Settings  # noqa: E402
from opsbot.services import Services  # noqa: E402
from tests.factories import ssh_endpoint  # noqa: E402
from tests.lab.sshd import count_accepted_connections, start_sshd  # noqa: E402


async def measure(
    settings: Settings, rounds: int, sshd: object
) -> tuple[float, list[float], int, int]:
    services = Services.build(settings)
    caller = Caller("bench", Role.admin)
    try:
        before = count_accepted_connections(sshd)  # type: ignore[arg-type]
        started = time.perf_counter()
        reply = await dispatch(services, caller, "health", [])
        cold = time.perf_counter() - started
        assert "all healthy" in reply.text, reply.text + reply.block[:500]
        after_cold = count_accepted_connections(sshd)  # type: ignore[arg-type]
        warm = []
        for _ in range(rounds):
            started = time.perf_counter()
            reply = await dispatch(services, caller, "health", [])
            warm.append(time.perf_counter() - started)
            assert "all healthy" in reply.text
        after_warm = count_accepted_connections(sshd)  # type: ignore[arg-type]
    finally:
        await services.close()
    return cold, warm, after_cold - before, after_warm - after_cold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opsbot-bench-") as tmp, start_sshd(Path(tmp)) as sshd:
        settings = Settings(
            data_dir=Path(tmp) / "data",
            alerts={"monitor": {"enabled": False}},
            endpoints={"host": ssh_endpoint(sshd, max_concurrency=8)},
            targets={
                f"bot{i:03d}": {"kind": "command", "endpoint": "host",
                                "actions": {"status": ["true"]}}
                for i in range(args.targets)
            },
        )  # fmt: skip
        cold, warm, cold_handshakes, warm_handshakes = asyncio.run(
            measure(settings, args.rounds, sshd)
        )
    line = (
        f"| {time.strftime('%Y-%m-%d')} | health_ssh | {args.targets} targets, 1 host, "
        f"max_concurrency 8 | cold {cold:.2f} s, {cold_handshakes} handshake(s) | warm median "
        f"{statistics.median(warm):.2f} s (min {min(warm):.2f}, max {max(warm):.2f}), "
        f"{warm_handshakes} handshakes over {args.rounds} rounds |"
    )
    print(line)
    results = ROOT / "bench" / "RESULTS.md"
    if not results.exists():
        results.write_text(
            "# Benchmark results\n\nAppended by the scripts under bench/ (2 cores).\n\n"
            "| date | benchmark | setup | cold | warm |\n|---|---|---|---|---|\n"
        )
    with results.open("a") as out:
        out.write(line + "\n")


if __name__ == "__main__":
    main()
