"""The post-mortem draft comes from a template file: the shipped one (the runbooks' sections)
or a team's own (``incidents.postmortem_template``), checked when the config loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from telegram import Bot

from opsbot.config import Role, Settings
from opsbot.errors import ConfigError
from opsbot.handlers.notifier import TelegramNotifier
from opsbot.incidents.postmortem import postmortem
from opsbot.incidents.state import Entry, Incident, Incidents
from opsbot.incidents.verbs import incident_verb
from opsbot.redact import Redactor
from opsbot.services import Services
from opsbot.verbs.registry import Caller
from tests.factories import INCIDENTS, base_config, fake_fixture, write_config
from tests.fakebotapi import Chat, FakeBotAPI

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC
FULL = Incident(
    id="INC-7", severity="P0", title="payments failing", targets=("paybot", "quizbot"),
    state="resolved", commander="alice", declared_by="oscar", created=T0 + 3600,
    acked_at=T0 + 3700, mitigated_at=T0 + 5400, resolved_at=T0 + 86400 + 600,
    summary="bad deploy rolled back", first_severity="P1", dropped=3,
    timeline=(
        Entry(T0 + 3600, "oscar", "declared", "P1 payments failing"),
        Entry(T0 + 3700, "alice", "acknowledged", "acknowledged"),
        Entry(T0 + 4000, "alice", "update", "5 pods   restarted"),
        Entry(T0 + 4100, "alice", "command", "/restart paybot"),
        Entry(T0 + 4200, "opsbot", "action", "restart of paybot ok"),
        Entry(T0 + 86400 + 600, "alice", "resolved", "resolved"),
    ),
)  # fmt: skip
BARE = Incident(
    id="INC-1", severity="P3", title="slow page", targets=(), state="open",
    commander="bob", declared_by="bob", created=T0,
)  # fmt: skip

# The report as opsbot drafted it before the template file existed (f-strings in code):
# the shipped template must give exactly the same document.
FULL_REPORT = """\
## Incident Report: INC-7 payments failing

**Date:** 2026-01-01
**Duration:** 23h 10m (01:00–2026-01-02 00:10 UTC)
**Severity:** P0 (declared P1)
**Status:** Resolved
**Incident commander:** alice (declared by oscar)
**Targets:** paybot, quizbot

### Timeline
_All times UTC, recorded by opsbot. Add when the root cause was identified._

- … 3 earlier entries were not kept
- 01:00 - Incident declared by oscar: P1 payments failing
- 01:01 - acknowledged (alice)
- 01:06 - Update from alice: 5 pods restarted
- 01:08 - Command by alice: /restart paybot
- 01:10 - Action (opsbot): restart of paybot ok
- 2026-01-02 00:10 - Resolved by alice

### Impact
- Users affected: _TODO: how many users were affected, and how?_
- Services impacted: paybot, quizbot
- Data loss: _TODO: None / describe_
- Time to acknowledge: 1 min
- Time to mitigate: 30 min
- Time to resolve: 23h 10m

### Root Cause
_TODO: what caused the incident, and why it was not caught earlier._

### Resolution
bad deploy rolled back

Actions taken (from the timeline):
- 01:08 alice: /restart paybot
- 01:10 opsbot: restart of paybot ok

### Action Items
- [ ] _TODO: prevention measure 1_
- [ ] _TODO: prevention measure 2_
- [ ] Update runbook with new procedures

### Lessons Learned
_TODO: what went well, what went badly, where we got lucky._
"""

BARE_REPORT = """\
## Incident Report: INC-1 slow page

**Date:** 2026-01-01
**Duration:** ongoing since 00:00 UTC
**Severity:** P3
**Status:** Investigating (open)
**Incident commander:** bob (declared by bob)
**Targets:** _TODO: list the impacted services_

### Timeline
_All times UTC, recorded by opsbot. Add when the root cause was identified._


