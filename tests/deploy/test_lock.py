"""The lock (requirements/*.txt) against pyproject.toml and against what is installed.

A dependency added to pyproject.toml without `bash scripts/lock.sh` fails here, not on a user's
machine; and the suite itself runs on exactly the lock (scripts/test.sh installs it).
"""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def locked(name: str) -> dict[str, Requirement]:
    """The lock's pins that apply to this Python, by canonical name; each must carry a hash."""
    text = (REPO / "requirements" / name).read_text().replace("\\\n", " ")
    pins: dict[str, Requirement] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        spec, _, hashes = line.partition(" --hash=")
        req = Requirement(spec.strip())
        assert hashes.startswith("sha256:"), f"{name}: {req.name} has no hash"
        assert str(req.specifier).startswith("=="), f"{name}: {req.name} is not exact"
        if req.marker is None or req.marker.evaluate():
            pins[canonicalize_name(req.name)] = req
    return pins


def project() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def wanted(*extras: str) -> list[Requirement]:
    meta = project()
    proj = meta["project"]
    assert isinstance(proj, dict)
    reqs = [Requirement(r) for r in proj["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in proj["optional-dependencies"][extra]]
    build = meta["build-system"]
    assert isinstance(build, dict)
    return reqs + [Requirement(r) for r in build["requires"]]


def version_of(req: Requirement) -> str:
    return next(iter(req.specifier)).version


def test_each_lock_pins_every_dependency_within_pyprojects_range() -> None:
    env = default_environment()
    for name, extras in (("dev.txt", ("dev", "bench")), ("runtime.txt", ())):
        pins = locked(name)
        for req in wanted(*extras):
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            pin = pins.get(canonicalize_name(req.name))
            assert pin is not None, (
                f"{req.name} is not in requirements/{name}: bash scripts/lock.sh"
            )
            assert req.specifier.contains(version_of(pin), prereleases=True), (
                f"requirements/{name} pins {pin} outside pyproject's {req}: bash scripts/lock.sh"
            )


def test_the_image_and_the_tests_share_every_version() -> None:
    dev, runtime = locked("dev.txt"), locked("runtime.txt")
    assert set(runtime) <= set(dev)
    assert {n: version_of(r) for n, r in runtime.items()} == {
        n: version_of(dev[n]) for n in runtime
    }


def test_the_suite_runs_on_exactly_the_lock() -> None:
    """What this interpreter has installed is requirements/dev.txt, version for version."""
    for name, pin in locked("dev.txt").items():
        assert metadata.version(name) == version_of(pin), f"{name}: installed differs from lock"
