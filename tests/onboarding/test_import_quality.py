"""bench/import_quality.py on the project's test runbooks: never a destructive command or a
placeholder drafted, and the scorer counts what it should."""

from __future__ import annotations

from bench.import_quality import RUNBOOKS, Score, score, total


def test_no_runbook_drafts_a_destructive_command_or_a_placeholder() -> None:
    scores = [score(path) for path in sorted(RUNBOOKS.glob("*.md"))]
    assert len(scores) >= 4
    assert [(s.file, s.destructive, s.placeholders) for s in scores] == [
        (s.file, 0, 0) for s in scores
    ]
    assert total(scores).recall >= 0.9
    assert total(scores).precision >= 0.95


def test_the_scorer_matches_items_by_target_kind_and_detail() -> None:
    systemd = score(RUNBOOKS / "systemd_pg.md")
    assert "ledger-bot target systemd" in systemd.drafted
    assert "ledger-bot check http http://127.0.0.1:9000/healthz" in systemd.expected
    assert (systemd.precision, systemd.recall) == (1.0, 1.0)
    # a check given to the wrong target is an extra item and a missed one
    wrong = Score(
        "x.md",
        systemd.drafted - {"ledger-bot check http http://127.0.0.1:9000/healthz"}
        | {"nginx check http http://127.0.0.1:9000/healthz"},
        systemd.expected, 0, 0,
    )  # fmt: skip
    assert (wrong.precision, wrong.recall) == (6 / 7, 6 / 7)


def test_a_worker_beside_the_bot_does_not_take_the_bots_checks_and_backups() -> None:
    """compose_v1_mixed.md: the pm2 worker has more commands, but the health URL is the one
    curled after restarting the bot, the tar copies the bot's project folder, and BGSAVE is in
    the tar's block; its key was written before its draft."""
    mixed = score(RUNBOOKS / "compose_v1_mixed.md")
    assert sorted(mixed.drafted - mixed.expected) == []
    assert sorted(mixed.expected - mixed.drafted) == []
