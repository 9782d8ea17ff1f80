"""Benchmark: /health over N SSH hosts, cold and warm, beside its anchors in the same run.

Starts N real sshd on loopback (tests/lab, root needed: one process, port, host key and key
pair each; ``--lab fleet``: one sshd per 16 hosts, each host a loopback address of its own)
and configures opsbot with one command target per host, its status the program ``/bin/true``
over SSH, its host keys in one known_hosts file of a line per host. Every contender runs that
same program: ``true`` alone would be the login shell's builtin, no process at all, which no
real check is (and which made the floor look 25-30% cheaper than any harness that starts the
program). Then, on the same hosts:

* opsbot: ``python -m opsbot run`` against the fake Bot API; `/health` is a user's message,
  timed until the answer shows every target. Cold = the first /health of a fresh process (one
  handshake per host), warm = the next ones (pooled connections). First feedback = its first
  message (the progress message from 20 targets up).
* bare asyncssh, the floor: cold = gather(connect + run `/bin/true`) over all hosts; warm = gather
  (run `/bin/true`) on connections already open. Host keys verified, like opsbot, and like it
  each known_hosts and key file parsed once; at opsbot's concurrency: at most 64 handshakes
  and 128 session opens at once (opsbot/reach/budget.py).
  Its rounds alternate with opsbot's, so both see the same load on the machine.
* parallel-ssh (``--anchors all``): ParallelSSHClient.run_command('/bin/true') + join; cold = a
  new client, warm = the same client again.
* ansible-core (``--anchors all``): ``ansible all -m raw -a /bin/true -f N``; cold with
  ControlMaster=no, warm with ControlPersist (after one warming run).

Appends a ``## health_fanout`` section with the ratios to bench/RESULTS.md (``--results``).

    python bench/health_fanout.py [--hosts 100] [--rounds 5] [--cold-rounds 3] [--anchors all]
                                  [--lab fleet]   # 1,000 hosts: --hosts 1000 --lab fleet
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
    sshd_farm,
    sshd_fleet,
    stamp,
    verb_seconds,
)

from opsbot.reach.budget import HANDSHAKES, SESSION_OPENS
from tests.factories import ssh_endpoint
from tests.lab.sshd import SSHServer, count_fleet_logins

#: What every contender runs on every host: a program (see the module docstring);
#: ``--program true`` measures against the builtin instead.
PROGRAM = "/bin/true"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- bare asyncssh


#: Each known_hosts and key file parsed once, before any round, as opsbot does: the floor
#: is asyncssh's fan-out, not its file parsing.
_PARSED: dict[Path, Any] = {}


def _parsed(path: Path, load: Callable[[str], Any]) -> Any:
    if path not in _PARSED:
        _PARSED[path] = load(str(path))
    return _PARSED[path]


def _connect(server: SSHServer) -> Any:
    return asyncssh.connect(
        server.host, server.port, username=server.username,
        client_keys=_parsed(server.client_key, asyncssh.load_keypairs),
        known_hosts=_parsed(server.known_hosts, asyncssh.read_known_hosts),
        config=None, agent_path=None,
    )  # fmt: skip


async def _run_true(conn: Any, opens: asyncio.Semaphore) -> None:
    async with opens:  # the session open, as opsbot holds a slot for it
        process = await conn.create_process(PROGRAM)
    result = await process.wait(check=True)
    assert result.exit_status == 0


def _limits() -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
    """opsbot's limits (handshakes, session opens): the floor runs at the same concurrency."""
    return asyncio.Semaphore(HANDSHAKES.limit), asyncio.Semaphore(SESSION_OPENS.limit)


async def bare_cold(servers: list[SSHServer]) -> float:
    conns: list[Any] = []
    handshakes, opens = _limits()

    async def one(server: SSHServer) -> None:
        async with handshakes:
            conn = await _connect(server)
        conns.append(conn)
        await _run_true(conn, opens)

    started = time.perf_counter()
    await asyncio.gather(*(one(s) for s in servers))
    elapsed = time.perf_counter() - started
    await _close(conns)
    return elapsed


