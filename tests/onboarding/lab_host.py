"""The lab host to discover: what a small team's box runs, set up for real on this machine.

- on the lab dockerd: a compose project of two services through Debian's ``docker-compose``
  (``web`` publishes busybox httpd, ``worker`` sleeps), and a plain container with a
  HEALTHCHECK publishing a port that accepts TCP and never speaks HTTP;
- a pm2 daemon of the lab user with two node processes (``api`` answers /health, ``jobs``
  listens on nothing);
- unit files in /etc/systemd/system: two ``opsbot-lab-*.service`` files, a template and a
  symlink to a vendor unit (the last two are not drafted); no systemd runs here;
- a ``kubectl`` stand-in first on the lab user's PATH answering ``get deployments``.

Every process, container and value set up carries a secret in its environment (``CANARY``):
no discovery output may contain it.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port, require_binary, wait_until
from tests.lab.sshd import SSHServer

CANARY = "canary-s3cr3t-4d1f9e"  # never in a discovery's output
UNIT_DIR = Path("/etc/systemd/system")
UNITS = ("opsbot-lab-quiz.service", "opsbot-lab-report.service")
NOT_DRAFTED = ("opsbot-lab-worker@.service", "opsbot-lab-vendor.service")

KUBECTL = r'''#!/usr/bin/python3
"""kubectl get deployments -A -o json, from two namespaces (no cluster runs here)."""
import json, sys
if sys.argv[1:4] != ["get", "deployments", "--all-namespaces"]:
    sys.exit("error: the stand-in only knows get deployments --all-namespaces")
def deployment(name, ns, replicas, ready):
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": name, "image": f"registry.local/{name}:1",
                 "env": [{"name": "TOKEN", "value": "CANARY"}]}]}}},
            "status": {"replicas": replicas, "readyReplicas": ready}}
print(json.dumps({"kind": "List", "items": [
    deployment("quizbot", "bots", 2, 2), deployment("site", "web", 1, 0)]}))
'''.replace("CANARY", CANARY)

NODE_API = """
const http = require("http");
http.createServer((req, res) => {
  res.writeHead(req.url === "/health" ? 200 : 404); res.end("ok");
}).listen(Number(process.env.PORT), "127.0.0.1");
"""
NODE_JOBS = "setInterval(() => {}, 1000);\n"


@dataclass(frozen=True)
class LabHost:
    compose_file: Path
    web_port: int
    plain_port: int
    api_port: int


def _compose_yaml(image: str, web_port: int) -> str:
    return json.dumps({  # JSON is YAML
        "version": "2.4",
        "services": {
            "web": {
                "image": image, "command": ["httpd", "-f", "-p", "8080", "-h", "/www"],
                "ports": [f"127.0.0.1:{web_port}:8080"], "environment": {"API_TOKEN": CANARY},
            },
            "worker": {
                "image": image, "command": ["sleep", "3600"], "init": True,
                "environment": {"DB_PASSWORD": CANARY},
            },
        },
    })  # fmt: skip


def _as_lab_user(sshd: SSHServer, argv: list[str], env: dict[str, str]) -> None:
    lab = pwd.getpwnam(sshd.username)
    subprocess.run(
        ["runuser", "-u", sshd.username, "--", "env", f"HOME={lab.pw_dir}",
         f"PATH={sshd.bin_dir}:/usr/local/bin:/usr/bin:/bin",
         *(f"{k}={v}" for k, v in env.items()), *argv],
        check=True, capture_output=True, cwd=sshd.workdir, timeout=60,
    )  # fmt: skip


@contextmanager
def lab_host(docker_lab: DockerLab, sshd: SSHServer, tmp: Path) -> Iterator[LabHost]:
    compose = require_binary("docker-compose", "docker-compose")
    pm2 = require_binary("pm2", "npm (then: npm install -g pm2)")
    web_port, plain_port, api_port = free_port(), free_port(), free_port()
    project = tmp / "quiz"
    project.mkdir()
    compose_file = project / "docker-compose.yml"
    compose_file.write_text(_compose_yaml(docker_lab.image_v1, web_port))
    docker_env = {**os.environ, "DOCKER_HOST": docker_lab.base_url}
    up = [compose, "-f", str(compose_file), "-p", "quiz"]
    apps = sshd.workdir / "apps"
    apps.mkdir(exist_ok=True)
    (apps / "api.js").write_text(NODE_API)
    (apps / "jobs.js").write_text(NODE_JOBS)
    lab = pwd.getpwnam(sshd.username)
    os.chown(apps, lab.pw_uid, lab.pw_gid)
    kubectl = sshd.bin_dir / "kubectl"
    try:
        subprocess.run([*up, "up", "-d"], env=docker_env, check=True, capture_output=True,
                       timeout=120)  # fmt: skip
        with closing(docker_lab.client()) as client:
            # The lab's dockerd runs --bridge=none: a port is published on a network of its own.
            client.networks.create("plain-net", driver="bridge")
            client.containers.run(
                docker_lab.image_v1, ["sh", "-c", "while true; do nc -l -p 9000 </dev/null; done"],
                name="plain", detach=True, init=True, network="plain-net",
                environment={"SECRET_KEY": CANARY},
                ports={"9000/tcp": ("127.0.0.1", plain_port)},
                healthcheck={"test": ["CMD", "true"], "interval": 1_000_000_000},
            )  # fmt: skip
        _as_lab_user(sshd, [pm2, "start", str(apps / "api.js"), "--name", "api"],
                     {"PORT": str(api_port), "BOT_TOKEN": CANARY})  # fmt: skip
        _as_lab_user(sshd, [pm2, "start", str(apps / "jobs.js"), "--name", "jobs"],
                     {"BOT_TOKEN": CANARY})  # fmt: skip
        for unit in UNITS:
            (UNIT_DIR / unit).write_text(
                f"[Service]\nEnvironment=TOKEN={CANARY}\nExecStart=/bin/true\n"
            )
        (UNIT_DIR / NOT_DRAFTED[0]).write_text("[Service]\nExecStart=/bin/true %i\n")
        (UNIT_DIR / NOT_DRAFTED[1]).symlink_to("/lib/systemd/system/ssh.service")
        kubectl.write_text(KUBECTL)
        kubectl.chmod(0o755)
        pm2_log = Path(lab.pw_dir) / ".pm2" / "pm2.log"
        wait_until(lambda: _answers(api_port), what="the pm2 api process", log=pm2_log)
        yield LabHost(compose_file, web_port, plain_port, api_port)
    finally:
        kubectl.unlink(missing_ok=True)
        for unit in (*UNITS, *NOT_DRAFTED):
            (UNIT_DIR / unit).unlink(missing_ok=True)
        try:
            _as_lab_user(sshd, [pm2, "kill"], {})
        finally:
            subprocess.run([*up, "down"], env=docker_env, capture_output=True, timeout=120)
            with closing(docker_lab.client()) as client:
                for container in client.containers.list(all=True, filters={"name": "plain"}):
                    container.remove(force=True)
                for network in client.networks.list(names=["plain-net"]):
                    network.remove()


def _answers(port: int) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False
