"""``opsbot discover`` where Docker cannot be read: a Docker URL nothing listens on, and an
engine socket the ssh user may not open. One line each, the draft of what could be read,
exit status 1, never a traceback (real sshd and dockerd of the lab)."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.lab.sshd import SSHServer
from tests.onboarding.test_discover_lab import discover, drafted, lab_endpoints, problems_of

CONTAINER = "opsbot-denied-probe"


@pytest.fixture(scope="module")
def root_only_socket() -> Iterator[Path]:
    """A listening unix socket only root may open (0600), in a folder anyone may enter: what
    the ssh user meets on a host whose docker.sock is not theirs."""
    folder = Path(tempfile.mkdtemp(prefix="opsbot-deny-"))  # short: unix socket path limit
    folder.chmod(0o755)
    path = folder / "docker.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(path))
        listener.listen(1)
        os.chmod(path, 0o600)
        yield path
    path.unlink(missing_ok=True)
    folder.rmdir()


@pytest.fixture(scope="module")
def config(
    docker_lab: DockerLab, sshd_server: SSHServer, root_only_socket: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Path]:  # fmt: skip
    path = tmp_path_factory.mktemp("denied") / "opsbot.yaml"
    denied = {"type": "docker", "via_ssh": "lab", "remote_socket": str(root_only_socket)}
    endpoints = {**lab_endpoints(sshd_server, docker_lab), "denied-docker": denied}
    path.write_text(json.dumps({"endpoints": endpoints}))
    with closing(docker_lab.client()) as client:
        container = client.containers.run(
            docker_lab.image_v1, ["sleep", "600"], name=CONTAINER, detach=True, init=True
        )
        try:
            yield path
        finally:
            container.remove(force=True)


def test_a_docker_url_nothing_listens_on_is_one_line_beside_a_partial_draft(
    config: Path, tmp_path: Path
) -> None:
    closed = free_port()
    done = discover(f"tcp://127.0.0.1:{closed}", "lab-docker", "--config", str(config),
                    "--timeout", "15")  # fmt: skip
    problems = problems_of(done)
    assert len(problems) == 1, done.stderr
    assert problems == [
        f"problem: tcp://127.0.0.1:{closed}: docker: tcp://127.0.0.1:{closed}: "
        "unreachable: connection refused"
    ]
    draft = drafted(done.stdout, tmp_path)  # lab-docker's containers are still drafted
    assert draft["targets"][CONTAINER]["endpoint"] == "lab-docker"


def test_a_socket_the_ssh_user_may_not_open_is_one_line_beside_a_partial_draft(
    config: Path, root_only_socket: Path, tmp_path: Path
) -> None:
    done = discover("denied-docker", "lab-docker", "--config", str(config), "--timeout", "15")
    problems = problems_of(done)
    assert len(problems) == 1, done.stderr
    assert problems == [
        f"problem: denied-docker: docker: permission denied on {root_only_socket} for the ssh "
        "user 'opsbot-lab' (add it to the socket's group, e.g. docker)"
    ]
    assert "❌ denied-docker: nothing found" in done.stderr.splitlines()
    draft = drafted(done.stdout, tmp_path)
    assert draft["targets"][CONTAINER]["endpoint"] == "lab-docker"
    assert not any(t["endpoint"] == "denied-docker" for t in draft["targets"].values())
