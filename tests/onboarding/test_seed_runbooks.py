"""The five seed runbooks and the four field runbooks (third-party text beside the clone, in
../shared/seeds and ../shared/runbooks, read in place, never copied) import to drafts that
validate, with the bot each one operates, and nothing destructive or literal."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.import_quality import DESTRUCTIVE, _argvs, _values
from opsbot.onboarding.runbook import import_runbooks
from opsbot.onboarding.shell import is_placeholder

SEEDS = Path(__file__).resolve().parents[2].parent / "shared" / "seeds"

#: file prefix → (target, kind) the runbook operates, as its README index says.
EXPECTED = {
    "000": ("telegram-faceswap-bot", "pm2"),
    "001": ("bot", "compose"),
    "002": ("psychochauffeur-bot", "systemd"),
    "003": ("telegram-bot", "compose"),
    "004": ("ajudadorabot-api", "k8s"),
}


def seeds() -> list[Path]:
    found = sorted(SEEDS.glob("0*.txt"))
    if len(found) < 5:  # a failure, never a skip: a missing copy must not pass for a pass
        pytest.fail(f"the seed runbooks are not in {SEEDS} (CI keeps a copy of shared/ there)")
    return found


@pytest.mark.parametrize("prefix", sorted(EXPECTED))
def test_each_seed_imports_to_a_draft_that_validates(prefix: str) -> None:
    path = next(p for p in seeds() if p.name.startswith(prefix))
    draft = import_runbooks([path])
    assert draft.problems == []
    settings = draft.validate()
    name, kind = EXPECTED[prefix]
    assert settings.targets[name].kind == kind
    config = draft.config()
    assert [v for v in _values(config) if is_placeholder(v)] == []
    assert [a for a in _argvs(config) if DESTRUCTIVE.search(a)] == []
    assert f"# from {path.name}:" in draft.to_yaml()


def test_the_seeds_name_their_checks_and_backups() -> None:
    by_prefix = {p.name[:3]: import_runbooks([p]) for p in seeds()}
    faceswap = by_prefix["000"].targets["telegram-faceswap-bot"]
    assert [c.config["type"] for c in faceswap.checks] == ["http", "telegram"]
    assert faceswap.backups[0].config == {"type": "sqlite", "path": "data/faceswap.db"}
    assert by_prefix["002"].targets["psychochauffeur-bot"].backups[0].config == {
        "type": "postgres", "database": "psychochauffeur_bot"
    }
    quiz = by_prefix["003"]
    assert quiz.targets["telegram-bot"].checks[0].config["type"] == "telegram"
    assert quiz.targets["postgres"].backups[0].config["database"] == "tgquiznft_prod"
    ajudadora = by_prefix["004"].targets["ajudadorabot-api"]
    assert ajudadora.config["namespace"] == "ajudadorabot-production"
    assert any("compose service ajudadorabot-api" in a for a in ajudadora.alternatives)


def test_a_seeds_staging_and_dr_urls_are_comments_not_checks() -> None:
    ajudadora = import_runbooks([next(p for p in seeds() if p.name.startswith("004"))])
    bot = ajudadora.targets["ajudadorabot-api"]
    urls = [c.config.get("url") for c in bot.checks if c.config["type"] == "http"]
    assert urls == ["https://ajudadorabot.com/health"]
    assert any(a.startswith("staging: http check https://staging.") for a in bot.alternatives)
    assert any(a.startswith("DR: http check https://dr.") for a in bot.alternatives)
    assert bot.config["namespace"] == "ajudadorabot-production"  # not the staging one


RUNBOOKS = SEEDS.parent / "runbooks"

#: The four field runbooks beside the seeds (../shared/runbooks): file prefix → the one target
#: each operates (the README there says what each shows).
FIELD = {
    "01": ("bot", "compose"),  # not db (only its logs), not docker.service (the engine)
    "03": ("tg-api", "pm2"),
    "05": ("wartracker", "compose"),  # systemd wrapping compose: an alternative
    "07": ("telegram-bot", "compose"),  # docker run --name second-brain-bot, k8s: alternatives
}


@pytest.mark.parametrize("prefix", sorted(FIELD))
def test_each_field_runbook_drafts_the_one_bot_it_operates(prefix: str) -> None:
    found = sorted(RUNBOOKS.glob(f"{prefix}_*.md"))
    if not found:  # a failure, never a skip
        pytest.fail(f"the field runbooks are not in {RUNBOOKS}")
    draft = import_runbooks(found)
    assert draft.problems == []
    settings = draft.validate()
    name, kind = FIELD[prefix]
    assert {n: t.kind for n, t in settings.targets.items()} == {name: kind}
    config = draft.config()
    assert [v for v in _values(config) if is_placeholder(v)] == []
    assert [a for a in _argvs(config) if DESTRUCTIVE.search(a)] == []
