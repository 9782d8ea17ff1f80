"""The registries of the update-notice tests, and images pushed to them from the lab dockerd."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import closing

import pytest

from tests.lab.dockerd import DockerLab
from tests.lab.ports import LabError
from tests.updates.lab_registry import LabRegistry, start_registries


@pytest.fixture(scope="session")
def lab_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRegistry]:
    with start_registries(tmp_path_factory.mktemp("registry")) as registries:
        yield registries


@pytest.fixture(autouse=True)
def _untag_pushed(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that pushed to the registry: its names dropped from the lab images (a push
    tags ``image_v1`` / ``image_v2`` themselves, whose tags tests/reach/test_docker_tls.py
    reads)."""
    if not {"docker_lab", "lab_registry"} <= set(request.fixturenames):
        yield
        return
    docker_lab: DockerLab = request.getfixturevalue("docker_lab")
    registry: LabRegistry = request.getfixturevalue("lab_registry")
    yield
    with closing(docker_lab.client()) as client:
        for image in client.images.list():
            for tag in image.tags:
                if tag.startswith(f"{registry.host}/"):
                    client.images.remove(tag)


def push(docker_lab: DockerLab, registry: LabRegistry, source: str, repository: str,
         tag: str) -> str:  # fmt: skip
    """Tag the lab image ``source`` as ``registry/repository:tag`` and push it; its digest."""
    name = f"{registry.host}/{repository}"
    with closing(docker_lab.client()) as client:
        client.images.get(source).tag(name, tag)
        digest = None
        for line in client.api.push(name, tag, stream=True, decode=True):
            if "error" in line:
                raise LabError(f"push of {name}:{tag} failed: {line['error']}")
            aux = line.get("aux") or {}
            digest = aux.get("Digest", digest)
    if digest is None:
        raise LabError(f"push of {name}:{tag} reported no digest")
    return str(digest)


def new_repository() -> str:
    """A repository of one test's own (tests share the registry's storage)."""
    return f"t{uuid.uuid4().hex[:8]}/quizbot"


def run_container(docker_lab: DockerLab, image: str, name: str) -> None:
    """A container that only sleeps, running ``image`` (what a target's image is read from)."""
    with closing(docker_lab.client()) as client:
        client.containers.run(image, ["sleep", "3600"], name=name, detach=True,
                              network_mode="none", init=True)  # fmt: skip


def remove_container(docker_lab: DockerLab, name: str) -> None:
    with closing(docker_lab.client()) as client:
        client.containers.get(name).remove(force=True)
