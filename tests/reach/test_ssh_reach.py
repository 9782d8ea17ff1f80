"""Reaching SSH hosts through a bastion (``via:``) and through ~/.ssh/config (``ssh_config``).

Two real sshd in their own network namespaces (tests/lab/netns.py): the bastion is reachable
from here; the target only from the bastion's namespace, so a direct connection fails while
the bastion's pooled connection carries every host behind it.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from opsbot.config import Settings
from opsbot.errors import ExecutorError, HostKeyError
from opsbot.services import Services
from tests.factories import ssh_endpoint
from tests.lab.netns import BastionNet, bastion_network
from tests.lab.sshd import SSHServer, count_accepted_connections, start_sshd


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BastionNet]:
    with bastion_network(tmp_path_factory.mktemp("netns") / "ip.log") as made:
        yield made


@pytest.fixture(scope="module")
def bastion(tmp_path_factory: pytest.TempPathFactory, net: BastionNet) -> Iterator[SSHServer]:
    tmp = tmp_path_factory.mktemp("bastion")
    with start_sshd(tmp, address=net.bastion_address, netns=net.bastion_ns) as server:
        yield server


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory, net: BastionNet) -> Iterator[SSHServer]:
    tmp = tmp_path_factory.mktemp("inner")
    with start_sshd(tmp, address=net.target_address, netns=net.target_ns) as server:
        yield server


def _settings(tmp: Path, endpoints: dict[str, Any]) -> Settings:
    return Settings(
        data_dir=tmp / "data", alerts={"monitor": {"enabled": False}}, endpoints=endpoints
    )


@pytest_asyncio.fixture
async def services(
    tmp_path: Path, bastion: SSHServer, inner: SSHServer
) -> AsyncIterator[Services]:
    built = Services.build(
        _settings(
            tmp_path,
            {
                "bastion": ssh_endpoint(bastion, connect_timeout=5),
                "direct": ssh_endpoint(inner, connect_timeout=2),
                "inner-a": ssh_endpoint(inner, via="bastion"),
                "inner-b": ssh_endpoint(inner, via="bastion"),
                "inner-wrong-key": ssh_endpoint(
                    inner, via="bastion", known_hosts=str(inner.known_hosts_wrong)
                ),
                "bastion-wrong-key": ssh_endpoint(
                    bastion, known_hosts=str(bastion.known_hosts_wrong)
                ),
                "inner-via-wrong": ssh_endpoint(inner, via="bastion-wrong-key"),
            },
        )
    )
    try:
        yield built
    finally:
        await built.close()


async def _ssh_connection(services: Services, endpoint: str) -> str:
    """$SSH_CONNECTION on the far side: "client_ip client_port server_ip server_port"."""
    result = await services.executor(endpoint).run(["printenv", "SSH_CONNECTION"], timeout=10)
    assert result.exit_status == 0, result
    return result.stdout.strip()


async def test_the_target_is_unreachable_directly(
    services: Services, net: BastionNet, inner: SSHServer
) -> None:
    with (
        pytest.raises(OSError, match="No route to host"),
        closing(socket.create_connection((inner.host, inner.port), timeout=2)),
    ):
        pass
    with pytest.raises(ExecutorError, match=f"{net.target_address}:{inner.port} unreachable"):
        await services.executor("direct").run(["true"], timeout=5)


async def test_via_runs_on_the_target_over_one_pooled_bastion_connection(
    services: Services, net: BastionNet, bastion: SSHServer, inner: SSHServer
) -> None:
    bastion_logins = count_accepted_connections(bastion)
    inner_logins = count_accepted_connections(inner)
    for _ in range(3):
        for endpoint in ("inner-a", "inner-b"):
            client, _, server, port = (await _ssh_connection(services, endpoint)).split()
            # The target saw the bastion's address on the far link, not ours.
            assert (server, int(port)) == (net.target_address, inner.port)
            assert client.startswith(net.target_address.rsplit(".", 1)[0] + ".")
            assert client != net.target_address
    # One bastion login carried both endpoints (each its own pooled connection), every run.
    assert count_accepted_connections(bastion) - bastion_logins == 1
    assert count_accepted_connections(inner) - inner_logins == 2
    assert services.ssh.connections_opened == 3


async def test_host_keys_are_verified_on_both_hops(services: Services) -> None:
    with pytest.raises(HostKeyError, match="inner-wrong-key"):
        await services.executor("inner-wrong-key").run(["true"], timeout=5)
    with pytest.raises(HostKeyError, match="bastion-wrong-key"):
        await services.executor("inner-via-wrong").run(["true"], timeout=5)


def test_via_must_name_an_ssh_endpoint_without_a_loop(tmp_path: Path) -> None:
    base = {"type": "ssh", "host": "h", "user": "u"}
    with pytest.raises(ValueError, match=r"endpoints\.a\.via: 'nowhere' is not an ssh endpoint"):
        _settings(tmp_path, {"a": {**base, "via": "nowhere"}})
    with pytest.raises(ValueError, match="a loop"):
        _settings(tmp_path, {"a": {**base, "via": "b"}, "b": {**base, "via": "a"}})


def _write_ssh_config(path: Path, bastion: SSHServer, inner: SSHServer) -> Path:
    known = path.parent / "known_hosts_both"
    known.write_text(bastion.known_hosts.read_text() + inner.known_hosts.read_text())
    path.write_text(
        f"Host jumper\n  HostName {bastion.host}\n  Port {bastion.port}\n"
        f"  User {bastion.username}\n  IdentityFile {bastion.client_key}\n"
        f"  UserKnownHostsFile {known}\n"
        f"Host inner-alias\n  HostName {inner.host}\n  Port {inner.port}\n  ProxyJump jumper\n"
        f"  IdentityFile {inner.client_key}\n  UserKnownHostsFile {known}\n"
    )
    return path


async def test_ssh_config_is_honoured_when_asked_and_ignored_otherwise(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    net: BastionNet,
    bastion: SSHServer,
    inner: SSHServer,
) -> None:
    """Host alias, ProxyJump and IdentityFile from the user's ~/.ssh/config."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    _write_ssh_config(home / ".ssh" / "config", bastion, inner)
    monkeypatch.setenv("HOME", str(home))
    alias = {"type": "ssh", "host": "inner-alias", "user": inner.username, "connect_timeout": 5}
    services = Services.build(
        _settings(tmp_path, {"honoured": {**alias, "ssh_config": True}, "ignored": alias})
    )
    try:
        client, _, server, port = (await _ssh_connection(services, "honoured")).split()
        assert (server, int(port)) == (net.target_address, inner.port)
        assert client != net.target_address
        with pytest.raises(ExecutorError, match="inner-alias:22 unreachable"):
            await services.executor("ignored").run(["true"], timeout=5)
    finally:
        await services.close()


async def test_ssh_config_can_name_its_file(
    tmp_path: Path, net: BastionNet, bastion: SSHServer, inner: SSHServer
) -> None:
    config = _write_ssh_config(tmp_path / "ssh_config", bastion, inner)
    endpoint = {"type": "ssh", "host": "inner-alias", "user": inner.username,
                "ssh_config": str(config)}  # fmt: skip
    services = Services.build(_settings(tmp_path, {"inner": endpoint}))
    try:
        client, _, server, _ = (await _ssh_connection(services, "inner")).split()
        assert server == net.target_address and client != net.target_address
    finally:
        await services.close()
