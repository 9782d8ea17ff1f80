"""Benchmark: `/logs big 200` of a 1 GB log file over SSH, beside `ssh host tail -n 200`.

Starts a real sshd on loopback (tests/lab, root needed) and a log file of ``--size-mb`` MB on
its host: sparse up to the last few MB, then generated log lines, so the file is as big as
asked without writing a gigabyte. opsbot (``python -m opsbot run``, fake Bot API) answers
`/logs big N` with the last N lines (tailed on the remote side); the first ask opens the SSH
connection (cold), the next ones reuse it (warm). In the same run, the anchors:

* ``ssh -p PORT user@host tail -n N FILE``: OpenSSH's client, one process per ask, as a
  person at a terminal would do it (its handshake every time);
* bare asyncssh ``conn.run('tail -n N FILE')`` on an open connection: the floor.

opsbot's answer is checked (its last line is the file's last line) and its memory (RSS now
and peak) is read from /proc after the asks. Appends a ``## logs_big`` section to
bench/RESULTS.md (``--results``).

    python bench/logs_big.py [--size-mb 1024] [--lines 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncssh

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blackbox import (
    ROOT,
    append_results,
    fake_bot_api,
    machine,
    opsbot_config,
    ratio,
    running_opsbot,
    stamp,
    verb_seconds,
)

from tests.factories import ssh_endpoint
from tests.lab.sshd import SSHServer, start_sshd

TAIL_MB = 4  # real lines at the end of the file; the rest is a hole


def make_log(path: Path, size_mb: int) -> str:
    """A file of ``size_mb`` MB ending in numbered log lines; returns its last line."""
    tail_bytes = min(size_mb, TAIL_MB) * 1024 * 1024
    line = "2026-12-01 12:00:00 INFO worker-3 handled update {:09d} in 12 ms ok\n"
    with path.open("wb") as out:
        out.truncate(size_mb * 1024 * 1024 - tail_bytes)
        out.seek(0, os.SEEK_END)
        written, n = 0, 0
        chunk: list[str] = []
        while written < tail_bytes:
            text = line.format(n)
            chunk.append(text)
            written += len(text)
            n += 1
        out.write("".join(chunk).encode())
    path.chmod(0o644)
    return line.format(n - 1).rstrip("\n")


def ssh_tail(server: SSHServer, path: Path, lines: int) -> tuple[float, str]:
    argv = [
        "ssh", "-p", str(server.port), "-i", str(server.client_key),
        "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes", "-o", "ControlMaster=no", "-F", "/dev/null",
        f"{server.username}@{server.host}", "tail", "-n", str(lines), str(path),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=True)
    return time.perf_counter() - started, done.stdout


async def bare_tail(server: SSHServer, path: Path, lines: int, rounds: int) -> list[float]:
    async with asyncssh.connect(
        server.host, server.port, username=server.username,
        client_keys=[str(server.client_key)], known_hosts=str(server.known_hosts),
        config=None, agent_path=None,
    ) as conn:  # fmt: skip
        await conn.run(f"tail -n {lines} {path}", check=True)
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            await conn.run(f"tail -n {lines} {path}", check=True)
            times.append(time.perf_counter() - started)
        return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    args = parser.parse_args(argv)
    n = args.lines

    with tempfile.TemporaryDirectory(prefix="opsbot-logs-") as name:
        tmp = Path(name)
        with start_sshd(tmp / "sshd") as server, fake_bot_api() as fake:
            log = server.workdir / "big.log"
            last = make_log(log, args.size_mb)
            size = log.stat().st_size
            config = opsbot_config(
                fake, tmp / "data",
                endpoints={"host": ssh_endpoint(server)},
                targets={"big": {"kind": "command", "endpoint": "host", "log_file": str(log),
                                 "actions": {"status": ["/bin/true"]}}},
            )  # fmt: skip

            def done(text: str) -> bool:
                return text.startswith(f"📜 big · last {n} lines")

            ssh_times: list[float] = []
            opsbot_warm: list[float] = []
            with running_opsbot(fake, config, tmp / "opsbot") as bot:
                cold = bot.ask(f"/logs big {n}", done).final
                for _ in range(args.rounds):  # alternate: both see the same load
                    elapsed, out = ssh_tail(server, log, n)
                    assert out.rstrip("\n").splitlines()[-1] == last
                    ssh_times.append(elapsed)
                    answer = bot.ask(f"/logs big {n}", done)
                    opsbot_warm.append(answer.final)
                shown = answer.message.document_bytes or (answer.message.text or "").encode()
                if shown.decode().rstrip("\n").splitlines()[-1] != last:
                    raise RuntimeError("opsbot's /logs did not end with the file's last line")
                rss, peak = bot.memory()
                inside = verb_seconds(tmp / "data", "logs")
            floor = asyncio.run(bare_tail(server, log, n, args.rounds))

    warm, ssh_med, floor_med = (statistics.median(v) for v in (opsbot_warm, ssh_times, floor))
    command = (
        f"python bench/logs_big.py --size-mb {args.size_mb} --lines {n} --rounds {args.rounds}"
    )
    section = "\n".join([
        f"## logs_big · {stamp()} · `/logs big {n}` of a {size / 2**30:.2f} GiB file",
        "",
        f"{machine()}. `{command}`: medians over {args.rounds} rounds.",
        "",
        "| | time | memory |",
        "|---|---|---|",
        f"| opsbot `/logs big {n}` via the fake Bot API, warm | {warm * 1000:.0f} ms "
        f"(**{ratio(warm, ssh_med)}** `ssh tail`) | RSS {rss:.0f} MB, peak {peak:.0f} MB |",
        f"| opsbot, first ask (SSH handshake included) | {cold * 1000:.0f} ms | |",
        f"| opsbot inside the verb | {statistics.median(inside[1:] or inside) * 1000:.0f} ms | |",
        f"| `ssh host tail -n {n} FILE` (OpenSSH client, new connection each) "
        f"| {ssh_med * 1000:.0f} ms | |",
        f"| bare asyncssh `tail` on an open connection (floor) | {floor_med * 1000:.0f} ms "
        f"({ratio(warm, floor_med)} for opsbot) | |",
    ])  # fmt: skip
    print(section)
    append_results(args.results, section)


if __name__ == "__main__":
    main()
