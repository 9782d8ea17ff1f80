"""Objectives in the configuration: defaults for all, per-target keys, refusals that say why."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbot.config import WORKBOOK_RULES, Settings, json_schema, load_config
from opsbot.errors import ConfigError
from opsbot.preflight import objective_rows

CHECK = [{"type": "tcp", "host": "127.0.0.1", "port": 1}]


def settings(**targets: dict[str, object]) -> Settings:
    made = {n: {"kind": "command", "checks": CHECK, **t} for n, t in targets.items()}
    return Settings(targets=made)


def test_every_target_has_the_default_objective_and_may_override_part_of_it() -> None:
    s = settings(quizbot={}, paybot={"objective": {"availability": 99.5, "window": "7d"}},
                 scratch={"objective": {"enabled": False}})  # fmt: skip
    quiz = s.objective("quizbot")
    assert quiz is not None and (quiz.availability, quiz.latency, quiz.window) == (
        99.9, 2.0, 30 * 86400,
    )
    pay = s.objective("paybot")
    assert pay is not None and (pay.availability, pay.latency_target, pay.window) == (
        99.5, 95.0, 7 * 86400,
    )
    assert s.objective("scratch") is None
    assert s.objective("nosuch") is None
    assert list(s.objectives.burn_rules) == list(WORKBOOK_RULES)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("targets:\n  q:\n    kind: command\n    checks: [{type: tcp, host: h, port: 1}]\n"
         "    objective: {window: 3d}\n", "line 5: targets.q.objective.window: "
         "the window is from 7d to 90d"),
        ("objectives:\n  default: {availability: 100}\n",
         "line 2: objectives.default.availability: an objective is a percentage"),
        ("objectives:\n  default: {latency: 3}\n",
         "latency is one of the recorded bounds (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30 s)"),
        ("objectives:\n  burn_rules: [{severity: page, long: 5m, short: 1h, factor: 14.4}]\n",
         "short must be shorter than long"),
        ("objectives:\n  report: {every: weekly, timezone: Mars/Olympus}\n",
         "unknown timezone 'Mars/Olympus'"),
        ("objectives:\n  report: {every: hourly}\n", "objectives.report.every"),
    ],
)
def test_a_bad_objective_is_refused_with_its_line(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert said in str(caught.value)


def test_the_schema_describes_objectives() -> None:
    schema = json_schema()
    assert "objectives" in schema["properties"]
    defs = schema["$defs"]
    assert {"Objective", "ObjectiveOverride", "BurnRule", "ReportSchedule"} <= set(defs)
    assert "objective" in defs["CommandTarget"]["properties"]


def test_opsbot_check_says_what_the_objectives_cover_and_what_cannot_be_measured(
    tmp_path: Path,
) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(
        "targets:\n"
        "  quizbot: {kind: command, checks: [{type: tcp, host: h, port: 1}]}\n"
        "  paybot:\n    kind: command\n    checks: [{type: tcp, host: h, port: 1}]\n"
        "    objective: {availability: 99.5}\n"
        "  quiet:\n    kind: command\n    checks: [{type: tcp, host: h, port: 1}]\n"
        "    objective: {availability: 99}\n    monitor: {enabled: false}\n"
    )
    rows = {row.name: row for row in objective_rows(load_config(path))}
    assert rows["objectives"].ok
    assert rows["objectives"].detail == (
        "2 targets, default 99.9 % over 30 d (1 with their own); 4 burn-rate rules; report off"
    )
    quiet = rows["targets.quiet"]
    assert not quiet.ok and "the monitor is off for it" in quiet.detail
    assert "targets.quiet.monitor.enabled: true" in quiet.hint
