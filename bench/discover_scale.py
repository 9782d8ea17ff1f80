"""Benchmark: ``opsbot discover`` of a Docker host with 50 containers (aim: under 5 s).

Starts the lab's real dockerd (tests/lab, root needed) and ``--containers`` busybox
containers on a bridge network of their own: every fifth publishes busybox httpd (an http
check is drafted), every third has a HEALTHCHECK. Measured in the same run:

* ``opsbot discover unix:///…sock`` as a user runs it (a new process: interpreter start,
  imports, discovery, the draft printed and validated);
* the same discovery inside one process (``discover_draft``), warm;
* the anchor: a bare docker SDK ``containers(all=True)`` plus one ``inspect_container``
  each, in sequence (``docker ps -a`` + ``docker inspect``), no port asked anything.

Appends a ``## discover_scale`` section to bench/RESULTS.md (``--results``).

    python bench/discover_scale.py [--containers 50] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blackbox import ROOT, append_results, machine, stamp

from opsbot.onboarding.drafting import discover_draft
from tests.lab.dockerd import DockerLab, start_dockerd
from tests.lab.ports import free_port


def populate(lab: DockerLab, count: int) -> None:
    with closing(lab.client()) as client:
        client.networks.create("bench-net", driver="bridge")
        for i in range(count):
            web = i % 5 == 0
            client.containers.run(
                lab.image_v1,
                ["httpd", "-f", "-p", "8080", "-h", "/www"] if web else ["sleep", "3600"],
                name=f"bot{i:03d}", detach=True, init=True, network="bench-net",
                ports={"8080/tcp": ("127.0.0.1", free_port())} if web else {},
                healthcheck={"test": ["CMD", "true"], "interval": 5_000_000_000}
                if i % 3 == 0 else None,
            )  # fmt: skip


def anchor(lab: DockerLab) -> float:
    with closing(lab.client()) as client:
        started = time.monotonic()
        for row in client.api.containers(all=True):
            client.api.inspect_container(row["Id"])
        return time.monotonic() - started


def in_process(url: str) -> tuple[float, int]:
    started = time.monotonic()
    drafted = asyncio.run(discover_draft([url], None))
    return time.monotonic() - started, len(drafted.draft.targets)


def as_a_user(url: str) -> float:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "opsbot", "discover", url],
        capture_output=True, text=True, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=60,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"opsbot discover failed:\n{done.stderr}")
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="opsbot-bench-") as tmp,
        start_dockerd(Path(tmp)) as lab,
    ):
        populate(lab, args.containers)
        cli = [as_a_user(lab.base_url) for _ in range(args.rounds)]
        warm = [in_process(lab.base_url) for _ in range(args.rounds)]
        bare = [anchor(lab) for _ in range(args.rounds)]
    targets = warm[0][1]
    opsbot_warm = statistics.median(t for t, _ in warm)
    floor = statistics.median(bare)
    section = f"""## discover_scale · {stamp()} · {args.containers} containers on one dockerd

{machine()}. `python bench/discover_scale.py --containers {args.containers} --rounds {args.rounds}`: medians over {args.rounds} rounds; {targets} targets drafted ({(args.containers + 4) // 5} ports asked for HTTP).

| | time |
|---|---|
| `opsbot discover unix://…` as a new process (start, imports, discovery, YAML, validation) | {statistics.median(cli):.3f} s (aim: < 5 s) |
| opsbot discovery + draft inside one process | {opsbot_warm:.3f} s ({opsbot_warm / floor:.2f}× the anchor) |
| anchor: docker SDK `containers(all=True)` + `inspect_container` each, in sequence | {floor:.3f} s |
"""  # noqa: E501
    print(section)
    append_results(args.results, section)


if __name__ == "__main__":
    main()
