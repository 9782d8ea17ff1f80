"""Words a person reads when an incident is declared from an alert and then run: the brief
title the monitor's summary becomes, and timeline lines that say a bare step once."""

from __future__ import annotations

from opsbot.incidents.card import entry_line
from opsbot.incidents.from_alert import brief_title
from opsbot.incidents.records import Entry


def test_a_checks_url_is_shown_by_its_path_in_the_title() -> None:
    summary = "web: http http://127.0.0.1:41699/checkout: HTTP 500 (2 checks in a row)"
    assert brief_title("web", summary, "monitor") == "web: http /checkout HTTP 500"
    bare = "shop: http https://shop.example.com: connection refused (3 checks in a row)"
    assert brief_title("shop", bare, "monitor") == "shop: http / connection refused"
    query = "api: http https://api.example.com/v1/ping?deep=1: HTTP 502"
    assert brief_title("api", query, "monitor") == "api: http /v1/ping HTTP 502"
    assert brief_title("payments", "5xx at 40%", "webhook") == "payments: 5xx at 40%"


def test_a_bare_step_is_said_once_and_a_reason_is_kept() -> None:
    at = 1_700_000_000.0  # 22:13 UTC
    assert entry_line(Entry(at=at, actor="alice", kind="resolved", text="resolved")) == (
        "22:13 alice · resolved"
    )
    said = Entry(at=at, actor="alice", kind="resolved", text="provider outage, retried")
    assert entry_line(said) == "22:13 alice · resolved — provider outage, retried"
