"""Update notices in the configuration (defaults, refusals with their line) and in
``opsbot check`` (the target's image read, its registry asked, a hint when it fails); the
tag ordering they rely on."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from opsbot.config import ContainerTarget, load_config
from opsbot.errors import ConfigError
from opsbot.preflight import update_rows
from opsbot.services import Services
from opsbot.updates.versions import newest_newer
from tests.lab.dockerd import DockerLab
from tests.lab.ports import free_port
from tests.updates.conftest import new_repository, push, remove_container, run_container
from tests.updates.lab_registry import LabRegistry

CONTAINER = (
    "endpoints:\n  d: {type: docker}\n"
    "targets:\n  quizbot:\n    kind: container\n    endpoint: d\n"
)


def test_updates_default_to_every_six_hours(tmp_path: Path) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(CONTAINER + "    updates: {}\n")
    target = load_config(path).targets["quizbot"]
    assert isinstance(target, ContainerTarget) and target.updates is not None
    assert (target.updates.every, target.updates.enabled, target.updates.registry) == (
        6 * 3600, True, None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (CONTAINER + "    updates: {every: 30s}\n",
         "line 7: targets.quizbot.updates.every: Input should be greater than or equal to 60"),
        (CONTAINER + "    updates: {tags: '(v'}\n", "not a regular expression"),
        (CONTAINER + "    updates: {username: deployer}\n",
         "username and password (or password_file) go together"),
        (CONTAINER + "    updates: {registry: 'ftp://reg'}\n", "targets.quizbot.updates.registry"),
        ("targets:\n  api:\n    kind: systemd\n    unit: api.service\n    updates: {}\n",
         "targets.api.updates"),  # only containers and compose services have an image
    ],
)
def test_a_bad_updates_block_is_refused_with_its_line(
    tmp_path: Path, text: str, said: str
) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert said in str(caught.value)


@pytest.fixture
def container(docker_lab: DockerLab, lab_registry: LabRegistry) -> Iterator[str]:
    repository = new_repository()
    push(docker_lab, lab_registry, docker_lab.image_v1, repository, "1.4")
    run_container(docker_lab, f"{lab_registry.host}/{repository}:1.4", "upd-check")
    yield repository
    remove_container(docker_lab, "upd-check")


async def test_opsbot_check_asks_each_registry_and_says_how_to_fix_it(
    tmp_path: Path, docker_lab: DockerLab, lab_registry: LabRegistry, container: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    path = tmp_path / "opsbot.yaml"
    path.write_text(
        f"endpoints:\n  lab-docker: {{type: docker, url: '{docker_lab.base_url}'}}\n"
        "targets:\n"
        "  good:\n    kind: container\n    endpoint: lab-docker\n    container: upd-check\n"
        f"    updates: {{registry: '{lab_registry.url}'}}\n"
        "  down:\n    kind: container\n    endpoint: lab-docker\n    container: upd-check\n"
        f"    updates: {{registry: '{down}'}}\n"
        "  gone:\n    kind: container\n    endpoint: lab-docker\n    container: no-such\n"
        f"    updates: {{registry: '{lab_registry.url}'}}\n"
    )
    services = Services.build(load_config(path))
    try:
        rows = {row.name: row for row in await update_rows(services)}
    finally:
        await services.close()
    good = rows["targets.good"]
    assert good.ok and good.detail == f"{lab_registry.url}/{container}: 1 tags, asked every 6h 00m"
    assert not rows["targets.down"].ok and f"{down} unreachable" in rows["targets.down"].detail
    assert "updates.registry" in rows["targets.down"].hint
    gone = rows["targets.gone"]
    assert not gone.ok and "there is no container no-such" in gone.detail


@pytest.mark.parametrize(
    ("running", "tags", "newest"),
    [
        ("1.4", ["1.3", "1.4", "1.5", "1.10", "latest"], "1.10"),
        ("v2.0.1", ["v2.0.2", "2.1.0", "v2.1"], "v2.1"),  # only the running tag's prefix
        ("1.4-alpine", ["1.5", "1.5-alpine", "1.6-slim"], "1.5-alpine"),  # … and suffix
        ("2", ["2.0.1", "1.9"], "2.0.1"),
        ("1.4", ["1.4.0", "1.3.9"], None),  # 1.4.0 is 1.4
        ("latest", ["1.0", "2.0"], None),  # not a version: only a moved tag is news
    ],
)
def test_newer_tags_are_ordered_semver_ish(running: str, tags: list[str], newest: str | None
                                           ) -> None:  # fmt: skip
    assert newest_newer(running, tags, r".") == newest
