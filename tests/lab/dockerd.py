"""A real dockerd on a private unix socket, with two busybox images made without a registry.

The daemon's dirs live in a short /tmp/opsbot-dk-XXXX path (unix socket path limit); that dir
is 0755 so the ssh lab user (group docker) can reach the socket. The same daemon also listens
on ``tcp://127.0.0.1:PORT`` with ``--tlsverify`` and a PKI made for the session
(:mod:`tests.lab.tls`): ``tls_url`` plus ``pki.client`` reach it, ``pki.rogue`` is refused.
The docker SDK blocks: use it from sync code or a thread, never directly on the event loop.
"""

from __future__ import annotations

import io
import shutil
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.tls

from tests.lab.ports import (
    LabError,
    free_port,
    group_exists,
    log_tail,
    require_binary,
    start_process,
    stop_process,
    wait_until,
)
from tests.lab.tls import LabPKI, make_pki

IMAGE_REPO = "opsbot-lab/busybox"


@dataclass(frozen=True)
class DockerLab:
    socket_path: Path
    base_url: str
    image_v1: str
    image_v2: str
    tls_url: str  # tcp://127.0.0.1:PORT, --tlsverify
    pki: LabPKI
    api_version: str

    def client(self) -> docker.DockerClient:
        """A new blocking SDK client for this daemon; the caller closes it."""
        return docker.DockerClient(base_url=self.base_url, timeout=60)

    def tls_client(self) -> docker.DockerClient:
        """A blocking SDK client over TCP+TLS with the lab's client certificate.

        The API version is given (no request in the constructor) so that ``trust_env`` can be
        turned off first: requests would let REQUESTS_CA_BUNDLE override the lab's CA.
        """
        tls = docker.tls.TLSConfig(
            client_cert=(str(self.pki.client.client_cert), str(self.pki.client.client_key)),
            ca_cert=str(self.pki.ca_cert),
            verify=True,
        )
        client = docker.DockerClient(
            base_url=self.tls_url, tls=tls, timeout=60, version=self.api_version
        )
        client.api.trust_env = False
        return client


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status == 200)


