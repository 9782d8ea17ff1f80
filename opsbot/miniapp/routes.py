"""The board's HTTP side, added to opsbot's web server: ``/board`` and its API.

- ``GET /board`` — the page (``static/board.html``), ``/board/static/{board.js,board.css}``.
- ``GET /board/api/state`` — the board (``snapshot.board``) for the person who opened it.
- ``POST /board/api/act`` — one action (``acting``), a JSON object ``{"do": …}``.

Both API routes need ``Authorization: tma <initData>``: Telegram's signed launch data,
checked by ``initdata.validate`` against this bot's token, no older than ``miniapp.max_age``,
for a configured person. Anything else is 401 with the same body whatever went wrong (forged,
expired, another bot's, missing, not a person), and nothing runs; each person has
``miniapp.requests_per_minute`` calls a minute (429 beyond). Every answer carries a
Content-Security-Policy without inline scripts, whose ``frame-ancestors`` are Telegram's web
clients (the phone and desktop apps show the page in a web view, not a frame).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from opsbot.config import Person
from opsbot.miniapp import initdata, snapshot
from opsbot.miniapp.acting import Acting, BadAction
from opsbot.services import Services

log = logging.getLogger(__name__)

TELEGRAM_SCRIPT = "https://telegram.org/js/telegram-web-app.js"
FRAME_ANCESTORS = "https://web.telegram.org"
CSP = (
    "default-src 'none'; script-src 'self' https://telegram.org; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    f"frame-ancestors {FRAME_ANCESTORS}"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
STATIC = {
    "board.js": "application/javascript",
    "board.css": "text/css",
}
MAX_BODY = 4096
UNAUTHORIZED = {"error": "open this from Telegram"}


class RateLimit:
    """At most ``per_minute`` calls per person in any 60 s (in this replica)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._per_minute = per_minute
        self._clock = clock
        self._calls: dict[int, deque[float]] = {}

    def allow(self, user_id: int) -> bool:
        now = self._clock()
        calls = self._calls.setdefault(user_id, deque())
        while calls and calls[0] <= now - 60:
            calls.popleft()
        if len(calls) >= self._per_minute:
            return False
        calls.append(now)
        return True


def _static(name: str) -> bytes:
    return resources.files("opsbot.miniapp").joinpath("static", name).read_bytes()


class Board:
    """The board's routes; ``add_routes`` is all the web server calls."""

    def __init__(self, services: Services, *, clock: Callable[[], float] = time.time) -> None:
        self._services = services
        self._clock = clock
        self._settings = services.settings.miniapp
        token = services.settings.telegram.token
        self._token = token.get_secret_value() if token is not None else ""
        self._limit = RateLimit(self._settings.requests_per_minute)
        self.acting = Acting(services)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/board", self._page)
        app.router.add_get("/board/static/{name}", self._asset)
        app.router.add_get("/board/api/state", self._state)
        app.router.add_post("/board/api/act", self._act)

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("board.html"), content_type="text/html",
                            charset="utf-8", headers=HEADERS)  # fmt: skip

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound(headers=HEADERS)
        return web.Response(body=_static(name), content_type=STATIC[name], charset="utf-8",
                            headers=HEADERS)  # fmt: skip

    def _person(self, request: web.Request) -> Person | None:
        """The configured person whose Telegram-signed initData came with the request."""
        scheme, _, data = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "tma" or not self._token:
            return None
        user = initdata.validate(data.strip(), self._token, self._settings.max_age, self._clock())
        return self._services.settings.person(user.id) if user is not None else None

    def _refuse(self, request: web.Request) -> web.Response:
        log.warning("board %s from %s: 401", request.path, request.remote)
        return _json(UNAUTHORIZED, 401)

    async def _state(self, request: web.Request) -> web.Response:
        person = self._person(request)
        if person is None:
            return self._refuse(request)
        if not self._limit.allow(person.id):
            return _json({"error": "too many requests, wait a minute"}, 429)
        board = await snapshot.board(self._services, person, self._clock())
        return _json(board, 200)

    async def _act(self, request: web.Request) -> web.Response:
        person = self._person(request)
        if person is None:
            return self._refuse(request)
        if not self._limit.allow(person.id):
            return _json({"error": "too many requests, wait a minute"}, 429)
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _json({"error": "body too large"}, 413)
        raw = await request.content.read(MAX_BODY + 1)
        if len(raw) > MAX_BODY:  # sent without a length, or a false one
            return _json({"error": "body too large"}, 413)
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return _json({"error": "body is not JSON"}, 400)
        if not isinstance(body, dict):
            return _json({"error": "expected a JSON object"}, 400)
        try:
            answer = await self.acting.act(person, body)
        except BadAction as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"ok": answer.ok, "text": answer.text}, 200)


def _json(body: Any, status: int) -> web.Response:
    return web.Response(
        text=json.dumps(body, ensure_ascii=False, default=str), status=status,
        content_type="application/json", headers=HEADERS,
    )  # fmt: skip