async def bare_open(servers: list[SSHServer]) -> list[Any]:
    handshakes, opens = _limits()

    async def connect(server: SSHServer) -> Any:
        async with handshakes:
            return await _connect(server)

    conns = list(await asyncio.gather(*(connect(s) for s in servers)))
    await asyncio.gather(*(_run_true(c, opens) for c in conns))  # first channel on each
    return conns


async def bare_warm(conns: list[Any]) -> float:
    _, opens = _limits()
    started = time.perf_counter()
    await asyncio.gather(*(_run_true(c, opens) for c in conns))
    return time.perf_counter() - started


async def _close(conns: list[Any]) -> None:
    for conn in conns:
        conn.close()
    await asyncio.gather(*(c.wait_closed() for c in conns))


# --------------------------------------------------------------------------- opsbot


def interleaved_rounds(
    servers: list[SSHServer], tmp: Path, cold_rounds: int, rounds: int
) -> dict[str, list[float]]:
    """opsbot and the bare floor, round for round (the machine's load drifts; both see it).

    opsbot cold: the first /health of each fresh process; warm: the next ``rounds`` of the
    first process. Floor cold: connect+run on every host, then close; warm: run on the
    connections kept open meanwhile.
    """
    loop = asyncio.new_event_loop()
    n = len(servers)
    # One known_hosts for the fleet, as an operator keeps it (a line per host).
    known = tmp / "known_hosts"
    known.write_text("".join(p.read_text() for p in dict.fromkeys(s.known_hosts for s in servers)))
    endpoints = {
        f"h{i:03d}": ssh_endpoint(s, max_concurrency=8, known_hosts=str(known))
        for i, s in enumerate(servers)
    }
    targets = {
        f"bot{i:03d}": {"kind": "command", "endpoint": f"h{i:03d}",
                        "actions": {"status": [PROGRAM]}}
        for i in range(n)
    }  # fmt: skip
    out: dict[str, list[float]] = {
        "cold": [], "cold_first": [], "warm": [], "warm_first": [], "cold_handshakes": [],
        "warm_handshakes": [], "rss": [], "warm_inside": [], "bare_cold": [], "bare_warm": [],
    }  # fmt: skip

    def done(text: str) -> bool:
        return text.startswith(f"Health: {n} targets")

    def logins() -> int:
        return count_fleet_logins(servers)

    with fake_bot_api() as fake:
        for r in range(cold_rounds):
            out["bare_cold"].append(loop.run_until_complete(bare_cold(servers)))
            config = opsbot_config(fake, tmp / f"data{r}", endpoints=endpoints, targets=targets)
            with running_opsbot(fake, config, tmp / f"opsbot{r}") as bot:
                before = logins()
                answer = bot.ask("/health", done)
                _check_healthy(answer.message.text, n)
                out["cold"].append(answer.final)
                out["cold_first"].append(answer.first)
                out["cold_handshakes"].append(logins() - before)
                if r > 0:
                    continue
                conns = loop.run_until_complete(bare_open(servers))
                before = logins()
                for _ in range(rounds):
                    out["bare_warm"].append(loop.run_until_complete(bare_warm(conns)))
                    answer = bot.ask("/health", done)
                    _check_healthy(answer.message.text, n)
                    out["warm"].append(answer.final)
                    out["warm_first"].append(answer.first)
                out["warm_handshakes"].append(logins() - before)
                loop.run_until_complete(_close(conns))
                out["rss"].append(bot.memory()[0])
                out["warm_inside"] = verb_seconds(tmp / "data0", "health")[1:]
    loop.close()
    return out


def _check_healthy(text: str | None, n: int) -> None:
    if text is None or not text.startswith(f"Health: {n} targets, all healthy"):
        raise RuntimeError(f"/health did not come back all healthy:\n{(text or '')[:1000]}")


# --------------------------------------------------------------------------- parallel-ssh


