"""opsbot's HTTP server, run inside opsbot's own event loop: alert webhooks, health, metrics.

Routes:

- ``POST /alerts/alertmanager`` — Alertmanager's webhook payload (version 4), one
  :class:`AlertEvent` per alert, source ``alertmanager``.
- ``POST /alerts/webhook`` — a generic JSON object ``{target, severity, summary, fingerprint?,
  status?, labels?}`` or a list of them, source ``webhook``.
- ``GET /healthz`` — ``{"status": "ok"}`` (503 ``{"status": "error"}`` when the health
  callback fails), no auth, and nothing more: it is what a load balancer may ask anyone.
- ``GET /metrics`` — Prometheus text exposition (``?name[]=…``: those series only), behind
  ``Authorization: Bearer <web.token>`` (Prometheus' ``authorization`` scrape setting) unless
  ``web.metrics_public: true``.
- ``GET /status``, ``/status.json``, ``/status.atom`` — the status page, when one is passed
  (``statuspage.py``); any other ``routes`` passed add theirs (the Mini App's ``/board``).
- ``POST <path of telegram.webhook.url>`` (webhook mode) — Telegram's updates, accepted only
  with the right ``X-Telegram-Bot-Api-Secret-Token`` (compared in constant time; missing or
  wrong: 401 and nothing runs), answered 200 as soon as the update is queued, 503 while
  opsbot is starting or stopping (so Telegram sends it again, maybe to another replica).

Both webhooks need ``Authorization: Bearer <web.token>`` or ``X-Opsbot-Signature:
sha256=<hex HMAC-SHA256 of the raw body keyed with web.hmac_secret>``. Bad input never causes
a 500: 401 (auth), 413 (body over ``web.max_body_bytes``), 400 (not JSON, wrong shape) or
503 (``ingest`` raised; the sender should retry, as Alertmanager does). Each refusal is logged
at WARNING without the body or any credential, and counted in ``webhook_rejected_total``.

Back-pressure: the webhook bodies in hand (read or being read, their alerts not yet recorded)
are capped at ``web.max_in_hand_bytes`` (2 MB) together; a request past it is answered 503
with ``Retry-After`` before its body is read (one request alone is always taken). In a storm
that is what bounds memory: without it ~40,000 parsed Alertmanager events waited for the store
(~45 MiB of JSON, bodies and events). Alertmanager retries a 503, so nothing is lost; such a
refusal is logged at INFO (``busy``), counted like the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Protocol

from aiohttp import web

from opsbot.alerting.event import AlertEvent, Severity
from opsbot.config import Settings
from opsbot.metrics import Metrics
from opsbot.web.coalesce import Coalescer
from opsbot.web.statuspage import StatusPage

log = logging.getLogger(__name__)

Ingest = Callable[[list[AlertEvent]], Awaitable[None]]
Healthy = Callable[[], Awaitable[Mapping[str, Any]]]

SIGNATURE_HEADER = "X-Opsbot-Signature"
TELEGRAM_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"  # noqa: S105 (a header name)
# Queues one update; False when the bot is not running (starting or stopping): 503, resent.
AcceptUpdate = Callable[[dict[str, Any]], Awaitable[bool]]
# Alertmanager labels that may name an opsbot target, in order of preference.
TARGET_LABELS = ("target", "service", "job", "container")
MAX_SUMMARY_CHARS = 2000
RETRY_AFTER_S = 2  # what a webhook refused for back-pressure is told to wait


class Routes(Protocol):
    def add_routes(self, app: web.Application) -> None: ...


class _Rejected(Exception):
    """A request refused with ``status``; ``reason`` is the metrics label."""

    def __init__(
        self, status: int, reason: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        message = message if len(message) <= 200 else message[:199] + "…"
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.headers = dict(headers or {})


def _bad_shape(message: str) -> _Rejected:
    return _Rejected(400, "bad_shape", message)


class WebServer:
    """The aiohttp application and its site; ``start()`` binds, ``stop()`` closes."""

    def __init__(
        self,
        settings: Settings,
        ingest: Ingest,
        metrics: Metrics,
        *,
        healthy: Healthy | None = None,
        status_page: StatusPage | None = None,
        routes: Sequence[Routes] = (),
    ) -> None:
        self._settings = settings
        self._web = settings.web
        self._ingest = Coalescer(ingest)  # concurrent requests, one ingest call
        self._metrics = metrics
        self._healthy = healthy
        self._status_page = status_page
        self._routes = tuple(routes)
        self._token = (self._web.token.get_secret_value() if self._web.token else "").encode()
        self._hmac_secret = (
            self._web.hmac_secret.get_secret_value().encode() if self._web.hmac_secret else b""
        )
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._telegram: tuple[str, bytes, AcceptUpdate] | None = None
        self._in_hand = 0  # bytes of webhook bodies read or being read, not yet recorded

    def serve_telegram(self, path: str, secret: str, accept: AcceptUpdate) -> None:
        """Also accept Telegram's webhook POSTs at ``path`` (call before ``start``)."""
        self._telegram = (path, secret.encode(), accept)

    # ------------------------------------------------------------------ lifecycle

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=self._web.max_body_bytes)
        app.router.add_post("/alerts/alertmanager", self._alertmanager)
        app.router.add_post("/alerts/webhook", self._generic)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics_page)
        if self._status_page is not None:
            self._status_page.add_routes(app)
        for routes in self._routes:
            routes.add_routes(app)
        if self._telegram is not None:
            app.router.add_post(self._telegram[0], self._telegram_update)
        return app

    async def start(self) -> int:
        """Bind ``web.host:web.port`` (port 0 picks a free one) and return the bound port."""
        if self._runner is not None:
            raise RuntimeError("the web server is already running")
        if not self._token and not self._hmac_secret:
            raise RuntimeError("the web server needs web.token or web.hmac_secret")
        runner = web.AppRunner(self.make_app(), shutdown_timeout=5.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._web.host, self._web.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("web server listening on %s:%d", self._web.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening and finish in-flight requests (up to 5 s). Safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("web server stopped")

    # ------------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        """Up or not, nothing more: the callback's details stay in the log."""
        if self._healthy is not None:
            try:
                details = await self._healthy()
            except Exception as exc:
                log.warning("healthz: health callback failed: %s", type(exc).__name__)
                return _json({"status": "error"}, 503)
            if details.get("status", "ok") != "ok":
                return _json({"status": "error"}, 503)
        return _json({"status": "ok"}, 200)

    async def _metrics_page(self, request: web.Request) -> web.Response:
        if not self._web.metrics_public and not self._bearer_ok(request):
            rejected = _Rejected(401, "unauthorized", "metrics need the bearer token")
            return self._reject(request, rejected)
        # In a thread: at 10,000 targets with objectives the text is ~9 MB and takes a second
        # or more to write, which on the event loop would stall every chat for as long.
        names = request.query.getall("name[]", [])
        body = await asyncio.to_thread(self._metrics.render, names)
        return web.Response(body=body, headers={"Content-Type": self._metrics.content_type})

    async def _telegram_update(self, request: web.Request) -> web.Response:
        """One update from Telegram: checked, parsed, queued; 200 means "do not resend"."""
        assert self._telegram is not None
        _, secret, accept = self._telegram
        given = request.headers.get(TELEGRAM_SECRET_HEADER, "").encode("utf-8", "replace")
        if not hmac.compare_digest(given, secret):
            return self._reject(request, _Rejected(401, "unauthorized", "wrong secret token"))
        try:
            update = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            return self._reject(request, _Rejected(413, "too_large", "body too large"))
        except (ValueError, RecursionError):
            return self._reject(request, _Rejected(400, "bad_json", "body is not valid JSON"))
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return self._reject(request, _bad_shape("expected an Update with an update_id"))
        try:
            queued = await accept(update)
        except Exception as exc:  # a malformed update: Telegram would resend it forever
            return self._reject(
                request, _bad_shape(f"not an Update: {type(exc).__name__}"), exc_info=True
            )
        if not queued:  # starting or stopping: Telegram (or the proxy) sends it again
            return _json({"error": "not running, send it again"}, 503)
        return _json({"ok": True}, 200)

    async def _alertmanager(self, request: web.Request) -> web.Response:
        return await self._webhook(request, "alertmanager", self._parse_alertmanager)

    async def _generic(self, request: web.Request) -> web.Response:
        return await self._webhook(request, "webhook", self._parse_generic)

    async def _webhook(
        self, request: web.Request, source: str, parse: Callable[[Any], list[AlertEvent]]
    ) -> web.Response:
        # Claimed before the body is read (its announced length, else the most it may be),
        # given back once its alerts are recorded or refused.
        size = min(request.content_length or self._web.max_body_bytes, self._web.max_body_bytes)
        self._in_hand += size
        try:
            try:
                events = parse(await self._authorized_json(request, size))
            except _Rejected as rejected:
                busy = rejected.reason == "busy"
                return self._reject(request, rejected, level=logging.INFO if busy else None)
            if events:
                try:
                    await self._ingest(events)
                except Exception as exc:  # the sender retries a 503 (Alertmanager does)
                    name = type(exc).__name__
                    failed = _Rejected(503, "ingest_failed", f"not accepted: {name}")
                    return self._reject(request, failed, level=logging.ERROR, exc_info=True)
                self._metrics.alerts_received_total.labels(source=source).inc(len(events))
            return _json({"accepted": len(events)}, 202)
        finally:
            self._in_hand -= size

    def _reject(
        self,
        request: web.Request,
        rejected: _Rejected,
        *,
        level: int | None = None,
        exc_info: bool = False,
    ) -> web.Response:
        """Count, log (never the body or a credential) and answer a refusal."""
        self._metrics.webhook_rejected_total.labels(reason=rejected.reason).inc()
        log.log(
            logging.WARNING if level is None else level,
            "webhook %s from %s refused (%d %s): %s",
            request.path, request.remote, rejected.status, rejected.reason, rejected.message,
            exc_info=exc_info,
        )  # fmt: skip
        response = _json({"error": rejected.message}, rejected.status)
        response.headers.update(rejected.headers)
        return response

    # ------------------------------------------------------------------ auth and body

    def _bearer_ok(self, request: web.Request) -> bool:
        if not self._token:
            return False
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = credentials.strip().encode("utf-8", "replace")
        return hmac.compare_digest(given, self._token)

    def _signature_ok(self, signature: str, body: bytes) -> bool:
        algorithm, _, given = signature.strip().partition("=")
        if algorithm.lower() != "sha256":
            return False
        expected = hmac.new(self._hmac_secret, body, hashlib.sha256).hexdigest()
        given_bytes = given.strip().lower().encode("utf-8", "replace")
        return hmac.compare_digest(given_bytes, expected.encode())

    async def _authorized_json(self, request: web.Request, claimed: int) -> Any:
        """The parsed body of an authorized request, or _Rejected; ``claimed``: the bytes
        this request holds of ``web.max_in_hand_bytes`` (503 when the others fill it)."""
        bearer = self._bearer_ok(request)
        signature = request.headers.get(SIGNATURE_HEADER)
        if not bearer and not (self._hmac_secret and signature):
            # Refused before reading the body: strangers cannot make us buffer anything.
            raise _Rejected(401, "unauthorized", "missing or wrong credentials")
        limit = self._web.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise _Rejected(413, "too_large", f"body over {limit} bytes")
        if self._in_hand > max(claimed, self._web.max_in_hand_bytes):
            raise _Rejected(
                503, "busy", f"over {self._web.max_in_hand_bytes} bytes of alerts in hand",
                {"Retry-After": str(RETRY_AFTER_S)},
            )  # fmt: skip
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise _Rejected(413, "too_large", f"body over {limit} bytes") from None
        if not bearer and not (signature and self._signature_ok(signature, body)):
            raise _Rejected(401, "unauthorized", "missing or wrong credentials")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            raise _Rejected(400, "bad_json", "body is not valid JSON") from None

    # ------------------------------------------------------------------ payloads

    def _target(self, *names: object) -> str | None:
        """The first of `names` that is a configured target."""
        return next((n for n in names if isinstance(n, str) and n in self._settings.targets), None)

    def _parse_alertmanager(self, payload: Any) -> list[AlertEvent]:
        """Alertmanager's webhook (version 4): one event per alert in ``alerts``."""
        if not isinstance(payload, dict):
            raise _bad_shape("expected an Alertmanager webhook object")
        alerts = payload.get("alerts")
        if not isinstance(alerts, list):
            raise _bad_shape("alerts: expected a list")
        events = []
        for index, alert in enumerate(alerts):
            where = f"alerts[{index}]"
            if not isinstance(alert, dict):
                raise _bad_shape(f"{where}: expected an object")
            status = _status(alert.get("status"), where, default=None)
            labels = _str_map(alert.get("labels"), f"{where}.labels")
            annotations = _str_map(alert.get("annotations"), f"{where}.annotations")
            fingerprint = alert.get("fingerprint")
            if not isinstance(fingerprint, str) or not fingerprint:
                fingerprint = AlertEvent.make_fingerprint(
                    *(f"{k}={v}" for k, v in sorted(labels.items()))
                )
            summary = (
                annotations.get("summary")
                or annotations.get("description")
                or labels.get("alertname")
                or "alert"
            )
            events.append(
                AlertEvent(
                    source="alertmanager",
                    fingerprint=fingerprint,
                    status=status,
                    severity=Severity.parse(labels.get("severity")),
                    summary=summary[:MAX_SUMMARY_CHARS],
                    target=self._target(*(labels.get(k) for k in TARGET_LABELS)),
                    starts_at=_timestamp(alert.get("startsAt")),
                    labels=labels,
                )
            )
        return events

    def _parse_generic(self, payload: Any) -> list[AlertEvent]:
        """``{target, severity, summary, fingerprint?, status?, labels?}`` or a list of them.

        A target opsbot does not know is kept in ``labels["target"]`` and the event has no
        target, rather than losing the alert.
        """
        items = payload if isinstance(payload, list) else [payload]
        events = []
        for index, item in enumerate(items):
            where = f"[{index}]" if isinstance(payload, list) else "body"
            if not isinstance(item, dict):
                raise _bad_shape(f"{where}: expected an object")
            summary = item.get("summary")
            if not isinstance(summary, str) or not summary.strip():
                raise _bad_shape(f"{where}.summary: expected a non-empty string")
            target = item.get("target")
            if target is not None and not isinstance(target, str):
                raise _bad_shape(f"{where}.target: expected a string")
            severity = item.get("severity")
            if severity is not None and not isinstance(severity, str):
                raise _bad_shape(f"{where}.severity: expected a string")
            fingerprint = item.get("fingerprint")
            if fingerprint is not None and (not isinstance(fingerprint, str) or not fingerprint):
                raise _bad_shape(f"{where}.fingerprint: expected a non-empty string")
            labels = _str_map(item.get("labels"), f"{where}.labels")
            if target is not None:
                labels.setdefault("target", target)
            events.append(
                AlertEvent(
                    source="webhook",
                    fingerprint=fingerprint
                    or AlertEvent.make_fingerprint("webhook", target or "", summary.strip()),
                    status=_status(item.get("status"), where, default="firing"),
                    severity=Severity.parse(severity),
                    summary=summary.strip()[:MAX_SUMMARY_CHARS],
                    target=self._target(target),
                    labels=labels,
                )
            )
        return events


# ---------------------------------------------------------------------- helpers


def _json(body: Mapping[str, Any], status: int) -> web.Response:
    return web.Response(
        text=json.dumps(body, default=str), status=status, content_type="application/json"
    )


def _status(
    value: object, where: str, default: Literal["firing", "resolved"] | None
) -> Literal["firing", "resolved"]:
    if value is None and default is not None:
        return default
    if value == "firing":
        return "firing"
    if value == "resolved":
        return "resolved"
    raise _bad_shape(f"{where}.status: expected 'firing' or 'resolved'")


def _str_map(value: object, where: str) -> dict[str, str]:
    """A JSON object of scalar values as ``dict[str, str]`` (absent or null: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad_shape(f"{where}: expected an object")
    out = {}
    for key, item in value.items():
        if isinstance(item, dict | list):
            raise _bad_shape(f"{where}.{key}: expected a string")
        out[str(key)] = item if isinstance(item, str) else json.dumps(item)
    return out


def _timestamp(value: object) -> float | None:
    """An RFC 3339 time (Alertmanager's startsAt) as epoch seconds; None if absent/odd."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None or moment.year < 1970:
        return None
    return moment.timestamp()
