"""What a target's ``deploy:`` accepts: versions as tags (never an option, a path or a shell
word), an argv with a whole ``{version}`` element, and argv only where it runs."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from opsbot.actions.deploy.argv import with_version
from opsbot.config import Target
from opsbot.config.deploy import Deploy, valid_version

TARGET: TypeAdapter[Target] = TypeAdapter(Target)


@pytest.mark.parametrize("version", ["2.1", "v1.4.2", "1.5-alpine", "2026.12.07_3", "latest"])
def test_a_tag_is_a_version(version: str) -> None:
    assert valid_version(None, version)


@pytest.mark.parametrize(
    "version", ["1.2;rm -rf /", "../x", "-h", "--help", "a/b", "$(id)", "", "x" * 129, "1 2"]
)
def test_options_paths_and_shell_words_are_not(version: str) -> None:
    assert not valid_version(None, version)
    assert not valid_version(Deploy(versions=r".*"), version)  # a loose pattern cannot widen it


def test_the_target_pattern_narrows_it() -> None:
    spec = Deploy(versions=r"^2\.\d+$")
    assert valid_version(spec, "2.7") and not valid_version(spec, "3.0")


def test_argv_needs_a_whole_version_element_and_only_that_element_changes() -> None:
    with pytest.raises(ValidationError, match=r"exactly \{version\}"):
        Deploy(argv=["deploy.sh", "--tag={version}"])
    argv = ["deploy.sh", "--tag", "{version}", "{version}.tar"]
    assert with_version(argv, "2.1") == ("deploy.sh", "--tag", "2.1", "{version}.tar")


def test_argv_is_for_the_kinds_that_run_it() -> None:
    ok = TARGET.validate_python({"kind": "pm2", "process": "quiz",
                                 "deploy": {"argv": ["deploy.sh", "{version}"]}})  # fmt: skip
    assert ok.deploy is not None and ok.deploy.argv == ["deploy.sh", "{version}"]
    with pytest.raises(ValidationError, match="a container target deploys its image's tag"):
        TARGET.validate_python({"kind": "container",
                                "deploy": {"argv": ["deploy.sh", "{version}"]}})  # fmt: skip