### Impact
- Users affected: _TODO: how many users were affected, and how?_
- Services impacted: _TODO: list the impacted services_
- Data loss: _TODO: None / describe_

### Root Cause
_TODO: what caused the incident, and why it was not caught earlier._

### Resolution
_TODO: what was done to fix it._

### Action Items
- [ ] _TODO: prevention measure 1_
- [ ] _TODO: prevention measure 2_
- [ ] Update runbook with new procedures

### Lessons Learned
_TODO: what went well, what went badly, where we got lucky._
"""

TEAM_TEMPLATE = """\
# $id: $title ($severity, $status)
Price of a dollar: $$1
$timeline---
$resolution
"""


def test_the_shipped_template_drafts_the_runbook_report_unchanged() -> None:
    assert postmortem(FULL) == FULL_REPORT
    assert postmortem(BARE) == BARE_REPORT


def test_a_team_template_replaces_the_shipped_one() -> None:
    assert postmortem(BARE, TEAM_TEMPLATE) == (
        "# INC-1: slow page (P3, Investigating (open))\nPrice of a dollar: $1\n"
        "---\n_TODO: what was done to fix it._\n"
    )


fake = fake_fixture(Chat(INCIDENTS.id, "supergroup", "incidents"))


def _settings(fake: FakeBotAPI, tmp_path: Path, **incidents: object) -> Settings:
    tmp_path.mkdir(exist_ok=True)
    config = base_config(fake, tmp_path / "data")
    config["targets"] = {"paybot": {"kind": "command", "actions": {"status": ["true"]}}}
    config["alerts"] = {"monitor": {"enabled": False}}
    if incidents:
        config["incidents"] = incidents
    return write_config(tmp_path / "c.yaml", config)


async def _resolve_one(settings: Settings, bot: Bot) -> str:
    """Declare and resolve an incident through the /incident verb; the draft it attaches."""
    services = Services.build(settings)
    try:
        notifier = TelegramNotifier(bot, Redactor(settings.secrets()))
        incidents = Incidents(services.store, settings, notifier)
        caller = Caller("oscar", Role.operator, 1004, chat_id=INCIDENTS.id)
        await incident_verb(incidents, services, caller, ["P2", "checkout", "slow", "paybot"])
        done = await incident_verb(incidents, services, caller, ["resolve", "INC-1", "cache"])
    finally:
        await services.close()
    assert done.document is not None and done.document.filename == "INC-1-postmortem.md"
    return done.document.content.decode()


async def test_resolve_attaches_the_configured_template_filled(
    fake: FakeBotAPI, bot: Bot, tmp_path: Path
) -> None:
    shipped = await _resolve_one(_settings(fake, tmp_path / "a"), bot)
    assert shipped.startswith("## Incident Report: INC-1 checkout slow")
    assert "### Lessons Learned" in shipped

    team = tmp_path / "team.md"
    team.write_text(TEAM_TEMPLATE)
    settings = _settings(fake, tmp_path / "b", postmortem_template=str(team))
    draft = await _resolve_one(settings, bot)
    assert draft.startswith("# INC-1: checkout slow (P2, Resolved)\nPrice of a dollar: $1\n")
    assert draft.endswith("---\ncache\n")
    assert "Incident declared by oscar" in draft


def test_a_broken_team_template_is_refused_when_the_config_loads(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.md"
    bad.write_text("# $id $oops and $titel\n")
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \$oops, \$titel"):
        _settings(fake, tmp_path, postmortem_template=str(bad))
    dollar = tmp_path / "dollar.md"
    dollar.write_text("costs $5\n")
    with pytest.raises(ConfigError, match=r"\$\$ for a dollar sign"):
        _settings(fake, tmp_path, postmortem_template=str(dollar))
    with pytest.raises(ConfigError, match="cannot read"):
        _settings(fake, tmp_path, postmortem_template=str(tmp_path / "missing.md"))
