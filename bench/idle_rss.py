"""Benchmark: the resident memory of an idle `opsbot run` watching 100 targets.

Starts `python -m opsbot run` (a child process) against the fake Bot API with N command
targets on the local endpoint (status: `true`, monitored every 30 s, no web server, no SSH or
Docker endpoint), waits until it polls and its first monitor round is done, then reads VmRSS
from /proc. Target: ≤ 90 MB with 100 targets. Appends a row to bench/RESULTS.md.

    python bench/idle_rss.py [--targets 100] [--settle 35]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.scale_lab import (
    OpsbotProcess,
    append_result,
    base_config,
    machine,
    start_fake,
    wait_for_startup,
)

HEADER = "| date | targets | RSS idle | RSS peak (VmHWM) | startup | machine |"


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def measure(targets: int, settle: float, folder: Path) -> tuple[float, float, float]:
    """(idle RSS MB, peak RSS MB, seconds to first poll)."""
    fake = start_fake()
    config = base_config(
        fake, folder / "data",
        alerts={"monitor": {"enabled": True, "interval": 30}},
        targets={
            f"svc{i:03d}": {"kind": "command", "actions": {"status": ["true"]}}
            for i in range(targets)
        },
    )  # fmt: skip
    try:
        with OpsbotProcess(config, folder) as opsbot:
            startup = wait_for_startup(fake, opsbot)
            time.sleep(settle)
            opsbot.alive()
            return opsbot.rss_mb(), peak_mb(opsbot.pid), startup
    finally:
        fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--settle", type=float, default=35.0, help="seconds after startup")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="opsbot-rss-") as tmp:
        idle, peak, startup = measure(args.targets, args.settle, Path(tmp))
    row = (
        f"| {time.strftime('%Y-%m-%d %H:%M')} | {args.targets} | {idle:.1f} MB | {peak:.1f} MB "
        f"| {startup:.1f} s | {machine()} |"
    )
    print(HEADER)
    print(row)
    if not args.no_write:
        append_result("idle_rss", HEADER, row)


if __name__ == "__main__":
    main()
