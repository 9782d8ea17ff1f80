"""Update notices: a container or compose target's image, asked about at its registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from opsbot.config.base import Duration, Regex, Seconds, _Model

#: The tags compared by default: 1, 1.4, v1.4.2, 1.4.2.7 (a suffix such as -alpine is kept
#: apart: only tags with the running tag's own prefix and suffix are compared).
DEFAULT_TAGS = r"^v?\d+(\.\d+){0,3}(-[A-Za-z0-9.]+)?$"


class UpdateNotices(_Model):
    """Ask the image's registry (HTTP API v2) on a schedule whether a newer image is out.

    A newer tag, or the running tag moved to another digest, is announced once in the ops
    chat with Deploy and Ignore buttons."""

    enabled: bool = True
    every: Annotated[Duration, Field(ge=60, le=30 * 86400)] = Field(
        default=6 * 3600.0, description="How often the registry is asked (6h, 1d)."
    )
    registry: str | None = Field(
        default=None,
        pattern=r"^https?://[^/\s]+/?$",
        description="The registry's base URL (http://127.0.0.1:5000); default: https:// and "
        "the host named in the image reference (Docker Hub without one).",
    )
    repository: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9]+([._/-][a-z0-9]+)*$",
        description="The repository at the registry; default: from the running image.",
    )
    tags: Regex = Field(
        default=DEFAULT_TAGS, description="Regular expression of the tags worth comparing."
    )
    username: str | None = Field(default=None, description="Basic auth / token-server login.")
    password: SecretStr | None = None
    password_file: Path | None = None
    timeout: Seconds = Field(default=10.0, description="Budget of each registry request.")
    verify_tls: bool = True

    @model_validator(mode="after")
    def _login_pairs(self) -> UpdateNotices:
        if (self.username is None) != (self.password is None):
            raise ValueError("updates: username and password (or password_file) go together")
        return self
