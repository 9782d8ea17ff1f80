"""The draft is config: what it prints validates, and every entry says where it came from."""

from __future__ import annotations

import json

import pytest

from opsbot.errors import ConfigError
from opsbot.onboarding.draft import Draft, target_name


def _draft() -> Draft:
    draft = Draft("opsbot import RUNBOOK.md")
    bot = draft.target("FaceSwap_Bot", "pm2", {"process": "faceswap"}, "RUNBOOK.md:12")
    bot.note("endpoint: an ssh endpoint of the host pm2 runs on")
    bot.add_check({"type": "http", "url": "https://bot.example.org/health"}, "RUNBOOK.md:30")
    bot.add_check({"type": "http", "url": "https://bot.example.org/health"}, "RUNBOOK.md:41")
    bot.add_backup({"type": "sqlite", "path": "/srv/faceswap.db"}, "RUNBOOK.md:50")
    bot.set_action("restart", ["pm2", "restart", "faceswap"], "RUNBOOK.md:12")
    bot.add_alternative("docker run faceswap", "RUNBOOK.md:70")
    draft.endpoint("docker", {"type": "docker"}, "RUNBOOK.md:80", ["url: the host's engine"])
    draft.target("cache", "container", {"container": "cache"}, "RUNBOOK.md:80", "docker")
    draft.unrecognised("RUNBOOK.md:90", "make deploy")
    return draft


def test_the_yaml_validates_and_cites_each_entry() -> None:
    draft = _draft()
    settings = draft.validate()
    bot = settings.targets["faceswap_bot"]
    assert bot.kind == "pm2" and bot.process == "faceswap"
    assert [c.type for c in bot.checks] == ["http"]  # the second curl of one URL is one check
    assert bot.actions.restart == ["pm2", "restart", "faceswap"]
    assert settings.targets["cache"].endpoint == "docker"
    text = draft.to_yaml()
    assert "  # from RUNBOOK.md:12\n  # fill in: endpoint: an ssh endpoint" in text
    assert "      # from RUNBOOK.md:30, 41\n      - type: http" in text
    assert "# also documented as: docker run faceswap (RUNBOOK.md:70)" in text
    assert "restart: [pm2, restart, faceswap]" in text


def test_the_json_is_the_same_draft_with_sources_and_notes() -> None:
    draft = _draft()
    data = json.loads(draft.to_json())
    assert data["config"] == draft.config()
    assert data["sources"]["targets.faceswap_bot.checks.0"] == ["RUNBOOK.md:30", "RUNBOOK.md:41"]
    assert data["notes"]["endpoints.docker"] == ["url: the host's engine"]
    assert data["unrecognised"] == [{"source": "RUNBOOK.md:90", "command": "make deploy"}]


def test_the_report_lists_what_was_not_understood() -> None:
    lines = _draft().report()
    assert lines[0] == "drafted 2 target(s), 1 check(s), 1 backup(s), 1 endpoint(s)"
    assert lines[-1] == "  RUNBOOK.md:90: make deploy"


def test_a_draft_that_is_not_valid_config_says_why() -> None:
    draft = Draft()
    draft.target("web", "container", {}, "a.md:1")  # a container target on the local endpoint
    with pytest.raises(ConfigError, match="a container target needs a docker endpoint"):
        draft.validate()


def test_names_become_config_names() -> None:
    assert target_name("My Bot_API!") == "my-bot_api"
    assert target_name("***") == "target"
    assert len(target_name("x" * 50)) == 32
