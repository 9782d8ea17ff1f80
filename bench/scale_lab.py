"""What the scale benches share: many sshd ports, `opsbot run` as a child, /proc figures.

- ``start_sshds``: N SSH "hosts" on loopback, at most 16 ports per real sshd process, one
  host key, one known_hosts file listing every port.
- ``OpsbotProcess``: ``python -m opsbot run`` against the fake Bot API, its CPU seconds and
  RSS read from /proc (the bench's own servers never count).
- ``append_result``: one row under the bench's own ``## `` section of bench/RESULTS.md.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakebotapi import Chat, FakeBotAPI  # noqa: E402
from tests.lab import sshd as lab_sshd  # noqa: E402
from tests.lab.ports import free_port, start_process, stop_process, wait_until  # noqa: E402

RESULTS = ROOT / "bench" / "RESULTS.md"
TOKEN = "7000000001:AAopsbotBENCHtokenXXXXXXXXXXXXXXXXXX"
USERNAME = "opsbot_bench_bot"
ADMIN_ID = 1001
OPS = Chat(-1001000000100, "supergroup", "ops")
INCIDENTS = Chat(-1001000000200, "supergroup", "incidents")
PORTS_PER_SSHD = 16
WEB_TOKEN = "bench-web-token"


@dataclass(frozen=True)
class SSHHosts:
    ports: list[int]
    username: str
    client_key: Path
    known_hosts: Path
    logs: list[Path]

    def endpoint(self, port: int) -> dict[str, Any]:
        return {
            "type": "ssh", "host": "127.0.0.1", "port": port, "user": self.username,
            "key_files": [str(self.client_key)], "known_hosts": str(self.known_hosts),
        }  # fmt: skip


@contextlib.contextmanager
def start_sshds(tmp: Path, hosts: int) -> Iterator[SSHHosts]:
    """``hosts`` SSH ports on 127.0.0.1 served by ceil(hosts / 16) sshd processes."""
    sshd = lab_sshd.require_binary("sshd", "openssh-server")
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / "keys.log"
    lab_sshd.ensure_lab_user(log)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    host_key = tmp / "ssh_host_ed25519_key"
    host_pub = lab_sshd._keygen(host_key, log)
    client_key = tmp / "client_key"
    client_pub = lab_sshd._keygen(client_key, log)
    ports = [free_port() for _ in range(hosts)]
    known_hosts = tmp / "known_hosts"
    known_hosts.write_text("".join(f"[127.0.0.1]:{p} {host_pub}\n" for p in ports))
    # sshd reads authorized_keys as the lab user: a world-traversable dir of its own.
    shared = Path(tempfile.mkdtemp(prefix="opsbot-ssh-", dir="/tmp"))
    shared.chmod(0o755)
    authorized = shared / "authorized_keys"
    authorized.write_text(client_pub + "\n")
    authorized.chmod(0o644)
    procs: list[subprocess.Popen[bytes]] = []
    logs: list[Path] = []
    try:
        for index in range(0, hosts, PORTS_PER_SSHD):
            mine = ports[index : index + PORTS_PER_SSHD]
            config = tmp / f"sshd_config.{index}"
            config.write_text("\n".join([
                *(f"Port {p}" for p in mine),
                "ListenAddress 127.0.0.1", f"HostKey {host_key}",
                f"PidFile {tmp / f'sshd.{index}.pid'}", f"AuthorizedKeysFile {authorized}",
                f"AllowUsers {lab_sshd.LAB_USER}", "UsePAM no", "StrictModes no",
                "PasswordAuthentication no", "KbdInteractiveAuthentication no",
                "MaxSessions 200", "MaxStartups 400:30:800", "PrintMotd no",
                "X11Forwarding no", "LogLevel ERROR", "",
            ]))  # fmt: skip
            logs.append(tmp / f"sshd.{index}.log")
            argv = [sshd, "-D", "-e", "-f", str(config), "-E", str(logs[-1])]
            procs.append(start_process(argv, logs[-1]))
        for index, port in enumerate(ports):
            proc = procs[index // PORTS_PER_SSHD]
            wait_until(lambda port=port: lab_sshd._banner(port), what="sshd", log=log, proc=proc)
        yield SSHHosts(ports, lab_sshd.LAB_USER, client_key, known_hosts, logs)
    finally:
        for proc in procs:
            stop_process(proc)
        shutil.rmtree(shared, ignore_errors=True)


def base_config(fake: FakeBotAPI, data_dir: Path, **extra: Any) -> dict[str, Any]:
    """An opsbot config on the fake Bot API: one admin, the ops and incident chats."""
    return {
        "telegram": {
            "token": TOKEN, "api_url": fake.url, "ops_chat_id": OPS.id,
            "incident_chat_id": INCIDENTS.id, "poll_timeout": 10,
        },
        "people": [{"id": ADMIN_ID, "name": "alice", "role": "admin"}],
        "data_dir": str(data_dir),
        "log_level": "WARNING",
        **extra,
    }  # fmt: skip


def start_fake() -> FakeBotAPI:
    fake = FakeBotAPI(group_per_minute=None, global_per_second=None).start()
    fake.add_bot(TOKEN, USERNAME)
    fake.add_chat(OPS)
    fake.add_chat(INCIDENTS)
    return fake


class OpsbotProcess:
    """``python -m opsbot run`` on a written config; CPU and RSS from /proc."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.config_path = folder / "opsbot.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = folder / "opsbot.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpsbotProcess:
        argv = [sys.executable, "-m", "opsbot", "run", "--config", str(self.config_path)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=20)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"opsbot exited with {self.proc.returncode}:\n{tail}")

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def wait_for_startup(fake: FakeBotAPI, opsbot: OpsbotProcess, timeout: float = 60) -> float:
    """Seconds until opsbot polls the fake Bot API (it is up)."""
    started = time.monotonic()
    while not fake.calls_to("getUpdates"):
        opsbot.alive()
        if time.monotonic() - started > timeout:
            raise RuntimeError("opsbot did not start polling")
        time.sleep(0.05)
    return time.monotonic() - started


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def append_result(section: str, header: str, row: str) -> None:
    """Add ``row`` under ``## section`` in RESULTS.md (created with ``header`` if missing)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    title = f"## {section}"
    if title not in text:
        text = text.rstrip("\n") + f"\n\n{title}\n\n{header}\n"
        text += "|" + "---|" * (header.count("|") - 1) + "\n"
    lines = text.split("\n")
    start = lines.index(title)
    end = start + 1
    while end < len(lines) and not lines[end].startswith("## "):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    lines.insert(end, row)
    RESULTS.write_text("\n".join(lines).rstrip("\n") + "\n")
