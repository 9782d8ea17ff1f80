"""bench/import_quality.py on the project's test runbooks: never a destructive command or a
placeholder drafted, and the scorer counts what it should."""

from __future__ import annotations

from bench.import_quality import RUNBOOKS, score, total


def test_no_runbook_drafts_a_destructive_command_or_a_placeholder() -> None:
    scores = [score(path) for path in sorted(RUNBOOKS.glob("*.md"))]
    assert len(scores) >= 4
    assert [(s.file, s.destructive, s.placeholders) for s in scores] == [
        (s.file, 0, 0) for s in scores
    ]
    assert total(scores).recall >= 0.9


def test_the_scorer_matches_items_by_target_kind_and_detail() -> None:
    systemd = score(RUNBOOKS / "systemd_pg.md")
    assert "ledger-bot target systemd" in systemd.drafted
    assert "ledger-bot check http http://127.0.0.1:9000/healthz" in systemd.expected
    assert (systemd.precision, systemd.recall) == (1.0, 1.0)
    mixed = score(RUNBOOKS / "compose_v1_mixed.md")  # its key was written before its draft
    assert "weatherbot backup redis" in mixed.expected - mixed.drafted