def run_http_container(lab: DockerLab, name: str, port: int, image: str | None = None) -> str:
    """Start busybox httpd serving /www on 127.0.0.1:`port` (host network); return its id."""
    url = f"http://127.0.0.1:{port}/health"
    with closing(lab.client()) as client:
        container = client.containers.run(
            image or lab.image_v1,
            ["httpd", "-f", "-p", f"127.0.0.1:{port}", "-h", "/www"],
            name=name,
            detach=True,
            network_mode="host",
            init=True,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if _http_ok(url):
                    return str(container.id)
            except OSError:
                pass
            container.reload()
            if container.status in ("exited", "dead") or time.monotonic() > deadline:
                raise LabError(
                    f"container {name} ({container.status}) does not answer {url}\n"
                    f"--- container logs ---\n{container.logs().decode(errors='replace')}"
                )
            time.sleep(0.05)


@contextmanager
def sleeping_container(lab: DockerLab, prefix: str) -> Iterator[Any]:
    """A container of ``lab.image_v1`` that only sleeps, with no network, named ``prefix-…``
    (a place to exec in); removed afterwards."""
    with closing(lab.client()) as client:
        container = client.containers.run(
            lab.image_v1, ["sleep", "3600"], name=f"{prefix}-{uuid.uuid4().hex[:8]}",
            detach=True, init=True, network_mode="none",
        )  # fmt: skip
        try:
            yield container
        finally:
            container.remove(force=True)


def _raw_ping(sock: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(2)
        conn.connect(str(sock))
        conn.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        status_line = conn.recv(1024).split(b"\r\n", 1)[0]
        return status_line.split(b" ")[1:2] == [b"200"]


def _has_interpreter(path: Path) -> bool:
    """True if the ELF64 file at `path` has a PT_INTERP header (is dynamically linked)."""
    with path.open("rb") as f:
        header = f.read(64)
        phoff = int.from_bytes(header[0x20:0x28], "little")
        phentsize = int.from_bytes(header[0x36:0x38], "little")
        phnum = int.from_bytes(header[0x38:0x3A], "little")
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    pt_interp = 3
    return any(
        int.from_bytes(table[i : i + 4], "little") == pt_interp
        for i in range(0, len(table), phentsize)
    )


def _rootfs_tar(root: Path, version: str) -> bytes:
    """A tarball of a minimal busybox rootfs with /VERSION = `version`."""
    busybox = require_binary("busybox", "busybox-static")
    if _has_interpreter(Path(busybox)):
        raise LabError(
            f"{busybox} is dynamically linked and cannot run in a bare image: install the "
            "Debian package 'busybox-static' (apt-get install -y busybox-static)"
        )
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    shutil.copy2(busybox, bin_dir / "busybox")
    listing = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True)
    for applet in listing.stdout.split():
        if applet != "busybox":
            (bin_dir / applet).symlink_to("busybox")
    (root / "tmp").mkdir(mode=0o1777)
    (root / "tmp").chmod(0o1777)
    (root / "etc").mkdir()
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    (root / "root").mkdir(mode=0o700)
    (root / "www").mkdir()
    (root / "www" / "health").write_text("ok")
    (root / "VERSION").write_text(version + "\n")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(root.iterdir()):
            tar.add(child, arcname=child.name)
    return buf.getvalue()


def _remove_all_containers(base_url: str) -> None:
    with closing(docker.DockerClient(base_url=base_url, timeout=30)) as client:
        for container in client.containers.list(all=True):
            container.remove(force=True)


@contextmanager
def start_dockerd(tmp_path: Path) -> Iterator[DockerLab]:
    dockerd = require_binary("dockerd", "docker.io")
    require_binary("docker-init", "docker.io")
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="opsbot-dk-", dir="/tmp"))
    root.chmod(0o755)
    sock = root / "docker.sock"
    base_url = f"unix://{sock}"
    log = tmp_path / "dockerd.log"
    (root / "daemon.json").write_text("{}\n")
    pki = make_pki(root / "tls")
    tls_url = f"tcp://127.0.0.1:{free_port()}"
    argv = [dockerd, "--host", base_url, "--host", tls_url, "--tlsverify",
            "--tlscacert", str(pki.ca_cert), "--tlscert", str(pki.server_cert),
            "--tlskey", str(pki.server_key), "--config-file", str(root / "daemon.json"),
            "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
            "--pidfile", str(root / "pid"), "--bridge=none", "--iptables=false",
            "--ip-masq=false"]  # fmt: skip
    if group_exists("docker"):
        argv += ["--group", "docker"]
    proc = start_process(argv, log)
    try:
        # Raw /_ping first: the SDK leaks its unix socket when the daemon is not up yet.
        wait_until(lambda: _raw_ping(sock), what="dockerd", log=log, proc=proc, timeout=60)
        with closing(docker.DockerClient(base_url=base_url, timeout=30)) as client:
            if not client.ping():
                raise LabError(f"dockerd does not answer the SDK ping\n{log_tail(log)}")
            api_version = str(client.api.api_version)
        lab = DockerLab(
            socket_path=sock,
            base_url=base_url,
            image_v1=f"{IMAGE_REPO}:1",
            image_v2=f"{IMAGE_REPO}:2",
            tls_url=tls_url,
            pki=pki,
            api_version=api_version,
        )
        with closing(lab.tls_client()) as client:
            if not client.ping():
                raise LabError(f"dockerd does not answer over TLS on {tls_url}\n{log_tail(log)}")
        with closing(lab.client()) as client:
            for version in ("1", "2"):
                data = _rootfs_tar(tmp_path / f"rootfs-v{version}", version)
                client.api.import_image_from_data(
                    data, repository=IMAGE_REPO, tag=version, changes=['CMD ["sh"]']
                )
                try:
                    client.images.get(f"{IMAGE_REPO}:{version}")
                except docker.errors.ImageNotFound as exc:
                    raise LabError(
                        f"docker import of {IMAGE_REPO}:{version} failed\n{log_tail(log)}"
                    ) from exc
        yield lab
    finally:
        try:
            if proc.poll() is None:
                _remove_all_containers(base_url)
        finally:
            stop_process(proc, timeout=30)
            _unmount_below(root)
            shutil.rmtree(root, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """Lazily unmount anything dockerd left mounted below `root` (after a crash)."""
    prefix = str(root) + "/"
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
