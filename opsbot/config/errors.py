"""Configuration errors people can fix: where the value came from, and what was probably meant.

Each problem names its source: the YAML file and line, or the ``OPSBOT_…`` environment
variable that set it (a bad value from the environment is not blamed on a line of the file).
An unknown key gets the nearest valid key at that place ("did you mean"); an unreadable
``*_file`` secret gets the variable that can carry the secret instead.
"""

from __future__ import annotations

import difflib
import os
import re
import types
from collections.abc import Mapping
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

Loc = tuple[str | int, ...]
ENV_PREFIX = "OPSBOT_"


def env_name(loc: Loc) -> str:
    """The variable of a location: ("telegram", "token") → OPSBOT_TELEGRAM__TOKEN."""
    return ENV_PREFIX + "__".join(str(p) for p in loc).upper()


def env_source(loc: Loc, environ: Mapping[str, str] | None = None) -> str | None:
    """The variable that set this location (or a parent of it), if one did."""
    names = {k.upper() for k in (os.environ if environ is None else environ)}
    for n in range(len(loc), 0, -1):
        name = env_name(loc[:n])
        if name in names:
            return name
    return None


def describe(
    exc: ValidationError,
    where: str,
    lines: dict[Loc, int],
    model: type[BaseModel],
    clean: Any,
) -> str:
    """All problems of one validation, one per line. ``clean`` drops union tags from a loc."""
    problems = []
    for error in exc.errors(include_url=False):
        raw: Loc = tuple(error["loc"])
        loc: Loc = clean(raw)
        dotted = ".".join(str(p) for p in loc) or "(top level)"
        message = error["msg"].removeprefix("Value error, ")
        # "token_file: cannot read …" is raised for the section: the key is in the message
        unreadable = re.match(r"^(\w+)_file: cannot read ", message)
        subject = (*loc, f"{unreadable.group(1)}_file") if unreadable else loc
        variable = env_source(subject)
        if variable is not None:
            place = f"environment variable {variable}"
        else:
            found = (
                lines[subject[:n]] for n in range(len(subject), 0, -1) if subject[:n] in lines
            )
            line = next(found, None)
            place = f"{where}, line {line}" if line else where
        if error["type"] == "extra_forbidden" and loc:
            message += _did_you_mean(model, raw, str(loc[-1]), variable is not None, loc)
        if unreadable:
            secret = (*loc, unreadable.group(1))
            message += f"; or give the secret itself in {env_name(secret)}"
        problems.append(f"{place}: {dotted}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(problems)


def _did_you_mean(model: type[BaseModel], raw: Loc, unknown: str, from_env: bool, loc: Loc) -> str:
    known = sorted(valid_keys(model, raw[:-1]))
    close = difflib.get_close_matches(unknown.lower(), known, n=1, cutoff=0.6)
    if not close:
        return f" (valid here: {', '.join(known)})" if 0 < len(known) <= 20 else ""
    if from_env:
        return f"; did you mean {env_name((*loc[:-1], close[0]))}?"
    return f"; did you mean {close[0]!r}?"


def valid_keys(model: type[BaseModel], path: Loc) -> set[str]:
    """The field names of the model(s) found at ``path`` (a pydantic error location)."""
    current: list[Any] = [model]
    for part in path:
        found: list[Any] = []
        for tp in current:
            if _is_model(tp) and isinstance(part, str) and part in tp.model_fields:
                found += _leaves(tp.model_fields[part].annotation)
            elif _is_model(tp) and isinstance(part, str) and _has_tag(tp, part):
                found.append(tp)  # the discriminated union member pydantic named
            elif get_origin(tp) is dict and isinstance(part, str):
                found += _leaves(get_args(tp)[1])
            elif get_origin(tp) is list and isinstance(part, int):
                found += _leaves(get_args(tp)[0])
        # a tag selects one member of a union: keep only it when one matched
        tagged = [t for t in found if _is_model(t) and isinstance(part, str) and _has_tag(t, part)]
        current = tagged or found
    return {name for tp in current if _is_model(tp) for name in tp.model_fields}


def _leaves(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _leaves(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [leaf for arg in get_args(tp) for leaf in _leaves(arg)]
    return [] if tp is type(None) else [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _has_tag(model: type[BaseModel], tag: str) -> bool:
    for info in model.model_fields.values():
        if get_origin(info.annotation) is Literal and tag in get_args(info.annotation):
            return True
    return False
