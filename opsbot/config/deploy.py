"""/deploy TARGET VERSION: which versions a target takes, and how a non-container kind deploys.

A container deploys by pulling ``<its image's repository>:VERSION`` and recreating the
container with it (name, env, mounts, networks, restart policy kept); the registry is asked
first through the target's ``updates`` settings (its URL, login, timeout), or the image's own
host. pm2, systemd and command targets run ``argv``: an element that is exactly ``{version}``
is replaced by the validated version, as one argv element, never through a shell; a failed
deploy runs it again with the version that ran before (``current`` prints it, or the last one
opsbot deployed healthy).
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from opsbot.config.base import Argv, Regex, Seconds, _Model

#: A version as Docker spells a tag: a letter or digit first (never an option, ``-h``), then
#: letters, digits, ``.``, ``_``, ``-`` (never a path: no ``/``; never a shell word: no ``;``).
DEFAULT_VERSIONS = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: The argv element replaced by the version.
PLACEHOLDER = "{version}"


class Deploy(_Model):
    """How ``/deploy TARGET VERSION`` deploys this target."""

    versions: Regex = Field(
        default=DEFAULT_VERSIONS,
        description="Regular expression a version must match in full (always a tag's "
        "characters: no '/', no leading '-').",
    )
    argv: Argv | None = Field(
        default=None,
        description="pm2 / systemd / command targets: the deploy command; an element that is "
        "exactly {version} becomes the version.",
    )
    current: Argv | None = Field(
        default=None,
        description="pm2 / systemd / command targets: prints the version running now (the "
        "rollback's); default: the last version opsbot deployed healthy.",
    )
    timeout: Seconds = Field(default=300.0, description="Budget of each deploy command.")
    backup_first: bool = Field(
        default=True, description="Back up (verified) first when the target has backups."
    )

    @field_validator("argv")
    @classmethod
    def _placeholder(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and PLACEHOLDER not in value:
            raise ValueError(f"deploy.argv needs an element that is exactly {PLACEHOLDER}")
        return value


def valid_version(spec: Deploy | None, version: str) -> bool:
    """The version matches the target's pattern and is a tag's characters either way."""
    pattern = spec.versions if spec is not None else DEFAULT_VERSIONS
    return bool(re.fullmatch(DEFAULT_VERSIONS, version) and re.fullmatch(pattern, version))
