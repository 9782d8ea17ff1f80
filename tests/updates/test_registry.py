"""The Registry v2 client against Debian's docker-registry: tags, digests as ``docker push``
reported them, token authentication through a real token server, and every way a registry
fails (down, 401, 404, a timeout) as a clear RegistryError that never names the password."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Iterator

import pytest

from opsbot.updates.registry import Login, Registry, RegistryError, parse_challenge, parse_ref
from opsbot.updates.versions import newest_newer
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.updates.conftest import new_repository, push
from tests.updates.lab_registry import PASSWORD, USERNAME, LabRegistry


@pytest.fixture(scope="module")
def pushed(docker_lab: DockerLab, lab_registry: LabRegistry) -> tuple[str, dict[str, str]]:
    repository = new_repository()
    digests = {
        "1.4": push(docker_lab, lab_registry, docker_lab.image_v1, repository, "1.4"),
        "1.5": push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.5"),
        "1.10": push(docker_lab, lab_registry, docker_lab.image_v2, repository, "1.10"),
        "latest": push(docker_lab, lab_registry, docker_lab.image_v2, repository, "latest"),
    }
    return repository, digests


async def test_tags_and_digests_are_the_ones_docker_pushed(
    lab_registry: LabRegistry, pushed: tuple[str, dict[str, str]]
) -> None:
    repository, digests = pushed
    registry = Registry(lab_registry.url)
    try:
        tags = await registry.tags(repository)
        assert sorted(tags) == sorted(digests)
        for tag, digest in digests.items():
            assert await registry.digest(repository, tag) == digest
        assert await registry.digest(repository, "9.9") is None
    finally:
        await registry.aclose()
    assert newest_newer("1.4", tags, r".") == "1.10"  # numbers, not strings


async def test_token_auth_follows_the_challenge_with_the_login(
    lab_registry: LabRegistry, pushed: tuple[str, dict[str, str]]
) -> None:
    repository, digests = pushed
    registry = Registry(lab_registry.token_url, login=Login(USERNAME, PASSWORD))
    asked = len(lab_registry.token_requests)
    try:
        assert sorted(await registry.tags(repository)) == sorted(digests)
        assert await registry.digest(repository, "1.5") == digests["1.5"]
    finally:
        await registry.aclose()
    requests = lab_registry.token_requests[asked:]
    assert requests == [  # one token for the scope, reused for the manifest
        {"login": True, "scope": f"repository:{repository}:pull", "service": "opsbot-lab-registry"}
    ]


async def refusal(registry: Registry, call: Awaitable[object]) -> RegistryError:
    """The RegistryError that ``call`` (one of ``registry``'s) raises; the registry closed."""
    try:
        with pytest.raises(RegistryError) as raised:
            await call
    finally:
        await registry.aclose()
    return raised.value


@pytest.mark.parametrize("login", [Login(USERNAME, "wrong-password-1234"), None])
async def test_a_refused_login_is_unauthorized_and_never_named(
    lab_registry: LabRegistry, pushed: tuple[str, dict[str, str]], login: Login | None
) -> None:
    registry = Registry(lab_registry.token_url, login=login)
    error = await refusal(registry, registry.tags(pushed[0]))
    assert error.problem == "unauthorized"
    assert "401" in str(error)
    assert "wrong-password" not in str(error) and PASSWORD not in str(error)


async def test_an_unknown_repository_is_not_found(lab_registry: LabRegistry) -> None:
    registry = Registry(lab_registry.url)
    error = await refusal(registry, registry.tags("nobody/here"))
    assert error.problem == "not found"
    assert "nobody/here" in str(error)


async def test_a_registry_that_is_down_is_unreachable() -> None:
    registry = Registry(f"http://127.0.0.1:{free_port()}")
    error = await refusal(registry, registry.tags("quizbot"))
    assert error.problem == "unreachable"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock.getsockname()[1]


async def test_a_registry_that_hangs_times_out(silent_port: int) -> None:
    registry = Registry(f"http://127.0.0.1:{silent_port}", timeout=0.3)
    error = await refusal(registry, registry.digest("quizbot", "1.4"))
    assert error.problem == "timeout"


def test_references_and_challenges_are_read_as_docker_reads_them() -> None:
    ref = parse_ref("127.0.0.1:5000/team/quizbot:1.4")
    assert ref is not None and (ref.host, ref.repository, ref.tag) == (
        "127.0.0.1:5000", "team/quizbot", "1.4"
    )
    hub = parse_ref("nginx")
    assert hub is not None and (hub.host, hub.repository, hub.tag) == (None, "library/nginx",
                                                                       "latest")  # fmt: skip
    pinned = parse_ref("ghcr.io/o/r@sha256:" + "a" * 64)
    assert pinned is not None and pinned.digest is not None
    assert parse_ref("UPPER/Case:1") is None
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:x:pull"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "reg",
                      "scope": "repository:x:pull"}  # fmt: skip
