"""`opsbot import` as a user runs it: the draft on stdout, the report on stderr, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from opsbot.config import load_config

REPO = Path(__file__).resolve().parents[2]
RUNBOOKS = Path(__file__).resolve().parent / "runbooks"


def opsbot(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "opsbot", *args],
        input=stdin, capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip


def imported(runbook: Path) -> subprocess.CompletedProcess[str]:
    """``opsbot import RUNBOOK``, which must succeed: the draft on stdout, a report on stderr."""
    done = opsbot("import", str(runbook))
    assert done.returncode == 0, done.stderr
    return done


def test_the_draft_is_config_that_opsbot_check_loads(tmp_path: Path) -> None:
    done = imported(RUNBOOKS / "pm2_sqlite.md")
    draft = tmp_path / "opsbot.yaml"
    draft.write_text(done.stdout)
    faceswap = load_config(draft).targets["faceswap"]
    assert (faceswap.kind, faceswap.process) == ("pm2", "faceswap")
    assert [c.type for c in faceswap.checks] == ["http", "telegram"]
    assert faceswap.checks[0].url == "http://localhost:8000/health"  # type: ignore[union-attr]
    assert faceswap.backups[0].path == "/srv/faceswap/data/faceswap.db"  # type: ignore[union-attr]
    assert "  # from pm2_sqlite.md:16, 22, 24" in done.stdout  # where each entry came from
    assert "fill in: checks: an http check of https://your-domain.com/health" in done.stdout
    assert "<TOKEN>" not in done.stdout and "$(date" not in done.stdout
    # the report is on stderr: counts, then what was not drafted, destructive ones flagged
    report = done.stderr.splitlines()
    assert report[0] == "drafted 1 target(s), 2 check(s), 1 backup(s), 0 endpoint(s)"
    assert "  pm2_sqlite.md:48: pm2 kill # stops every process of this user  (destructive: not"\
        " drafted)" in report
    assert "pm2_sqlite.md:51: make deploy" in done.stderr
    assert "restart" not in json.dumps(yaml.safe_load(done.stdout))  # no routine action drafted


def test_json_is_the_same_draft() -> None:
    as_yaml = opsbot("import", str(RUNBOOKS / "compose_k8s.md"))
    as_json = opsbot("import", "--json", str(RUNBOOKS / "compose_k8s.md"))
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)
    assert data["config"] == yaml.safe_load(as_yaml.stdout)
    assert data["sources"]["targets.bot"][:2] == ["compose_k8s.md:13", "compose_k8s.md:22"]
    sources = {u["source"] for u in data["unrecognised"]}
    assert sources >= {"compose_k8s.md:51", "compose_k8s.md:53"}


def test_one_bot_documented_three_ways_is_one_target() -> None:
    config = yaml.safe_load(opsbot("import", str(RUNBOOKS / "compose_k8s.md")).stdout)
    assert list(config["targets"]) == ["bot"]  # not postgres or redis: only looked at
    bot = config["targets"]["bot"]
    assert (bot["kind"], bot["service"]) == ("compose", "bot")
    assert bot["file"] == "/srv/quiz/docker-compose.yml"  # the cd before it
    text = opsbot("import", str(RUNBOOKS / "compose_k8s.md")).stdout
    assert "# also documented as: container quiz-bot-1 (compose_k8s.md:28)" in text
    assert "# also documented as: k8s deployment/bot -n quiz (compose_k8s.md:35)" in text
    compose = ["docker", "compose", "-f", "/srv/quiz/docker-compose.yml", "exec", "-T"]
    assert bot["backups"] == [{  # shown after no cd: run with the project's compose file
        "type": "postgres", "database": "quiz", "user": "quiz",
        "pg_dump": [*compose, "postgres", "pg_dump"],
        "pg_restore": [*compose, "postgres", "pg_restore"],
        "psql": [*compose, "postgres", "psql"],
    }]  # fmt: skip


def test_bad_input_is_one_line_each_and_a_partial_draft(tmp_path: Path) -> None:
    binary = tmp_path / "dump.md"
    binary.write_bytes(b"\x7fELF\x00\x01\x02" * 50)
    log = tmp_path / "app.log"
    log.write_text("2026-01-01 12:00 started\n2026-01-01 12:01 ERROR boom\n")
    empty = tmp_path / "notes.md"
    empty.write_text("# Notes\n\nNothing to run here, only words.\n")
    done = opsbot(
        "import", str(binary), str(log), str(empty), str(tmp_path / "missing.md"),
        str(RUNBOOKS / "systemd_pg.md"),
    )  # fmt: skip
    assert done.returncode == 1
    problems = [line for line in done.stderr.splitlines() if line.startswith("problem: ")]
    assert problems == [
        f"problem: {binary}: a binary file, not a Markdown runbook",
        f"problem: {log}: not Markdown (no headings, lists or code blocks)",
        f"problem: {empty}: no commands found (no code blocks or inline commands)",
        f"problem: {tmp_path / 'missing.md'}: no such file",
    ]
    assert "Traceback" not in done.stderr
    draft = tmp_path / "partial.yaml"
    draft.write_text(done.stdout)
    assert list(load_config(draft).targets) == ["ledger-bot"]  # what could be read


def test_nothing_readable_still_prints_a_valid_empty_draft(tmp_path: Path) -> None:
    done = opsbot("import", str(tmp_path / "nope.md"))
    assert done.returncode == 1
    assert done.stderr.splitlines()[1] == f"problem: {tmp_path / 'nope.md'}: no such file"
    draft = tmp_path / "empty.yaml"
    draft.write_text(done.stdout)
    assert load_config(draft).targets == {}


def test_other_unreadable_input_is_one_line_each_too(tmp_path: Path) -> None:
    latin1 = tmp_path / "alt.md"
    latin1.write_bytes("# Caf\xe9 bot\n\n```bash\npm2 restart cafe\n```\n".encode("latin-1"))
    folder = tmp_path / "docs"
    folder.mkdir()
    strange = tmp_path / "strange.md"
    strange.write_text("# Build\n\n```bash\nmake deploy\n./scripts/go.sh\n```\n")
    done = opsbot("import", str(latin1), str(folder), str(strange),
                  str(RUNBOOKS / "pm2_sqlite.md"))  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("problem: ")] == [
        f"problem: {latin1}: not UTF-8 text, not a Markdown runbook",
        f"problem: {folder}: a directory, not a runbook",
        f"problem: {strange}: none of its 2 commands is one opsbot knows",
    ]
    assert "  strange.md:4: make deploy" in done.stderr.splitlines()  # listed as not understood
    assert list(yaml.safe_load(done.stdout)["targets"]) == ["faceswap"]  # the rest is drafted
