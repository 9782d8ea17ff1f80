"""The status page over HTTP (no browser): /status.json and /status.atom fed by a real monitor
round and by /incident commands typed into the fake Bot API's chat; nothing internal leaks.
The browser test is tests/web/test_statuspage_browser.py."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import httpx
import pytest

from opsbot.alerting import monitor, status_history
from opsbot.alerting.event import AlertEvent, Severity
from opsbot.alerting.status_history import History, uptime
from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.state.store.sqlite import SQLiteStore
from opsbot.web.server import WebServer
from opsbot.web.statuspage import StatusPage
from tests.factories import ALICE, base_config, running_opsbot, write_config
from tests.fakebotapi import FakeBotAPI
from tests.lab.ports import free_port

TOKEN = "status-page-web-token-0123456789"
ATOM = "{http://www.w3.org/2005/Atom}"
INTERNAL = "ledger-db01"  # a target name: never on the page
SECRET_NOTE = "restarted postgres on 10.0.0.7"


def status_settings(fake: FakeBotAPI, tmp_path: Path, **page: Any) -> Settings:
    """Two targets watched by the monitor every second; ``down`` makes the second fail."""
    config: dict[str, Any] = base_config(fake, tmp_path / "data")
    down = tmp_path / "down"
    config["targets"] = {
        "payments": {"kind": "command", "actions": {"status": ["true"]}},
        INTERNAL: {"kind": "command", "actions": {"status": ["test", "!", "-e", str(down)]}},
    }
    config["alerts"] = {
        "monitor": {"enabled": True, "interval": 1, "fail_after": 1, "recover_after": 1}
    }
    config["web"] = {"enabled": True, "port": free_port(), "token": TOKEN}
    config["status_page"] = {
        "title": "Example status",
        "refresh": 5,
        "components": [
            {"name": "Payments API", "targets": ["payments"]},
            {"name": "Ledger", "description": "Balances and history", "targets": [INTERNAL]},
        ],
        **page,
    }
    return write_config(tmp_path / "opsbot.yaml", config)


async def poll(
    client: httpx.AsyncClient, path: str, ok: Callable[[Any], bool], timeout: float = 15.0
) -> Any:
    """GET ``path`` (JSON) until ``ok`` holds for it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        body = (await client.get(path)).json()
        if ok(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{path} never satisfied the condition: {body}")
        await asyncio.sleep(0.2)


def component(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in body["components"] if c["name"] == name)


def entries(atom: bytes) -> list[ET.Element]:
    feed = ET.fromstring(atom)
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}title") == "Example status"
    return feed.findall(f"{ATOM}entry")