def pssh_rounds(servers: list[SSHServer], rounds: int) -> tuple[float, list[float], str]:
    from importlib.metadata import version

    from pssh.clients import ParallelSSHClient
    from pssh.config import HostConfig

    def run(client: Any) -> float:
        started = time.perf_counter()
        output = client.run_command(PROGRAM)
        client.join(output)
        elapsed = time.perf_counter() - started
        codes = [o.exit_code for o in output]
        if codes != [0] * len(servers):
            raise RuntimeError(f"parallel-ssh: exit codes {codes}")
        return elapsed

    def client() -> Any:
        return ParallelSSHClient(
            [s.host for s in servers],
            host_config=[
                HostConfig(port=s.port, user=s.username, private_key=str(s.client_key))
                for s in servers
            ],
            pool_size=len(servers),
            num_retries=1,
        )

    first = client()
    cold = run(first)
    warm = [run(first) for _ in range(rounds)]
    del first
    return cold, warm, f"parallel-ssh {version('parallel-ssh')}"


# --------------------------------------------------------------------------- ansible


def ansible_rounds(
    servers: list[SSHServer], tmp: Path, rounds: int
) -> tuple[list[float], list[float], str]:
    bindir = Path(sys.executable).parent
    ansible = bindir / "ansible"
    if not ansible.exists():
        raise RuntimeError(
            "ansible-core is not installed: bash scripts/test.sh once (.venv holds the lock)"
        )
    work = tmp / "ansible"
    control = work / "cp"
    control.mkdir(parents=True)
    known = work / "known_hosts"
    known.write_text("".join(s.known_hosts.read_text() for s in servers))
    inventory = work / "hosts.ini"
    inventory.write_text(
        "[lab]\n"
        + "".join(
            f"h{i:03d} ansible_host={s.host} ansible_port={s.port} ansible_user={s.username} "
            f"ansible_ssh_private_key_file={s.client_key}\n"
            for i, s in enumerate(servers)
        )
    )
    base_env = {
        **os.environ,
        "ANSIBLE_HOME": str(work / "home"),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control),
        "ANSIBLE_SSH_CONTROL_PATH": f"{control}/%%C",
        "ANSIBLE_NOCOLOR": "1",
    }
    known_opt = f"-o UserKnownHostsFile={known}"
    cold_env = {**base_env, "ANSIBLE_SSH_ARGS": f"{known_opt} -o ControlMaster=no"}
    warm_env = {
        **base_env,
        "ANSIBLE_SSH_ARGS": f"{known_opt} -o ControlMaster=auto -o ControlPersist=300s",
    }
    argv = [str(ansible), "lab", "-i", str(inventory), "-m", "raw", "-a", PROGRAM,
            "-f", str(len(servers)), "-o"]  # fmt: skip

    def run(env: dict[str, str]) -> float:
        started = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - started
        ok = sum(1 for line in done.stdout.splitlines() if "| CHANGED |" in line)
        if done.returncode != 0 or ok != len(servers):
            raise RuntimeError(f"ansible failed ({ok} ok):\n{done.stdout[-2000:]}{done.stderr}")
        return elapsed

    version = subprocess.run([str(ansible), "--version"], capture_output=True, text=True,
                             check=True).stdout.splitlines()[0]  # fmt: skip
    try:
        cold = [run(cold_env) for _ in range(rounds)]
        run(warm_env)  # opens the ControlPersist masters
        warm = [run(warm_env) for _ in range(rounds)]
    finally:
        for socket in control.iterdir():  # end the masters this run started
            subprocess.run(["ssh", "-o", f"ControlPath={socket}", "-O", "exit", "x"],
                           capture_output=True, check=False)  # fmt: skip
    return cold, warm, version.replace("ansible [core ", "ansible-core ").rstrip("]")


# --------------------------------------------------------------------------- report


