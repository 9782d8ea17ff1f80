"""Declaring an incident from an alert: a brief title, and the severity asked with buttons."""

from __future__ import annotations

import re

from opsbot.incidents.records import SEVERITIES
from opsbot.render import Button, Reply

TITLE_CHARS = 60
_WHY = re.compile(r"\s*\([^()]*\)\s*$")  # "(3 checks in a row)"
_URL = re.compile(r"\bhttps?://[^/\s:]+(?::\d+)?(/[^\s?#:]*)?[^\s:]*")  # a URL → its path


def brief_title(target: str | None, summary: str, fallback: str) -> str:
    """"quizbot: http /health connection failed", not the check's whole text.

    The monitor's summary is ``TARGET: CHECK: DETAIL (WHY)``: the title keeps the target, the
    check and the first part of the detail, within ``TITLE_CHARS``; a check's URL is shown
    as its path (``http http://10.0.0.5:8080/health`` reads ``http /health``, as on cards).
    """
    line = _WHY.sub("", (summary.splitlines() or [""])[0]).strip()
    line = _URL.sub(lambda m: m.group(1) or "/", line)
    if target and line.lower().startswith(target.lower() + ":"):
        line = line[len(target) + 1 :].strip()
    parts = [p.strip() for p in line.split(": ") if p.strip()]
    body = " ".join(parts[:2]) or fallback
    title = f"{target}: {body}" if target else body
    if len(title) > TITLE_CHARS:
        cut = title[: TITLE_CHARS - 1].rsplit(" ", 1)[0]
        title = cut + "…"
    return title


def severity_prompt(alert_id: str, title: str) -> Reply:
    """The question a Declare incident tap asks: P0–P3, one tap each (``is:ID:P1``)."""
    return Reply(
        text=f"🚨 Declare an incident: {title}\nWhich severity?",
        buttons=tuple(Button(level, f"is:{alert_id}:{level}") for level in SEVERITIES),
    )