async def test_status_json_and_atom_follow_the_monitor_and_public_updates_only(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = status_settings(fake, tmp_path)
    base = f"http://127.0.0.1:{settings.web.port}"
    async with running_opsbot(fake, settings) as chat, httpx.AsyncClient(base_url=base) as http:
        body = await poll(http, "/status.json", lambda b: len(b["components"]) == 2)
        assert body["status"]["description"] == "All systems operational"
        assert [c["state"] for c in body["components"]] == ["ok", "ok"]
        assert component(body, "Ledger")["uptime"] == {"24h": 100, "7d": 100, "30d": 100}

        # A real monitor round finds the ledger down: the component is in outage.
        (tmp_path / "down").touch()
        body = await poll(
            http, "/status.json", lambda b: component(b, "Ledger")["state"] == "fail"
        )
        assert component(body, "Ledger")["state_text"] == "Outage"
        assert component(body, "Payments API")["state"] == "ok"
        assert body["status"]["description"] == "Some systems are down"

        # The incident, its internal note, then a public update.
        reply = await chat.ask(f"/incident P1 ledger disk full on db01 {INTERNAL}", user=ALICE)
        assert reply.text is not None and "INC-1" in reply.text
        await chat.ask(f"/incident update INC-1 alice {SECRET_NOTE}")
        reply = await chat.ask("/incident public INC-1 identified The database was full")
        assert reply.text is not None and "status page (Ledger): Identified" in reply.text
        refused = await chat.ask(f"/incident public INC-1 monitoring {INTERNAL} is back, Alice")
        assert refused.text == (
            "⚠️ a public update must not name internal targets, hosts or people: alice,"
            f" {INTERNAL}. Say it in words your users know (the components' names)."
        )
        body = (await http.get("/status.json")).json()
        [incident] = body["incidents"]["open"]
        assert incident["id"] == "INC-1" and incident["phase"] == "identified"
        assert incident["components"] == ["Ledger"]
        assert [u["text"] for u in incident["updates"]] == ["The database was full"]
        atom = (await http.get("/status.atom")).content
        [entry] = entries(atom)
        assert entry.findtext(f"{ATOM}title") == "Identified: Incident INC-1 — Ledger"
        assert entry.findtext(f"{ATOM}content") == "The database was full"

        # The runbook's template when no text is given; the --public form of update.
        await chat.ask("/incident public INC-1 monitoring")
        await chat.ask(f"/incident update INC-1 --public Balances are catching up {TOKEN}")
        (tmp_path / "down").unlink()
        await poll(http, "/status.json", lambda b: component(b, "Ledger")["state"] == "ok")
        reply = await chat.ask("/incident resolve INC-1 alice dropped the old WAL files")
        assert reply.document_name == "INC-1-postmortem.md"

        body = (await http.get("/status.json")).json()
        assert body["incidents"]["open"] == []
        [done] = body["incidents"]["resolved"]
        phases = [u["phase"] for u in done["updates"]]
        assert phases == ["resolved", "monitoring", "monitoring", "identified"]
        texts = [u["text"] for u in done["updates"]]
        assert texts[0].startswith("The issue with Ledger has been resolved.")
        assert texts[1].startswith("Balances are catching up ") and TOKEN not in texts[1]
        assert texts[2] == "A fix has been applied to Ledger. We are monitoring the results."
        ledger = component(body, "Ledger")
        assert 99.0 < ledger["uptime"]["24h"] < 100
        assert component(body, "Payments API")["uptime"]["24h"] == 100
        assert len(entries((await http.get("/status.atom")).content)) == 4

        html = (await http.get("/status")).text
        for page in (html, json.dumps(body), atom.decode()):
            for internal in (INTERNAL, "db01", "10.0.0.7", "alice", "disk full", "WAL", "P1"):
                assert internal not in page, internal
        assert "Balances are catching up" in html and "Resolved incidents" in html


async def test_a_private_status_page_needs_the_web_token(tmp_path: Path) -> None:
    fake_url = "http://127.0.0.1:9"  # never called: no bot here
    config: dict[str, Any] = {
        "telegram": {"api_url": fake_url},
        "targets": {"api": {"kind": "command", "actions": {"status": ["true"]}}},
        "web": {"enabled": True, "port": free_port(), "token": TOKEN},
        "status_page": {"public": False, "components": [{"name": "API", "targets": ["api"]}]},
        "data_dir": str(tmp_path),
    }
    settings = write_config(tmp_path / "c.yaml", config)
    store = SQLiteStore(tmp_path / "state.sqlite3")

    async def ingest(events: list[AlertEvent]) -> None:
        return None

    server = WebServer(settings, ingest, Metrics(), status_page=StatusPage(settings, store))
    port = await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for path in ("/status", "/status.json", "/status.atom"):
                refused = await http.get(path)
                assert refused.status_code == 401
                assert refused.headers["WWW-Authenticate"].startswith("Basic")
            assert (
                await http.get("/status", headers={"Authorization": "Bearer no"})
            ).status_code == 401
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            ok = await http.get("/status", headers=bearer)
            assert (
                ok.status_code == 200 and "<h1>Service status</h1>" in ok.text and "API" in ok.text
            )
            assert ok.headers["Cache-Control"].startswith("private")
            basic = base64.b64encode(f"anyone:{TOKEN}".encode()).decode()
            ok = await http.get("/status.json", headers={"Authorization": f"Basic {basic}"})
            assert ok.status_code == 200 and ok.json()["components"][0]["name"] == "API"
    finally:
        await server.stop()
        await store.close()


def test_uptime_counts_only_outages_and_merges_a_components_targets() -> None:
    def event(check: str, status: str, severity: Severity = Severity.critical) -> AlertEvent:
        return AlertEvent("monitor", check, status, severity, check, "t",  # type: ignore[arg-type]
                          labels={"check": check})  # fmt: skip

    assert status_history.SOURCE == monitor.SOURCE
    day = 86400.0
    a = History({}).fold([event("http", "firing")], 1000.0)  # down from 1000 ...
    a = a.fold([event("tcp", "firing", Severity.warning)], 1500.0)  # still down (worst)
    assert a.state == "fail" and len(a.changes) == 1
    a = a.fold([event("http", "resolved")], 1000.0 + 0.01 * day)  # ... degraded, not down
    assert a.state == "warn"
    a = a.fold([event("tcp", "resolved")], 3000.0)
    assert a.state == "ok" and [s for _, s in a.changes] == ["fail", "warn", "ok"]
    assert a.fold([event("tcp", "resolved")], 4000.0) == a  # a replica's repeat changes nothing
    assert uptime([a], 0, day) == pytest.approx(99.0)
    b = History({}).fold([event("http", "firing")], 1000.0 + 0.005 * day)  # overlaps, then more
    b = b.fold([event("http", "resolved")], 1000.0 + 0.02 * day)
    assert uptime([a, b], 0, day) == pytest.approx(98.0)
    assert uptime([a], day, 2 * day) == 100.0
    still_down = History({}).fold([event("http", "firing")], 0.0)
    assert uptime([still_down], day / 2, day) == 0.0
    old = still_down.fold([event("http", "resolved")], 40 * day)  # trimmed past 31 days
    assert old.start == "fail" and old.changes == ((40 * day, "ok"),)
    assert uptime([old], 39 * day, 41 * day) == pytest.approx(50.0)
