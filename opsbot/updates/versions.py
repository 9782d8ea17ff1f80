"""Semver-ish ordering of image tags: which tags are newer than the one running.

A tag is read as a prefix (``v`` or nothing), up to four numbers and a suffix (``1.4.2``,
``v2.0``, ``1.5-alpine``). Only tags of the running tag's own shape are compared (the same
prefix and suffix: ``1.5-alpine`` is not newer than ``1.4``, it is another flavour), numbers
compare as numbers (``1.10`` after ``1.9``), and a missing number is 0 (``2`` = ``2.0``).
A tag that is not of that form (``latest``, ``main``) has no newer tags: only a move of the
tag itself is noticed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

_TAG = re.compile(r"^(?P<prefix>v?)(?P<numbers>\d+(?:\.\d+){0,3})(?P<suffix>-[A-Za-z0-9.]+)?$")


@dataclass(frozen=True, slots=True, order=True)
class TagVersion:
    numbers: tuple[int, ...]
    prefix: str
    suffix: str

    @property
    def shape(self) -> tuple[str, str]:
        return self.prefix, self.suffix


def parse_tag(tag: str) -> TagVersion | None:
    """The tag's version, or None when it is not semver-ish."""
    match = _TAG.match(tag)
    if match is None:
        return None
    numbers = tuple(int(n) for n in match.group("numbers").split("."))
    padded = numbers + (0,) * (4 - len(numbers))
    return TagVersion(padded, match.group("prefix"), match.group("suffix") or "")


def newest_newer(running: str, tags: Iterable[str], pattern: str) -> str | None:
    """The newest tag of ``running``'s shape that is newer than it and matches ``pattern``
    (of two equal versions, ``1.5.0`` over ``1.5``: the longer spelling names more)."""
    current = parse_tag(running)
    if current is None:
        return None
    wanted = re.compile(pattern)
    best: tuple[TagVersion, int, str] | None = None
    for tag in tags:
        version = parse_tag(tag)
        if version is None or version.shape != current.shape or not wanted.search(tag):
            continue
        if version.numbers <= current.numbers:
            continue
        candidate = (version, len(tag), tag)
        if best is None or candidate > best:
            best = candidate
    return best[2] if best is not None else None
