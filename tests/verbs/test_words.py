"""The words a person reads: /help per role and configuration, headlines, plurals, latency.

Through the real verbs (``dispatch``) on a loaded configuration, where a chat is not needed
to see the words; tests/chat/test_help_and_dead_ends_e2e.py shows them in the chat.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from opsbot.catalog import VERBS, dispatch
from opsbot.config import Role, Settings
from opsbot.reach.checks import CheckResult, TargetHealth
from opsbot.reach.targets import FILTER_SCRIPT, State, filtered_logs_argv
from opsbot.render import (
    ago,
    day_hhmm,
    elapsed,
    hhmm,
    moment,
    plural,
    short_duration,
    span,
    span_minutes,
)
from opsbot.services import Services
from opsbot.verbs import manual
from opsbot.verbs.core import health_block, health_counts, health_table
from opsbot.verbs.registry import Caller
from tests.factories import PEOPLE, write_config


def _settings(tmp_path: Path, **extra: Any) -> Settings:
    config: dict[str, Any] = {
        "people": PEOPLE,
        "data_dir": str(tmp_path / "data"),
        "targets": {
            "quizbot": {"kind": "systemd", "unit": "quizbot.service"},
            "paydb": {
                "kind": "command",
                "actions": {"status": ["true"]},
                "backups": [{"type": "sqlite", "path": "/srv/pay.db"}],
            },
        },
        **extra,
    }
    return write_config(tmp_path / "opsbot.yaml", config)


async def _help(settings: Settings, role: Role, *args: str) -> str:
    services = Services.build(settings)
    try:
        reply = await dispatch(services, Caller("someone", role), "help", list(args))
    finally:
        await services.close()
    return reply.text


async def test_help_lists_oncall_only_where_a_rotation_is_configured(tmp_path: Path) -> None:
    without = await _help(_settings(tmp_path), Role.admin)
    assert "/oncall" not in without and "/backup —" in without
    rotation = {"rotation": {"people": ["alice", "bob"], "timezone": "UTC"}}
    with_oncall = await _help(_settings(tmp_path, oncall=rotation), Role.viewer)
    assert "/oncall — Who is on call now and next" in with_oncall


async def test_each_role_sees_its_own_lines(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    viewer = await _help(settings, Role.viewer)
    operator = await _help(settings, Role.operator)
    admin = await _help(settings, Role.admin)
    assert "/incident — Open incidents; one's card" in viewer
    assert "/incident — Declare and run an incident" in operator
    assert "/deny — Cancel your own request" in operator and "/approve" not in operator
    assert "/approve — Approve a request" in admin
    for role in Role:  # a verb the role is refused is never listed
        text = await _help(settings, role)
        for verb in VERBS.values():
            if not role.allows(verb.role):
                assert f"/{verb.name} —" not in text, (role, verb.name)


async def test_help_backup_gives_an_example_with_a_target_that_has_backups(
    tmp_path: Path,
) -> None:
    text = await _help(_settings(tmp_path), Role.operator, "backup")
    assert "Works on: paydb." in text.splitlines()
    assert "/backup paydb list" in text.splitlines()


async def test_help_is_computed_once_per_configuration_and_role(tmp_path: Path) -> None:
    """/help stays as cheap as the command-latency benchmark needs: no store, no rebuild."""
    settings = _settings(tmp_path)
    services = Services.build(settings)
    try:
        viewer = Caller("vic", Role.viewer)
        first = await manual.help_(services, viewer, [])
        again = await manual.help_(services, Caller("val", Role.viewer), [])
        admin = await manual.help_(services, Caller("alice", Role.admin), [])
    finally:
        await services.close()
    assert first.text.split(". ", 1)[1] == again.text.split(". ", 1)[1]
    assert manual.overview(settings, Role.viewer) in first.text and admin.text != first.text
    cached = manual._cached(settings, Role.viewer, "", lambda: "not computed again")
    assert cached == manual.overview(settings, Role.viewer)


def _health(name: str, state: State, latency: float) -> TargetHealth:
    return TargetHealth(name, (CheckResult("status", state, "x", latency),), latency)


def test_the_headline_agrees_with_what_is_firing() -> None:
    healthy = [_health(name, State.OK, 0.12) for name in "abc"]
    assert health_counts(healthy) == "3 targets, all healthy"
    assert health_counts(healthy, firing=1) == "3 targets, 1 alert firing"
    assert health_counts(healthy[:1], firing=2) == "1 target, 2 alerts firing"


def test_latency_under_a_second_reads_in_milliseconds() -> None:
    assert short_duration(0.12) == "120 ms"
    assert short_duration(0.0004) == "1 ms"
    assert short_duration(1.25) == "1.2 s" or short_duration(1.25) == "1.3 s"
    table = health_table([_health("web", State.OK, 0.042), _health("db", State.OK, 3.5)])
    assert table.splitlines() == ["✅ web   42 ms", "✅ db    3.5 s"]


def test_a_fleets_health_names_the_worst_and_counts_the_rest() -> None:
    """Up to 30 targets every one is listed; over that the not-healthy ones (20 at most, a
    long reason cut at a phone's width), then the healthy ones counted."""
    few = [_health(f"t{i:02d}", State.OK, 0.1) for i in range(30)]
    assert health_block(few) == health_table(few)
    fleet = [_health(f"t{i:04d}", State.OK, 0.1) for i in range(1200)]
    assert health_block(fleet) == "✅ 1,200 healthy"
    bad = TargetHealth("paybot", (CheckResult("status", State.FAIL, "y" * 80, 2.0),), 2.0)
    lines = health_block([bad, *fleet[1:]]).splitlines()
    assert lines[0].startswith("❌ paybot  2.0 s  status: yyy") and lines[0].endswith("…")
    assert lines[1:] == ["✅ 1,199 healthy"]


def test_times_and_durations_read_one_way_wherever_they_are_shown() -> None:
    """One wording for alerts, incidents, on-call and the gate (render.py holds them all)."""
    at = 1_764_970_860.0  # 2025-12-05 21:41 UTC
    assert hhmm(at) == "21:41 UTC"
    assert day_hhmm(at) == "5 Dec 21:41 UTC"  # an alert firing since yesterday, an override
    assert [span(s) for s in (45, 240, 7500, 3 * 86400)] == ["45 s", "4 min", "2h 05m", "3 d"]
    # an incident card is refreshed once a minute: it never shows seconds
    assert [span_minutes(s) for s in (45, 720, 7500, 3 * 86400 + 4 * 3600)] == [
        "<1 min", "12 min", "2h 05m", "3 d 4h"
    ]
    assert [ago(s) for s in (2, 45, 840, 3 * 3600, 2 * 86400)] == [
        "just now", "45 s ago", "14 min ago", "3 h ago", "2 days ago"
    ]
    # a card's expiry or a backup's next slot: the day only when it is not today
    assert moment(at, now=at + 600) == "21:41 UTC"
    assert moment(at, now=at + 86400) == "5 Dec 21:41 UTC"
    assert moment(at, now=at + 40 * 86400) == "5 Dec 2025 21:41 UTC"
    assert [elapsed(s) for s in (12.4, 125)] == ["12 s", "2 min 5 s"]  # a running clock


@pytest.mark.parametrize(
    ("count", "word", "expected"),
    [(1, "check", "1 check"), (2, "check", "2 checks"), (0, "backup", "0 backups")],
)
def test_plurals(count: int, word: str, expected: str) -> None:
    assert plural(count, word) == expected


def test_a_filter_reaches_the_host_as_data_in_a_fixed_script(tmp_path: Path) -> None:
    target = _settings(tmp_path).targets["quizbot"]
    argv = filtered_logs_argv(target, 50, "$(reboot) ; ERROR")
    assert argv is not None
    assert argv[:6] == ["sh", "-c", FILTER_SCRIPT, "sh", "$(reboot) ; ERROR", "50"]
    assert argv[6:] == ["journalctl", "-u", "quizbot.service", "-n", "50000", "--no-pager",
                        "-o", "short-iso"]  # fmt: skip