def report(args: argparse.Namespace, figures: dict[str, Any]) -> str:
    ops = figures["opsbot"]
    floor_cold, floor_warm = ops["bare_cold"], ops["bare_warm"]
    cold, warm = median(ops["cold"]), median(ops["warm"])
    fc, fw = median(floor_cold), median(floor_warm)
    command = (
        f"python bench/health_fanout.py --hosts {args.hosts} --rounds {args.rounds} "
        f"--cold-rounds {args.cold_rounds} --anchors {args.anchors}"
        + (f" --lab {args.lab}" if args.lab != "single" else "")
        + (f" --program {args.program}" if args.program != "/bin/true" else "")
    )
    lines = [
        f"## health_fanout · {stamp()} · {args.hosts} SSH hosts",
        "",
        f"{machine()}. `{command}`: medians, cold over {args.cold_rounds} and warm over "
        f"{args.rounds} rounds.",
        "",
        "| | cold | warm |",
        "|---|---|---|",
        f"| opsbot `/health` via the fake Bot API | {cold:.3f} s (**{ratio(cold, fc)}** floor) "
        f"| {warm:.3f} s (**{ratio(warm, fw)}** floor) |",
        f"| opsbot inside the verb (the rest is the chat round trip) | – "
        f"| {median(ops['warm_inside']):.3f} s |",
        f"| opsbot first feedback | {median(ops['cold_first']):.3f} s "
        f"| {median(ops['warm_first']):.3f} s |",
        f"| bare asyncssh (floor): connect+run / run on open connections | {fc:.3f} s "
        f"| {fw:.3f} s |",
    ]
    if "pssh" in figures:
        p_cold, p_warm, p_version = figures["pssh"]
        lines.append(
            f"| {p_version}: run_command + join (new client / same client) | {p_cold:.3f} s "
            f"({ratio(p_cold, fc)}) | {median(p_warm):.3f} s ({ratio(median(p_warm), fw)}) |"
        )
    if "ansible" in figures:
        a_cold, a_warm, a_version = figures["ansible"]
        lines.append(
            f"| {a_version} `raw`, -f {args.hosts} (ControlMaster=no / ControlPersist) "
            f"| {median(a_cold):.2f} s ({ratio(median(a_cold), fc)}) "
            f"| {median(a_warm):.2f} s ({ratio(median(a_warm), fw)}) |"
        )
    lines += [
        "",
        f"opsbot handshakes: {ops['cold_handshakes']} per cold round, "
        f"{sum(ops['warm_handshakes'])} over the warm rounds; RSS after them "
        f"{median(ops['rss']):.0f} MB. Round by round (opsbot / the floor beside it): cold "
        f"{_each(ops['cold'], floor_cold)}, warm {_each(ops['warm'], floor_warm)}; "
        f"load average {os.getloadavg()[0]:.1f} at the end (the machine is shared).",
    ]
    return "\n".join(lines)


def _each(values: list[float], floors: list[float]) -> str:
    return "/".join(ratio(v, f).rstrip("×") for v, f in zip(values, floors, strict=False)) + "×"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5, help="warm rounds")
    parser.add_argument("--cold-rounds", type=int, default=3)
    parser.add_argument("--ansible-rounds", type=int, default=2)
    parser.add_argument(
        "--anchors", choices=("all", "bare"), default="all",
        help="bare: only the asyncssh floor (no parallel-ssh, no ansible: the CI smoke)",
    )  # fmt: skip
    parser.add_argument(
        "--lab", choices=("single", "fleet"), default="single",
        help="single: an sshd per host; fleet: an sshd per 16 hosts (loopback addresses)",
    )  # fmt: skip
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--program", default=PROGRAM, help="what every contender runs")
    args = parser.parse_args(argv)
    globals()["PROGRAM"] = args.program
    if args.anchors == "all":  # before minutes of rounds, not after them
        missing = [m for m in ("pssh", "ansible") if importlib.util.find_spec(m) is None]
        if missing:
            parser.exit(2, f"anchors not installed ({', '.join(missing)}): bash scripts/"
                           "test.sh once (.venv holds the lock), or --anchors bare\n")  # fmt: skip

    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="opsbot-fanout-") as name:
        tmp = Path(name)
        lab = sshd_farm if args.lab == "single" else sshd_fleet
        print(f"starting {args.hosts} SSH hosts ({args.lab})…", file=sys.stderr)
        with lab(tmp, args.hosts) as servers:
            step: Callable[[str], None] = lambda what: print(what, file=sys.stderr)  # noqa: E731
            step("opsbot and bare asyncssh, round for round…")
            figures["opsbot"] = interleaved_rounds(servers, tmp, args.cold_rounds, args.rounds)
            if args.anchors == "all":
                step("parallel-ssh…")
                figures["pssh"] = pssh_rounds(servers, args.rounds)
                step("ansible…")
                figures["ansible"] = ansible_rounds(servers, tmp, args.ansible_rounds)
    section = report(args, figures)
    print(section)
    append_results(args.results, section)


if __name__ == "__main__":
    main()
