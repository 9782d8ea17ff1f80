"""The public status page: ``GET /status`` (HTML), ``/status.json`` and ``/status.atom``.

Built only from two public sources, so nothing internal can reach it: the components'
monitor history (``status_history``: state and uptime per component, target names never
shown) and the incidents' public updates (``status_updates``: phase and text a person posted
with ``/incident public``). The HTML is one small server-rendered page: no scripts, no
external assets, ``<meta http-equiv="refresh">`` to stay current, semantic landmarks, a table
with headers, states in words (not colour alone) and colours that pass WCAG AA on white.

``status_page.public: false`` puts all three behind ``web.token`` (``Authorization: Bearer``,
or HTTP Basic with the token as password so a browser can ask for it).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from xml.etree import ElementTree as ET

from aiohttp import web

from opsbot.alerting import status_history
from opsbot.config import Settings
from opsbot.incidents import public as status_updates
from opsbot.incidents.public import PublicIncident
from opsbot.objectives import public as objectives
from opsbot.state.store import Store
from opsbot.web import slo_bars

RESOLVED_DAYS = 90
FEED_ENTRIES = 50
ATOM = "http://www.w3.org/2005/Atom"
STATES = {
    "ok": ("Operational", "✓"),
    "warn": ("Degraded performance", "!"),
    "fail": ("Outage", "✕"),
}


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    description: str
    state: str  # ok | warn | fail
    uptime: dict[str, float]  # window label (24h, 7d, 30d) → percent
    objective: objectives.ComponentObjective | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    title: str
    generated: float
    components: tuple[Component, ...]
    open: tuple[PublicIncident, ...]
    resolved: tuple[PublicIncident, ...]

    @property
    def overall(self) -> str:
        worst = max((c.state for c in self.components), key=status_history.RANK.__getitem__,
                    default="ok")  # fmt: skip
        if worst == "fail":
            return "Some systems are down"
        if worst == "warn" or self.open:
            return "Some systems are degraded" if worst == "warn" else "Incident in progress"
        return "All systems operational"

    @property
    def overall_state(self) -> str:
        worst = max((c.state for c in self.components), key=status_history.RANK.__getitem__,
                    default="ok")  # fmt: skip
        return "warn" if worst == "ok" and self.open else worst


async def snapshot(settings: Settings, store: Store, now: float) -> Snapshot:
    page = settings.status_page
    components = []
    for component in page.components:
        histories = [await status_history.get(store, t) for t in component.targets]
        state = max((h.state for h in histories), key=status_history.RANK.__getitem__,
                    default="ok")  # fmt: skip
        uptime = {
            label: status_history.uptime(histories, now - seconds, now)
            for label, seconds in status_history.WINDOWS
        }
        objective = None
        if settings.objectives.enabled:
            objective = await objectives.component(
                store, settings, component.name, component.targets, now
            )
        components.append(
            Component(component.name, component.description, state, uptime, objective)
        )
    records = await status_updates.all_records(store)
    cutoff = now - RESOLVED_DAYS * 86400
    return Snapshot(
        title=page.title,
        generated=now,
        components=tuple(components),
        open=tuple(r for r in records if not r.resolved),
        resolved=tuple(r for r in records if r.resolved and r.updated >= cutoff),
    )


# --------------------------------------------------------------------------- renderings


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _human(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _percent(value: float) -> str:
    return f"{value:.2f}%" if value < 100 else "100%"


def _incident_json(record: PublicIncident) -> dict[str, object]:
    return {
        "id": record.id,
        "phase": record.phase,
        "components": list(record.components),
        "started": iso(record.started),
        "updated": iso(record.updated),
        "updates": [
            {"at": iso(u.at), "phase": u.phase, "text": u.text} for u in reversed(record.updates)
        ],
    }


def as_json(snap: Snapshot) -> dict[str, object]:
    return {
        "title": snap.title,
        "generated": iso(snap.generated),
        "status": {"state": snap.overall_state, "description": snap.overall},
        "components": [
            {
                "name": c.name,
                "description": c.description,
                "state": c.state,
                "state_text": STATES[c.state][0],
                "uptime": {k: round(v, 3) for k, v in c.uptime.items()},
                "objective": slo_bars.as_json(c.objective),
            }
            for c in snap.components
        ],
        "incidents": {
            "open": [_incident_json(r) for r in snap.open],
            "resolved": [_incident_json(r) for r in snap.resolved],
        },
    }


def _heading(record: PublicIncident) -> str:
    affected = f" — {', '.join(record.components)}" if record.components else ""
    return f"Incident {record.id}{affected}"


def _incident_html(record: PublicIncident) -> str:
    items = "".join(
        f'<li><p><strong class="phase">{escape(u.phase.title())}</strong> '
        f'<time datetime="{iso(u.at)}">{_human(u.at)}</time></p>'
        f"<p>{escape(u.text)}</p></li>"
        for u in reversed(record.updates)
    )
    return (
        f'<article class="incident" id="{escape(record.id)}">'
        f"<h3>{escape(_heading(record))}</h3>"
        f'<p class="meta">{escape(record.phase.title())} · since '
        f'<time datetime="{iso(record.started)}">{_human(record.started)}</time></p>'
        f'<ol class="updates" reversed>{items}</ol></article>'
    )


_CSS = """
:root{color-scheme:light;--ok:#116329;--warn:#7d4e00;--fail:#b42318;--line:#d0d7de}
body{font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2328;
background:#fff}
header,main,footer{max-width:52rem;margin:0 auto;padding:0 1rem}
h1{font-size:1.75rem;margin:1.5rem 0 .5rem}
h2{font-size:1.25rem;margin:2rem 0 .5rem}
h3{font-size:1.05rem;margin:.25rem 0}
.overall{font-size:1.15rem;font-weight:600;padding:.75rem 1rem;border-radius:6px;
border:2px solid currentColor}
.ok{color:var(--ok)}.warn{color:var(--warn)}.fail{color:var(--fail)}
table{border-collapse:collapse;width:100%}
caption{text-align:left;color:#59636e;padding:.25rem 0}
th,td{text-align:left;padding:.5rem;border-bottom:1px solid var(--line)}
th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
.desc{display:block;font-weight:400;color:#59636e;font-size:.9rem}
.incident{border-left:4px solid var(--line);padding:0 0 0 1rem;margin:1rem 0}
.meta{color:#59636e;margin:.25rem 0}
.updates{padding-left:1.25rem}.updates p{margin:.15rem 0}
footer{color:#59636e;font-size:.9rem;margin:2rem auto}
a{color:#0550ae}
@media (max-width:36rem){
table,tbody,caption{display:block}
thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
tbody tr{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));
border-bottom:1px solid var(--line);padding:.4rem 0}
tbody th,tbody td{display:block;border:0;padding:.1rem .25rem}
tbody th,tbody td:nth-child(2){grid-column:1/-1}
td.num{text-align:left}
td.num::before{content:attr(data-label) " ";color:#59636e;font-size:.85rem}
}
"""


def _component_row(c: Component) -> str:
    label, icon = STATES[c.state]
    description = f'<span class="desc">{escape(c.description)}</span>' if c.description else ""
    uptimes = "".join(
        f'<td class="num" data-label="{_LABELS[k]}">{_percent(c.uptime[k])}</td>'
        for k, _ in status_history.WINDOWS
    )
    return (
        f'<tr><th scope="row">{escape(c.name)}{description}</th>'
        f'<td class="{c.state}"><span aria-hidden="true">{icon} </span>{label}</td>'
        f"{uptimes}</tr>"
    )


_LABELS = {"24h": "24 h", "7d": "7 d", "30d": "30 d"}


def as_html(snap: Snapshot, refresh: int) -> str:
    rows = "".join(_component_row(c) for c in snap.components)
    slos = "".join(slo_bars.as_html(c.name, c.objective) for c in snap.components)
    history = (
        '<section aria-labelledby="availability"><h2 id="availability">Availability, last '
        f"{objectives.BARS} days</h2>{slos}</section>"
        if slos
        else ""
    )
    opened = "".join(_incident_html(r) for r in snap.open) or "<p>No open incidents.</p>"
    resolved = (
        "".join(_incident_html(r) for r in snap.resolved)
        or f"<p>No incidents in the last {RESOLVED_DAYS} days.</p>"
    )
    title = escape(snap.title)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{refresh}">
<title>{title}</title>
<link rel="alternate" type="application/atom+xml" title="{title}" href="status.atom">
<style>{_CSS}{slo_bars.CSS}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="overall {snap.overall_state}" role="status">{escape(snap.overall)}</p>
</header>
<main>
<section aria-labelledby="components">
<h2 id="components">Components</h2>
<table>
<caption>Current state and uptime (share of time not in outage)</caption>
<thead><tr><th scope="col">Component</th><th scope="col">State</th>
<th scope="col" class="num">24 hours</th><th scope="col" class="num">7 days</th>
<th scope="col" class="num">30 days</th></tr></thead>
<tbody>{rows}</tbody>
</table>
</section>
{history}
<section aria-labelledby="open-incidents">
<h2 id="open-incidents">Open incidents</h2>
{opened}
</section>
<section aria-labelledby="resolved-incidents">
<h2 id="resolved-incidents">Resolved incidents (last {RESOLVED_DAYS} days)</h2>
{resolved}
</section>
</main>
<footer>
<p>Updated <time datetime="{iso(snap.generated)}">{_human(snap.generated)}</time>;
this page reloads every {refresh} seconds.
<a href="status.json">JSON</a> · <a href="status.atom">Atom feed</a></p>
</footer>
</body>
</html>
"""


def as_atom(snap: Snapshot, feed_url: str, page_url: str) -> bytes:
    """One entry per public update, newest first."""
    ET.register_namespace("", ATOM)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    updates = sorted(
        ((r, n, u) for r in (*snap.open, *snap.resolved) for n, u in enumerate(r.updates, 1)),
        key=lambda item: item[2].at,
        reverse=True,
    )[:FEED_ENTRIES]
    feed = ET.Element(f"{{{ATOM}}}feed")
    sub(feed, "id", feed_url)
    sub(feed, "title", snap.title)
    sub(feed, "updated", iso(updates[0][2].at if updates else snap.generated))
    sub(feed, "link", rel="self", href=feed_url)
    sub(feed, "link", rel="alternate", href=page_url)
    author = sub(feed, "author")
    sub(author, "name", snap.title)
    for record, number, update in updates:
        entry = sub(feed, "entry")
        sub(entry, "id", f"{feed_url}#{record.id}-{number}")
        sub(entry, "title", f"{update.phase.title()}: {_heading(record)}")
        sub(entry, "updated", iso(update.at))
        sub(entry, "link", rel="alternate", href=f"{page_url}#{record.id}")
        sub(entry, "content", update.text, type="text")
    return bytes(ET.tostring(feed, encoding="utf-8", xml_declaration=True))


# --------------------------------------------------------------------------- the routes


class StatusPage:
    """The three routes; ``add_routes`` is all the web server calls."""

    def __init__(
        self, settings: Settings, store: Store, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._settings = settings
        self._store = store
        self._clock = clock
        token = settings.web.token
        self._token = token.get_secret_value().encode() if token is not None else b""

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/status", self._html)
        app.router.add_get("/status.json", self._json)
        app.router.add_get("/status.atom", self._atom)

    def _authorized(self, request: web.Request) -> bool:
        if self._settings.status_page.public:
            return True
        if not self._token:
            return False
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        given = credentials.strip()
        if scheme.lower() == "basic":
            try:
                given = base64.b64decode(given, validate=True).decode().partition(":")[2]
            except (binascii.Error, UnicodeDecodeError):
                return False
        elif scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

    async def _snapshot(self, request: web.Request) -> Snapshot:
        if not self._authorized(request):
            raise web.HTTPUnauthorized(
                text="this status page needs the web token",
                headers={"WWW-Authenticate": 'Basic realm="status", charset="UTF-8"'},
            )
        return await snapshot(self._settings, self._store, self._clock())

    async def _html(self, request: web.Request) -> web.Response:
        snap = await self._snapshot(request)
        return web.Response(
            text=as_html(snap, self._settings.status_page.refresh),
            content_type="text/html",
            headers=_headers(self._settings),
        )

    async def _json(self, request: web.Request) -> web.Response:
        snap = await self._snapshot(request)
        return web.Response(
            text=json.dumps(as_json(snap), ensure_ascii=False),
            content_type="application/json",
            headers=_headers(self._settings),
        )

    async def _atom(self, request: web.Request) -> web.Response:
        snap = await self._snapshot(request)
        url = request.url.with_query(None)
        return web.Response(
            body=as_atom(snap, str(url), str(url.with_path("/status"))),
            content_type="application/atom+xml",
            headers=_headers(self._settings),
        )


def _headers(settings: Settings) -> dict[str, str]:
    scope = "public" if settings.status_page.public else "private"
    return {
        "Cache-Control": f"{scope}, no-cache",
        "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
        "X-Content-Type-Options": "nosniff",
    }
