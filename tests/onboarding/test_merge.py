"""`opsbot import --merge FILE`: only what is new is added, the file's comments and hand edits
stay, the diff is shown first, and nothing is written without --yes (or a "y")."""

from __future__ import annotations

from pathlib import Path

from opsbot.config import load_config
from tests.onboarding.test_import_cli import RUNBOOKS, opsbot

CONFIG = """\
# Our inventory: hand-written, keep these comments.
telegram:
  ops_chat_id: -100123   # the ops group

targets:
  # the bot, renamed by hand and given a description
  faceswap-prod:
    kind: pm2
    process: faceswap
    description: "the money maker"   # quoted on purpose
"""


def test_merge_shows_the_diff_and_writes_only_with_yes(tmp_path: Path) -> None:
    path = tmp_path / "opsbot.yaml"
    path.write_text(CONFIG)
    runbooks = [str(RUNBOOKS / "pm2_sqlite.md"), str(RUNBOOKS / "compose_k8s.md")]

    shown = opsbot("import", *runbooks, "--merge", str(path))  # not a terminal, no --yes
    assert shown.returncode == 0, shown.stderr
    assert path.read_text() == CONFIG  # only shown
    assert shown.stdout.startswith("--- a/opsbot.yaml\n+++ b/opsbot.yaml\n")
    assert "+  bot:\n" in shown.stdout and "faceswap:" not in shown.stdout  # same pm2 process
    assert f"{path}: not written (run again with --yes to write it)" in shown.stderr

    written = opsbot("import", *runbooks, "--merge", str(path), "--yes")
    assert written.returncode == 0, written.stderr
    text = path.read_text()
    assert text.startswith(CONFIG.rstrip("\n"))  # every line of the file kept as it was
    assert "  # from compose_k8s.md:13, 22" in text
    settings = load_config(path)
    assert list(settings.targets) == ["faceswap-prod", "bot"]
    assert settings.targets["faceswap-prod"].description == "the money maker"
    assert settings.telegram.ops_chat_id == -100123

    again = opsbot("import", *runbooks, "--merge", str(path), "--yes")
    assert again.returncode == 0
    assert f"{path}: nothing new to add" in again.stderr
    assert path.read_text() == text


def test_merge_into_a_file_that_is_not_yaml_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("targets: [unclosed\n")
    done = opsbot("import", str(RUNBOOKS / "systemd_pg.md"), "--merge", str(path), "--yes")
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        f"opsbot import: {path}, line 2: not valid YAML: expected ',' or ']', but got "
        "'<stream end>'"
    )
    assert "Traceback" not in done.stderr
    assert path.read_text() == "targets: [unclosed\n"
