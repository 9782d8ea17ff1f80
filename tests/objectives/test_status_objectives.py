"""The status page's objective figures (/status.json): the same SLI and budget as /slo, one
objective per component (its strictest target's), 90 daily bars; no target name."""

from __future__ import annotations

import json

from opsbot.config import Settings
from opsbot.objectives.recording import Recorder
from opsbot.objectives.series import DAY
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.web.statuspage import as_html, as_json, snapshot

TRUE = {"kind": "command", "actions": {"status": ["true"]}}
TODAY = 20_100
NOW = TODAY * DAY + 12 * 3600


async def test_a_component_shows_its_budget_and_90_daily_bars(sqlite_store: SQLiteStore) -> None:
    settings = Settings(
        targets={"ledger-db01": TRUE, "ledger-api": {**TRUE, "objective": {"availability": 99.95}},
                 "payments": TRUE},
        status_page={"components": [
            {"name": "Ledger", "targets": ["ledger-db01", "ledger-api"]},
            {"name": "Payments", "targets": ["payments"]},
        ]},
    )  # fmt: skip
    recorder = Recorder(sqlite_store, settings, clock=lambda: NOW)
    for minute in range(40 * 1440):  # 40 days, a round a minute each
        at = NOW - 40 * DAY + minute * 60
        recorder.observe("ledger-db01", True, 0.1, at)
        recorder.observe("ledger-api", not (NOW - 2 * DAY <= at < NOW - 2 * DAY + 1800), 0.1, at)
    await recorder.flush(final=True)
    body = as_json(await snapshot(settings, sqlite_store, NOW))
    ledger, payments = body["components"]  # type: ignore[index]
    objective = ledger["objective"]
    assert objective["objective"] == 99.95 and objective["window_days"] == 30
    # 30 failed of 2 × 43,200 rounds: 99.965 %; the budget 43.2 rounds: 31 % left
    assert objective["availability"] == 99.965
    assert objective["budget_left"] == 30.6
    assert objective["burn_rate"] == {"1h": 0.0, "6h": 0.0}
    days = objective["days"]
    assert len(days) == 90 and days[-1]["date"] == "2025-01-12"
    assert [d["grade"] for d in days[:49]] == ["none"] * 49
    assert days[-3]["grade"] == "fail" and days[-3]["availability"] == 98.958
    assert {d["grade"] for d in days[49:]} - {"fail"} == {"ok"}
    assert payments["objective"]["availability"] is None
    assert payments["objective"]["days"][-1] == {
        "date": "2025-01-12", "availability": None, "grade": "none",
    }
    html = as_html(await snapshot(settings, sqlite_store, NOW), 60)
    said = "99.96 % available over 30 days (objective 99.95 %) · 31 % of the error budget left"
    assert said in html
    assert html.count('<li class="') == 180
    assert 'title="2025-01-10: 98.95 %, well below objective"' in html
    for page in (html, json.dumps(body)):
        assert "ledger-db01" not in page and "ledger-api" not in page
