"""The shared bricks of the configuration: the frozen model, names, durations, secret files."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"


Name = Annotated[str, Field(pattern=NAME_PATTERN)]


Argv = Annotated[list[str], Field(min_length=1)]


Seconds = Annotated[float, Field(gt=0, le=3600)]


def _compiles(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"not a regular expression ({exc}): {value!r}") from None
    return value


#: A regular expression, checked to compile when the config loads.
Regex = Annotated[str, AfterValidator(_compiles)]


class _Model(BaseModel):
    """Frozen, strict about unknown keys, and able to read ``x_file`` into a secret ``x``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Read x_file when the check runs rather than at start-up (a missing file fails one check).
    lazy_secret_files: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or cls.lazy_secret_files:
            return data
        for key in [k for k in data if isinstance(k, str) and k.endswith("_file")]:
            field = key.removesuffix("_file")
            info = cls.model_fields.get(field)
            if info is None or "SecretStr" not in repr(info.annotation):
                continue
            if data.get(field) is None and data[key] is not None:
                # $CREDENTIALS_DIRECTORY/x (systemd LoadCredential=), ~/x
                path = Path(os.path.expandvars(str(data[key]))).expanduser()
                try:
                    data = {**data, field: path.read_text().strip()}
                except OSError as exc:
                    problems = _unread_secret_files.get()
                    if problems is None:
                        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None
                    problems.append((key, path, exc.strerror or str(exc)))
        return data


_DURATION_PART = re.compile(r"(\d+)([smhdw])")


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: Any) -> Any:
    """``6h``, ``90m``, ``1d12h`` or a number of seconds."""
    if isinstance(value, str) and not value.strip().isdigit():
        word = value.strip().lower()
        if not word or _DURATION_PART.sub("", word):
            raise ValueError(f"a duration looks like 6h, 90m or 1d12h, not {value!r}")
        return sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(word))
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]


Minutes = Annotated[float, Field(gt=0, le=7 * 24 * 60)]


_unread_secret_files: ContextVar[list[tuple[str, Path, str]] | None] = ContextVar(
    "opsbot_unread_secret_files", default=None
)


@contextmanager
def tolerating_unreadable_secret_files() -> Iterator[list[tuple[str, Path, str]]]:
    """Within: an unreadable ``x_file`` leaves ``x`` unset and is listed (key, path, reason).

    ``opsbot check`` loads the configuration this way, to report the file among its other rows
    instead of stopping at it.
    """
    problems: list[tuple[str, Path, str]] = []
    token = _unread_secret_files.set(problems)
    try:
        yield problems
    finally:
        _unread_secret_files.reset(token)
