"""opsbot's web server over real HTTP: webhook auth, limits, payload mapping, health, metrics,
and a real Prometheus Alertmanager delivering firing and resolved alerts to it."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prometheus_client.exposition import generate_latest

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Actions, CommandTarget, Settings, Target, WebSettings
from opsbot.config.objectives import LATENCY_BUCKETS
from opsbot.metrics import SLI_BUCKETS, Metrics
from opsbot.web.server import WebServer
from tests.lab.alertmanager import AlertmanagerFactory, post_alerts, rfc3339

TOKEN = "web-token-0123456789abcdef"
SECRET = "hmac-secret-fedcba9876543210"
MAX_BODY = 4096


class Inbox:
    """The ingest callable: records every batch; ``fail`` makes it raise."""

    def __init__(self) -> None:
        self.events: list[AlertEvent] = []
        self.fail = False
        self._changed = asyncio.Event()

    async def __call__(self, events: list[AlertEvent]) -> None:
        if self.fail:
            raise RuntimeError("store unavailable")
        self.events.extend(events)
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[AlertEvent], bool], timeout: float = 15.0
    ) -> AlertEvent:
        async with asyncio.timeout(timeout):
            while True:
                found = next((e for e in self.events if predicate(e)), None)
                if found is not None:
                    return found
                self._changed.clear()
                await self._changed.wait()


class Running:
    def __init__(self, server: WebServer, inbox: Inbox, metrics: Metrics, port: int) -> None:
        self.server = server
        self.inbox = inbox
        self.metrics = metrics
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(base_url=self.url, timeout=10)

    async def post(
        self, path: str, body: bytes | Any, headers: Mapping[str, str | bytes] | None = None
    ) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        merged = {"Content-Type": "application/json", **(headers or {})}
        raw = {k.encode(): v if isinstance(v, bytes) else v.encode() for k, v in merged.items()}
        return await self.http.post(path, content=content, headers=raw)

    def sample(self, name: str, **labels: str) -> float:
        value = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if value is None else value


def settings(**web: Any) -> Settings:
    defaults: dict[str, Any] = {
        "enabled": True,
        "port": 0,
        "token": TOKEN,
        "hmac_secret": SECRET,
        "max_body_bytes": MAX_BODY,
    }
    target = CommandTarget(kind="command", actions=Actions(status=["true"]))
    targets: dict[str, Target] = {"quizbot": target, "payments": target}
    return Settings(web=WebSettings(**{**defaults, **web}), targets=targets)


async def run(config: Settings | None = None, healthy: Any = None) -> AsyncIterator[Running]:
    inbox, metrics = Inbox(), Metrics()
    server = WebServer(config or settings(), inbox, metrics, healthy=healthy)
    port = await server.start()
    running = Running(server, inbox, metrics, port)
    try:
        yield running
    finally:
        await running.http.aclose()
        await server.stop()


@pytest.fixture
async def web() -> AsyncIterator[Running]:
    async for running in run():
        yield running


def bearer(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"X-Opsbot-Signature": f"sha256={digest}"}


ALERT = {"target": "quizbot", "severity": "critical", "summary": "quizbot is down"}

# --------------------------------------------------------------------------- auth


async def test_bearer_token_is_required(web: Running, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="opsbot.web.server")
    for headers in (
        {},
        bearer("wrong"),
        bearer(TOKEN + "x"),
        {"Authorization": TOKEN},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer ünïcödé".encode()},  # raw UTF-8 bytes
    ):
        response = await web.post("/alerts/webhook", ALERT, headers)
        assert response.status_code == 401, headers
        assert response.json() == {"error": "missing or wrong credentials"}
    assert web.inbox.events == []
    response = await web.post("/alerts/webhook", ALERT, bearer())
    assert response.status_code == 202
    assert response.json() == {"accepted": 1}
    assert len(web.inbox.events) == 1
    assert web.sample("opsbot_webhook_rejected_total", reason="unauthorized") == 6
    refusals = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(refusals) == 6
    assert all("/alerts/webhook" in r.getMessage() for r in refusals)
    assert TOKEN not in caplog.text and "quizbot is down" not in caplog.text


async def test_hmac_signature_authorizes(web: Running) -> None:
    body = json.dumps(ALERT).encode()
    assert (await web.post("/alerts/webhook", body, signed(body))).status_code == 202
    upper = {"X-Opsbot-Signature": signed(body)["X-Opsbot-Signature"].upper()}
    assert (await web.post("/alerts/webhook", body, upper)).status_code == 202
    for headers in (
        signed(body, "another secret"),
        signed(body + b" "),
        {"X-Opsbot-Signature": "sha1=" + signed(body)["X-Opsbot-Signature"][7:]},
        {"X-Opsbot-Signature": "garbage"},
    ):
        assert (await web.post("/alerts/webhook", body, headers)).status_code == 401
    # A tampered body with the original signature is refused.
    tampered = json.dumps({**ALERT, "summary": "all fine"}).encode()
    assert (await web.post("/alerts/webhook", tampered, signed(body))).status_code == 401
    assert len(web.inbox.events) == 2


async def test_only_the_configured_method_is_accepted() -> None:
    async for web in run(settings(token=None)):
        body = json.dumps(ALERT).encode()
        # With no token configured, no bearer value matches (not even an empty one).
        for headers in (bearer(TOKEN), {"Authorization": "Bearer"}):
            assert (await web.post("/alerts/webhook", body, headers)).status_code == 401
        assert (await web.post("/alerts/webhook", body, signed(body))).status_code == 202
    async for web in run(settings(hmac_secret=None)):
        body = json.dumps(ALERT).encode()
        assert (await web.post("/alerts/webhook", body, signed(body))).status_code == 401
        assert (await web.post("/alerts/webhook", body, bearer())).status_code == 202


# --------------------------------------------------------------------------- bad input


async def test_oversize_body_is_413(web: Running) -> None:
    big = json.dumps([ALERT] * 200).encode()
    assert len(big) > MAX_BODY
    response = await web.post("/alerts/webhook", big, bearer())
    assert response.status_code == 413
    assert "4096" in response.json()["error"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked encoding
        for _ in range(100):
            yield b" " * 1024

    response = await web.http.post("/alerts/webhook", content=chunks(), headers=bearer())
    assert response.status_code == 413
    # Without credentials the body is never read: 401, not 413.
    assert (await web.post("/alerts/webhook", big)).status_code == 401
    assert web.sample("opsbot_webhook_rejected_total", reason="too_large") == 2
    assert web.inbox.events == []
    # The server is still fine.
    assert (await web.post("/alerts/webhook", ALERT, bearer())).status_code == 202


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"not json", b"\xff\xfe{}", b"[" * 2000 + b"]" * 2000, b"{} {}"],
    ids=["empty", "truncated", "text", "not-utf8", "deep", "two-documents"],
)
async def test_malformed_json_is_400(web: Running, body: bytes) -> None:
    for path in ("/alerts/webhook", "/alerts/alertmanager"):
        response = await web.post(path, body, bearer())
        assert response.status_code == 400
        assert response.json() == {"error": "body is not valid JSON"}
    assert web.sample("opsbot_webhook_rejected_total", reason="bad_json") == 2


@pytest.mark.parametrize(
    "body",
    [
        "a string",
        42,
        None,
        [1, 2],
        {},
        {"summary": ""},
        {"summary": ["x"]},
        {"summary": "x", "target": 5},
        {"summary": "x", "severity": {"a": 1}},
        {"summary": "x", "status": "exploded"},
        {"summary": "x", "fingerprint": ""},
        {"summary": "x", "labels": {"a": {"b": "c"}}},
        {"summary": "x", "labels": "a=b"},
        [ALERT, {"summary": None}],
    ],
)
async def test_wrong_shape_is_400_for_the_generic_webhook(web: Running, body: Any) -> None:
    response = await web.post("/alerts/webhook", body, bearer())
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}
    assert len(response.json()["error"]) <= 200
    assert web.inbox.events == []  # a bad item refuses the whole batch
    assert web.sample("opsbot_webhook_rejected_total", reason="bad_shape") == 1


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"alerts": "none"},
        {"alerts": [1]},
        {"alerts": [{"labels": {}}]},  # no status
        {"alerts": [{"status": "firing", "labels": ["a"]}]},
        {"alerts": [{"status": "firing", "annotations": 3}]},
    ],
)
async def test_wrong_shape_is_400_for_alertmanager(web: Running, body: Any) -> None:
    response = await web.post("/alerts/alertmanager", body, bearer())
    assert response.status_code == 400, response.text
    assert web.inbox.events == []


async def test_ingest_failure_is_503(web: Running, caplog: pytest.LogCaptureFixture) -> None:
    web.inbox.fail = True
    response = await web.post("/alerts/webhook", ALERT, bearer())
    assert response.status_code == 503
    assert response.json() == {"error": "not accepted: RuntimeError"}
    assert web.sample("opsbot_webhook_rejected_total", reason="ingest_failed") == 1
    [record] = [r for r in caplog.records if r.name == "opsbot.web.server" and r.exc_info]
    assert record.levelno == logging.ERROR and "503 ingest_failed" in record.getMessage()
    web.inbox.fail = False
    assert (await web.post("/alerts/webhook", ALERT, bearer())).status_code == 202


async def test_bodies_in_hand_past_the_cap_are_503_with_retry_after_then_taken() -> None:
    """Two bodies of ~3 KB under a 4 KB cap: while the first waits for the store, the second
    is refused with Retry-After before its body is read; sent again once the first is
    recorded, it is taken. A request alone is always taken, however close to the cap."""
    gate, entered = asyncio.Event(), asyncio.Event()

    async def held(events: list[AlertEvent]) -> None:
        entered.set()
        await gate.wait()
        await inbox(events)

    inbox = Inbox()
    server = WebServer(settings(max_in_hand_bytes=4096), held, Metrics())
    port = await server.start()
    body = [{**ALERT, "summary": f"disk {i} full " + "x" * 2900} for i in range(2)]
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            first = asyncio.create_task(
                http.post("/alerts/webhook", json=body[0], headers=bearer())
            )
            await entered.wait()  # the first body is read and waits for the store
            refused = await http.post("/alerts/webhook", json=body[1], headers=bearer())
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "2"
            assert "in hand" in refused.json()["error"]
            gate.set()
            assert (await first).status_code == 202
            again = await http.post("/alerts/webhook", json=body[1], headers=bearer())
            assert again.status_code == 202
    finally:
        await server.stop()
    assert sorted(e.summary[:6] for e in inbox.events) == ["disk 0", "disk 1"]


# --------------------------------------------------------------------------- mapping


async def test_generic_webhook_maps_fields(web: Running) -> None:
    body = [
        ALERT,
        {"target": "payments", "severity": "warn", "summary": "  slow  ", "status": "resolved",
         "fingerprint": "pay-1", "labels": {"region": "eu", "replicas": 3}},
        {"target": "unknown-svc", "summary": "who?"},
        {"summary": "no target at all", "severity": "p3"},
    ]  # fmt: skip
    response = await web.post("/alerts/webhook", body, bearer())
    assert response.json() == {"accepted": 4}
    down, slow, unknown, bare = web.inbox.events
    assert down == AlertEvent(
        source="webhook",
        fingerprint=AlertEvent.make_fingerprint("webhook", "quizbot", "quizbot is down"),
        status="firing",
        severity=Severity.critical,
        summary="quizbot is down",
        target="quizbot",
        labels={"target": "quizbot"},
    )
    assert (slow.fingerprint, slow.status, slow.severity, slow.summary, slow.target) == (
        "pay-1", "resolved", Severity.warning, "slow", "payments",
    )  # fmt: skip
    assert slow.labels == {"region": "eu", "replicas": "3", "target": "payments"}
    assert unknown.target is None and unknown.labels == {"target": "unknown-svc"}
    assert unknown.severity is Severity.warning  # no severity: warning
    assert bare.target is None and bare.severity is Severity.info
    # The same alert twice has the same fingerprint (dedup happens downstream).
    await web.post("/alerts/webhook", ALERT, bearer())
    assert web.inbox.events[-1].fingerprint == down.fingerprint
    assert web.sample("opsbot_alerts_received_total", source="webhook") == 5


async def test_alertmanager_payload_maps_fields(web: Running) -> None:
    payload = {
        "version": "4",
        "receiver": "opsbot",
        "status": "firing",
        "groupKey": "{}:{alertname=\"X\"}",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://am",
        "truncatedAlerts": 0,
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "Down", "severity": "page", "job": "payments",
                           "service": "not-a-target", "instance": "h:9100"},
                "annotations": {"description": "payments is down", "runbook": "http://rb"},
                "startsAt": "2026-11-22T10:00:00.123456789Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prom/graph",
                "fingerprint": "abc123",
            },
            {
                "status": "resolved",
                "labels": {"alertname": "DiskFull", "container": "quizbot"},
                "annotations": {},
                "startsAt": "not a time",
            },
        ],
    }  # fmt: skip
    response = await web.post("/alerts/alertmanager", payload, bearer())
    assert response.json() == {"accepted": 2}
    down, disk = web.inbox.events
    assert (down.source, down.fingerprint, down.status) == ("alertmanager", "abc123", "firing")
    assert down.severity is Severity.critical
    assert down.summary == "payments is down"
    assert down.target == "payments"  # "service" names no target, "job" does
    assert down.starts_at == datetime(2026, 11, 22, 10, 0, 0, 123456, UTC).timestamp()
    assert down.labels["instance"] == "h:9100"
    assert disk.status == "resolved" and disk.summary == "DiskFull"
    assert disk.target == "quizbot" and disk.starts_at is None
    assert disk.fingerprint == AlertEvent.make_fingerprint(
        "alertname=DiskFull", "container=quizbot"
    )
    assert disk.severity is Severity.warning


# --------------------------------------------------------------------------- health, metrics


async def test_healthz_is_open_and_metrics_need_the_token(web: Running) -> None:
    response = await web.http.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    for headers in ({}, bearer("wrong"), {"Authorization": f"Basic {TOKEN}"}):
        refused = await web.http.get("/metrics", headers=headers)
        assert refused.status_code == 401 and "opsbot_" not in refused.text
    await web.post("/alerts/webhook", ALERT)  # 401
    await web.post("/alerts/webhook", ALERT, bearer())  # 202
    web.metrics.commands_total.labels(verb="restart", outcome="ok").inc()
    with web.metrics.time_executor("ssh"):
        pass
    response = await web.http.get("/metrics", headers=bearer())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'opsbot_webhook_rejected_total{reason="unauthorized"} 4.0' in text
    assert 'opsbot_webhook_rejected_total{reason="too_large"} 0.0' in text
    assert 'opsbot_alerts_received_total{source="webhook"} 1.0' in text
    assert 'opsbot_commands_total{outcome="ok",verb="restart"} 1.0' in text
    assert 'opsbot_executor_seconds_count{kind="ssh"} 1.0' in text
    assert TOKEN not in text and SECRET not in text
    assert (await web.http.post("/metrics")).status_code == 405
    assert (await web.http.get("/alerts/webhook")).status_code == 405


async def test_metrics_name_filter_serves_only_the_series_asked_for(web: Running) -> None:
    """Prometheus' ``name[]``: a probe of one gauge gets it alone, not every target's SLI
    series (at 10,000 targets those are ~9 MB and a second of CPU a scrape)."""
    web.metrics.slo_totals["quizbot"] = [0.0] * (SLI_BUCKETS + len(LATENCY_BUCKETS) + 1)
    web.metrics.commands_total.labels(verb="health", outcome="ok").inc()
    everything = (await web.http.get("/metrics", headers=bearer())).text
    assert 'opsbot_slo_rounds_total{target="quizbot"}' in everything
    asked = "name[]=opsbot_commands_total&name[]=opsbot_monitor_checks_in_flight"
    response = await web.http.get(f"/metrics?{asked}", headers=bearer())
    assert response.status_code == 200
    text = response.text
    assert 'opsbot_commands_total{outcome="ok",verb="health"} 1.0' in text
    assert "opsbot_monitor_checks_in_flight 0.0" in text
    assert "quizbot" not in text and "opsbot_webhook_rejected_total" not in text
    slo = await web.http.get("/metrics?name[]=opsbot_slo_rounds_total", headers=bearer())
    assert 'opsbot_slo_rounds_total{target="quizbot"} 0.0' in slo.text
    refused = await web.http.get(f"/metrics?{asked}")
    assert refused.status_code == 401 and "opsbot_commands_total" not in refused.text


def test_a_full_scrape_renders_the_sli_series_a_chunk_at_a_time_as_one_block_each() -> None:
    """The chunked rendering is the exposition prometheus-client gives in one go, to the byte
    (one header per family, each family's samples together), for more targets than a chunk."""
    metrics = Metrics()
    width = SLI_BUCKETS + len(LATENCY_BUCKETS) + 1
    for n in range(1203):
        metrics.slo_totals[f"bot-{n}"] = [float(n % 7 + k) for k in range(width)]
    metrics.commands_total.labels(verb="health", outcome="ok").inc()
    text = metrics.render()
    assert text == generate_latest(metrics.registry)
    assert text.count(b"# TYPE opsbot_slo_round_seconds histogram") == 1
    assert b'opsbot_slo_rounds_total{target="bot-1202"} 5.0' in text
    empty = Metrics()
    assert empty.render() == generate_latest(empty.registry)  # no targets: the headers alone


async def test_healthz_follows_the_callback_and_says_nothing_more() -> None:
    state: dict[str, Any] = {"store": "sqlite", "targets": 2}

    async def healthy() -> dict[str, Any]:
        if state.get("broken"):
            raise ConnectionError("store down at redis://:hunter2@10.0.0.5")
        return state

    async for web in run(healthy=healthy):
        response = await web.http.get("/healthz")
        assert (response.status_code, response.json()) == (200, {"status": "ok"})
        state["status"] = "degraded"
        response = await web.http.get("/healthz")
        assert (response.status_code, response.json()) == (503, {"status": "error"})
        state["broken"] = True
        response = await web.http.get("/healthz")
        assert (response.status_code, response.json()) == (503, {"status": "error"})


async def test_metrics_public_serves_metrics_without_the_token() -> None:
    async for web in run(settings(metrics_public=True)):
        response = await web.http.get("/metrics")
        assert response.status_code == 200 and "opsbot_commands_total" in response.text


async def test_two_servers_and_restart() -> None:
    config = settings()
    async for one in run(config):
        async for two in run(config):
            assert one.url != two.url
            assert (await two.post("/alerts/webhook", ALERT, bearer())).status_code == 202
            assert one.sample("opsbot_alerts_received_total", source="webhook") == 0
        await one.server.stop()
        await one.server.stop()  # twice is fine
        port = await one.server.start()
        assert port > 0


# --------------------------------------------------------------------------- real Alertmanager


async def test_real_alertmanager_fires_and_resolves(
    web: Running, alertmanager_factory: AlertmanagerFactory
) -> None:
    started = time.monotonic()
    with alertmanager_factory(f"{web.url}/alerts/alertmanager", TOKEN) as am:
        ready = time.monotonic()
        labels = {"alertname": "QuizbotDown", "severity": "critical", "service": "quizbot",
                  "instance": "10.0.0.5:8080"}  # fmt: skip
        annotations = {"summary": "quizbot returns 502", "description": "long text"}
        begin = datetime.now(UTC) - timedelta(seconds=5)
        await post_alerts(am, [{"labels": labels, "annotations": annotations,
                                "startsAt": rfc3339(begin)}])  # fmt: skip
        firing = await web.inbox.wait_for(lambda e: e.status == "firing")
        fired = time.monotonic()
        assert firing.source == "alertmanager"
        assert firing.severity is Severity.critical
        assert firing.summary == "quizbot returns 502"
        assert firing.target == "quizbot"
        assert firing.labels == labels
        assert len(firing.fingerprint) == 16  # Alertmanager's own: 16 hex digits
        int(firing.fingerprint, 16)
        assert firing.starts_at is not None and abs(firing.starts_at - begin.timestamp()) < 1

        await post_alerts(am, [{"labels": labels, "annotations": annotations,
                                "startsAt": rfc3339(begin), "endsAt": rfc3339()}])  # fmt: skip
        resolved = await web.inbox.wait_for(lambda e: e.status == "resolved")
        done = time.monotonic()
        assert resolved.fingerprint == firing.fingerprint
        assert resolved.target == "quizbot"
    assert web.sample("opsbot_webhook_rejected_total", reason="unauthorized") == 0
    print(
        f"alertmanager ready {ready - started:.2f}s, firing {fired - ready:.2f}s, "
        f"resolved {done - fired:.2f}s"
    )


async def test_real_alertmanager_retries_after_a_503(
    web: Running, alertmanager_factory: AlertmanagerFactory
) -> None:
    web.inbox.fail = True  # e.g. the store is briefly down
    with alertmanager_factory(f"{web.url}/alerts/alertmanager", TOKEN) as am:
        labels = {"alertname": "PaymentsSlow", "job": "payments", "severity": "warning"}
        began = datetime.now(UTC) - timedelta(seconds=5)
        await post_alerts(am, [{"labels": labels, "startsAt": rfc3339(began)}])
        async with asyncio.timeout(15):
            while web.sample("opsbot_webhook_rejected_total", reason="ingest_failed") < 1:
                await asyncio.sleep(0.05)
        web.inbox.fail = False
        event = await web.inbox.wait_for(lambda e: e.labels == labels)
        assert (event.status, event.target, event.severity) == (
            "firing", "payments", Severity.warning,
        )  # fmt: skip
