"""A real OpenSSH sshd on a loopback port with its own config, keys and test user.

sshd reads AuthorizedKeysFile as the target user, and pytest's tmp dirs are 0700 root, so
the files the lab user must reach (authorized_keys, workdir, canary_dir) live in a separate
world-traversable dir /tmp/opsbot-ssh-XXXX, removed on teardown. Keys, config, pid file and
log stay in `tmp_path`.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.ports import (
    LabError,
    free_port,
    group_exists,
    require_binary,
    run_logged,
    start_process,
    stop_process,
    wait_until,
)

LAB_USER = "opsbot-lab"


@dataclass(frozen=True)
class SSHServer:
    host: str
    port: int
    username: str
    client_key: Path
    known_hosts: Path
    known_hosts_wrong: Path
    workdir: Path
    canary_dir: Path
    log_path: Path
    bin_dir: Path  # first on the lab user's PATH (sshd SetEnv): tests put stand-in tools here


def count_accepted_connections(server: SSHServer) -> int:
    """How many SSH logins sshd accepted so far (one per handshake, not per command)."""
    text = server.log_path.read_text(errors="replace")
    return sum(1 for line in text.splitlines() if "Accepted publickey" in line)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def ensure_lab_user(log: Path) -> None:
    """Create the unprivileged test user (idempotent, tolerates a concurrent session)."""
    if os.geteuid() != 0:
        raise LabError("the sshd lab must run as root (it creates the user opsbot-lab)")
    useradd = require_binary("useradd", "passwd")
    usermod = require_binary("usermod", "passwd")
    for attempt in range(20):
        if not _user_exists(LAB_USER):
            subprocess.run(
                [useradd, "-m", "-s", "/bin/sh", LAB_USER],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )  # fmt: skip
        argv = [usermod, "-s", "/bin/sh", "-p", "*", LAB_USER]
        if group_exists("docker"):
            argv[1:1] = ["-aG", "docker"]
        with log.open("ab") as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode == 0:
            return
        time.sleep(0.1 * (attempt + 1))  # /etc/passwd locked by a parallel session
    run_logged(argv, log, f"usermod {LAB_USER}")


def _keygen(path: Path, log: Path) -> str:
    """Generate an ed25519 key pair at `path`; return the public key without comment."""
    ssh_keygen = require_binary("ssh-keygen", "openssh-client")
    run_logged([ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "", "-f", str(path)], log,
               "ssh-keygen")  # fmt: skip
    kind, blob = path.with_suffix(".pub").read_text().split()[:2]
    return f"{kind} {blob}"


def _banner(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        return sock.recv(256).startswith(b"SSH-2.0-")


def _free_port_on(addresses: Sequence[str]) -> int:
    """A port that was free a moment ago on every one of ``addresses``."""
    for _ in range(50):
        port = free_port()
        if all(_bindable(a, port) for a in addresses):
            return port
    raise LabError(f"no port free on all of {', '.join(addresses)}")


def _bindable(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((address, port))
        except OSError:
            return False
        return True


def _listening(log: Path, address: str, port: int) -> bool:
    return f"Server listening on {address} port {port}." in log.read_text(errors="replace")


@contextmanager
def start_sshd(
    tmp_path: Path, *, address: str = "127.0.0.1", netns: str | None = None
) -> Iterator[SSHServer]:
    """An sshd on ``address`` (inside the network namespace ``netns`` when given)."""
    with _sshd(tmp_path, [address], netns=netns) as servers:
        yield servers[0]


#: Addresses one sshd of a fleet listens on (ListenAddress lines): a host each.
FLEET_ADDRESSES = 16


def fleet_addresses(count: int) -> list[str]:
    """127.0.0.2, 127.0.0.3, …: the loopback addresses of ``count`` hosts of one sshd."""
    if not 1 <= count <= FLEET_ADDRESSES:
        raise ValueError(f"an sshd of the fleet listens on 1 to {FLEET_ADDRESSES} addresses")
    return [f"127.0.0.{2 + i}" for i in range(count)]


@contextmanager
def start_sshd_fleet(tmp_path: Path, hosts: int = FLEET_ADDRESSES) -> Iterator[list[SSHServer]]:
    """One sshd listening on ``hosts`` loopback addresses (one port): an SSHServer each.

    The hosts of one sshd share its host key (each has its own known_hosts line), client key,
    log and directories; ``count_fleet_logins`` counts their logins once. A thousand hosts
    take ~63 processes instead of a thousand.
    """
    addresses = fleet_addresses(hosts)
    for attempt in range(3):  # a port free a moment ago may be taken on some address by then
        with ExitStack() as stack:
            try:
                where = tmp_path if attempt == 0 else tmp_path / f"again{attempt}"
                servers = stack.enter_context(_sshd(where, addresses))
            except LabError:
                if attempt == 2:
                    raise
                continue
            yield servers
            return


def count_fleet_logins(servers: Sequence[SSHServer]) -> int:
    """SSH logins over hosts that may share an sshd (and its log): each log counted once."""
    logs = {s.log_path: s for s in servers}
    return sum(count_accepted_connections(s) for s in logs.values())


@contextmanager
def _sshd(
    tmp_path: Path, addresses: Sequence[str], *, netns: str | None = None
) -> Iterator[list[SSHServer]]:
    sshd = require_binary("sshd", "openssh-server")
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "sshd.log"
    ensure_lab_user(log)
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    port = free_port() if netns is not None else _free_port_on(addresses)
    host_key = tmp_path / "ssh_host_ed25519_key"
    host_pub = _keygen(host_key, log)
    wrong_pub = _keygen(tmp_path / "wrong_host_key", log)
    client_key = tmp_path / "client_key"
    client_pub = _keygen(client_key, log)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("".join(f"[{a}]:{port} {host_pub}\n" for a in addresses))
    known_hosts_wrong = tmp_path / "known_hosts_wrong"
    known_hosts_wrong.write_text("".join(f"[{a}]:{port} {wrong_pub}\n" for a in addresses))

    shared = Path(tempfile.mkdtemp(prefix="opsbot-ssh-", dir="/tmp"))
    try:
        shared.chmod(0o755)
        authorized = shared / "authorized_keys"
        authorized.write_text(client_pub + "\n")
        authorized.chmod(0o644)
        lab = pwd.getpwnam(LAB_USER)
        workdir = shared / "home-work"
        canary_dir = workdir / "canary"
        bin_dir = shared / "bin"
        for path in (workdir, canary_dir, bin_dir):
            path.mkdir()
            path.chmod(0o755)
            os.chown(path, lab.pw_uid, lab.pw_gid)

        config = tmp_path / "sshd_config"
        config.write_text(
            "\n".join([
                f"Port {port}",
                *(f"ListenAddress {a}" for a in addresses),
                f"HostKey {host_key}",
                f"PidFile {tmp_path / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                f"AllowUsers {LAB_USER}",
                "PermitRootLogin no",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PubkeyAuthentication yes",
                "PermitUserEnvironment no",
                f"SetEnv PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin",
                "MaxSessions 200",
                "MaxStartups 200:30:400",
                "PrintMotd no",
                "X11Forwarding no",
                "Subsystem sftp internal-sftp",
                "LogLevel INFO",
                "",
            ])
        )  # fmt: skip
        argv = [sshd, "-D", "-e", "-f", str(config), "-E", str(log)]
        if netns is not None:
            argv = [require_binary("ip", "iproute2"), "netns", "exec", netns, *argv]
        proc = start_process(argv, log)
        try:
            if netns is None and len(addresses) == 1:
                wait_until(lambda: _banner(port), what="sshd", log=log, proc=proc)
            else:  # maybe unreachable from here: its own log says when it listens
                wait_until(lambda: all(_listening(log, a, port) for a in addresses),
                           what="sshd", log=log, proc=proc)  # fmt: skip
            yield [SSHServer(
                host=address,
                port=port,
                username=LAB_USER,
                client_key=client_key,
                known_hosts=known_hosts,
                known_hosts_wrong=known_hosts_wrong,
                workdir=workdir,
                canary_dir=canary_dir,
                log_path=log,
                bin_dir=bin_dir,
            ) for address in addresses]  # fmt: skip
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(shared, ignore_errors=True)
