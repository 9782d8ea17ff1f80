"""A local fake of the Telegram Bot API, speaking its real wire format.

The test suite has no internet, and opsbot is built on python-telegram-bot (PTB), whose
``Bot`` talks HTTP to ``{base_url}{token}/{method}``.  ``FakeBotAPI`` is an HTTP server on
127.0.0.1 (random port, daemon thread) that answers those requests the way
api.telegram.org does, so the code under test runs unchanged with only the base URL swapped::

    with FakeBotAPI() as fake:
        fake.add_bot("123:ABC", "opsbot")
        app = ApplicationBuilder().token("123:ABC").base_url(fake.bot_base_url).build()

It is the only fake in the test suite.  What it covers:

* Wire format: requests as PTB sends them (``application/x-www-form-urlencoded`` where
  non-string values are JSON-encoded strings, ``multipart/form-data`` when a file is
  uploaded), plus JSON bodies and GET query strings (httpx health checks).  Answers are
  ``{"ok": true, "result": ...}`` or ``{"ok": false, "error_code": N, "description": ...}``
  with ``parameters.retry_after`` on 429.  PTB turns every 404 into ``InvalidToken``, so an
  unimplemented method shows up as an "invalid token" error: add it to ``_METHODS``.
* The methods opsbot calls (see ``_METHODS``), returning objects shaped like the real API.
* The errors Telegram gives for mistakes a bot can make: empty or over-long text, edits that
  change nothing, editing unknown messages, callback_data over 64 bytes, malformed HTML,
  MarkdownV2 reserved characters, answering a callback query twice, flood limits (429), two
  pollers at once (409).  Wording follows Telegram; the HTML diagnostics after
  "can't parse entities:" are close to Telegram's but not guaranteed to be identical.
  Stricter than Telegram on purpose: a bare ``&`` in HTML is an error here
  (``strict_html_entities``), Telegram would keep it as text.
* Recording for assertions: every call, every 429 answered, the current state of every
  message (edits, pins, reactions, documents), the commands set per scope, callback answers.
* Fault injection: ``fail_next`` (the next calls of a method answer an error: 502, 429 with
  ``retry_after``, 400 "query is too old"...), ``inject`` (the same, or a hang that never
  answers, for the n-th matching call on), and ``set_down`` (every call answers 502 Bad
  Gateway, as a proxy in front of an unreachable Bot API does).
* Injecting what users do (messages, commands, edits, button taps, inline queries, channel
  posts) as updates that ``getUpdates`` long-polls deliver.

Everything is thread-safe: the HTTP server runs in its own threads, the tests in an asyncio
loop; one re-entrant lock guards the state and a condition wakes long polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import email.policy
import itertools
import json
import math
import re
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, NamedTuple, cast
from urllib.parse import parse_qsl, unquote, urlsplit

JSON = dict[str, Any]
Handler = Callable[["FakeBotAPI", "BotState", JSON], Any]

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64
MAX_CALLBACK_ANSWER = 200
MAX_UPLOAD = 50 * 1024 * 1024

CONFLICT_OTHER_POLLER = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)
CONFLICT_WEBHOOK = (
    "Conflict: can't use getUpdates method while webhook is active; "
    "use deleteWebhook to delete the webhook first"
)
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
QUERY_INVALID = "Bad Request: query is too old and response timeout expired or query ID is invalid"

# Update types Telegram leaves out unless allowed_updates asks for them.
_OPT_IN_UPDATES = frozenset({"chat_member", "message_reaction", "message_reaction_count"})

_INT_PARAMS = frozenset(
    {
        "message_id", "message_thread_id", "offset", "limit", "timeout", "user_id",
        "icon_color", "cache_time", "from_chat_id", "max_connections", "reply_to_message_id",
        "until_date",
    }
)  # fmt: skip
_BOOL_PARAMS = frozenset(
    {
        "disable_notification", "protect_content", "show_alert", "drop_pending_updates",
        "is_big", "allow_sending_without_reply", "disable_content_type_detection",
        "disable_web_page_preview", "allow_paid_broadcast",
    }
)  # fmt: skip
_JSON_PARAMS = frozenset(
    {
        "reply_markup", "entities", "caption_entities", "allowed_updates", "commands",
        "scope", "reaction", "link_preview_options", "reply_parameters", "results", "menu_button",
    }
)  # fmt: skip


class TelegramAPIError(Exception):
    """An error answer of the Bot API (raised by method handlers, sent as JSON)."""

    def __init__(self, code: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.code = code
        self.description = description
        self.retry_after = retry_after

    def payload(self) -> JSON:
        out: JSON = {"ok": False, "error_code": self.code, "description": self.description}
        if self.retry_after is not None:
            out["parameters"] = {"retry_after": self.retry_after}
        return out


def _bad(description: str) -> TelegramAPIError:
    return TelegramAPIError(400, f"Bad Request: {description}")


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class User:
    """A Telegram user who talks to the bots."""

    id: int
    first_name: str
    username: str | None = None
    last_name: str | None = None
    language_code: str | None = None

    def to_api(self) -> JSON:
        out: JSON = {"id": self.id, "is_bot": False, "first_name": self.first_name}
        for key in ("last_name", "username", "language_code"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out


@dataclass(frozen=True)
class Chat:
    """A chat: ``type`` is private, group, supergroup or channel (groups have negative ids)."""

    id: int
    type: str = "private"
    title: str | None = None
    is_forum: bool = False
    username: str | None = None

    def to_api(self) -> JSON:
        out: JSON = {"id": self.id, "type": self.type}
        if self.type == "private":
            out["first_name"] = self.title or f"User {self.id}"
        else:
            out["title"] = self.title or f"Chat {self.id}"
        if self.username is not None:
            out["username"] = self.username
        if self.is_forum:
            out["is_forum"] = True
        return out


@dataclass(frozen=True)
class UploadedFile:
    """A file part of a multipart request (appears in ``Call.params``)."""

    filename: str
    content_type: str
    data: bytes


class Call(NamedTuple):
    """One request received: ``method`` uses Telegram's spelling (e.g. ``sendMessage``)."""

    token: str
    method: str
    params: JSON
    at: float = 0.0  # time.monotonic() when it was received


@dataclass
class _Fault:
    method: str
    skip: int
    times: int
    hang: float | None
    error: TelegramAPIError


@dataclass(frozen=True)
class RateLimitHit:
    """A 429 answered (``injected`` when it came from ``fail_next``)."""

    token: str
    method: str
    chat_id: int | None
    retry_after: int
    injected: bool = False


@dataclass
class WebhookInfo:
    """What getWebhookInfo reports; ``pending_update_count=None`` means the queue length."""

    url: str = ""
    pending_update_count: int | None = None
    last_error_date: int | None = None
    last_error_message: str | None = None
    secret_token: str | None = None  # what setWebhook set; sent back in webhook POSTs
    max_connections: int | None = None


@dataclass
class ForumTopic:
    name: str
    icon_color: int
    closed: bool = False


@dataclass
class BotState:
    """A bot registered with ``add_bot``; tests may read it, change it via FakeBotAPI."""

    token: str
    id: int
    username: str
    first_name: str
    webhook: WebhookInfo = field(default_factory=WebhookInfo)
    other_poller: bool = False
    updates: list[JSON] = field(default_factory=list)
    allowed_updates: list[str] | None = None
    commands: dict[tuple[str, str], list[JSON]] = field(default_factory=dict)
    menu_buttons: dict[int, JSON] = field(default_factory=dict)  # setChatMenuButton, per chat
    poll_generation: int = 0
    next_update_id: int = 100_000_001

    def user(self) -> JSON:
        return {
            "id": self.id,
            "is_bot": True,
            "first_name": self.first_name,
            "username": self.username,
        }


@dataclass
class FakeMessage:
    """The current state of a message (edits update it; ``history`` keeps every text).

    ``text`` is the text as Telegram shows it: HTML tags parsed away (they become
    ``entities``), ``raw_text`` is what was sent.  Documents have ``text=None`` and
    ``caption``.
    """

    chat_id: int
    message_id: int
    text: str | None
    reply_markup: JSON | None = None
    document_name: str | None = None
    document_bytes: bytes | None = None
    thread_id: int | None = None
    edits: int = 0
    pinned: bool = False
    from_bot: bool = False
    parse_mode: str | None = None
    history: list[str | None] = field(default_factory=list)
    raw_text: str | None = None
    entities: list[JSON] = field(default_factory=list)
    caption: str | None = None
    document_mime: str | None = None
    file_id: str | None = None
    sender: JSON | None = None
    bot_token: str | None = None
    date: int = 0
    edit_date: int | None = None
    reactions: list[JSON] = field(default_factory=list)
    reply_to_message_id: int | None = None
    photo: tuple[int, int] | None = None  # sent by sendPhoto: (width, height); the file is
    # in ``document_bytes`` and its name in ``document_name``, as a document's


@dataclass
class _StoredFile:
    file_id: str
    file_unique_id: str
    name: str
    mime: str
    data: bytes
    path: str


# --------------------------------------------------------------------------- formatting

_HTML_TAGS = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "code": "code", "pre": "pre", "a": "text_link",
    "tg-spoiler": "spoiler", "span": "spoiler", "blockquote": "blockquote",
}  # fmt: skip
_TAG_RE = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9-]*)((?:\s[^<>]*)?)>")
_ATTR_RE = re.compile(r"([A-Za-z][\w-]*)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?")
_HTML_ENTITY_RE = re.compile(r"&(#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z]+);")
_PLAIN_RUN_RE = re.compile(r"[^<&]+")
_NAMED_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_MDV2_RESERVED = frozenset("#+-={}.!")


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def parse_html(text: str, *, strict_entities: bool = True) -> tuple[str, list[JSON]]:
    """Telegram's HTML parse mode: returns (plain text, entities) or raises a 400."""

    def fail(reason: str) -> TelegramAPIError:
        return _bad(f"can't parse entities: {reason}")

    def at(pos: int) -> str:
        return f"at byte offset {len(text[:pos].encode())}"

    out: list[str] = []
    pos16 = 0
    stack: list[tuple[str, int, JSON]] = []  # tag name, utf-16 start, entity
    entities: list[JSON] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "<":
            tag = _TAG_RE.match(text, i)
            if tag is None:
                nxt = text[i + 1 : i + 2]
                if (nxt.isalpha() or nxt == "/") and ">" not in text[i:].split("<", 2)[1]:
                    raise fail(f"Unclosed start tag {at(i)}")
                word = re.match(r"/?([^\s<>/]*)", text[i + 1 :])
                raise fail(f'Unsupported start tag "{word[1] if word else ""}" {at(i)}')
            closing, name, attrs = tag[1] == "/", tag[2].lower(), tag[3]
            if closing:
                if not stack:
                    raise fail(f"Unexpected end tag {at(i)}")
                if stack[-1][0] != name:
                    raise fail(
                        f'Unmatched end tag {at(i)}, expected "</{stack[-1][0]}>", '
                        f'found "</{name}>"'
                    )
                _, start, entity = stack.pop()
                if pos16 > start and entity["type"]:
                    entities.append({**entity, "offset": start, "length": pos16 - start})
            else:
                stack.append((name, pos16, _html_entity(name, attrs, stack, fail, at(i))))
            i = tag.end()
            continue
        if ch == "&":
            ent = _HTML_ENTITY_RE.match(text, i)
            decoded = _decode_html_entity(ent[1]) if ent else None
            if ent is None or decoded is None:
                if strict_entities:
                    raise fail(f'Character "&" must be escaped as "&amp;" {at(i)}')
                decoded, end = "&", i + 1
            else:
                end = ent.end()
            out.append(decoded)
            pos16 += _utf16_len(decoded)
            i = end
            continue
        run = _PLAIN_RUN_RE.match(text, i)  # up to the next tag or entity, in one step
        assert run is not None
        out.append(run[0])
        pos16 += _utf16_len(run[0])
        i = run.end()
    if stack:
        raise fail(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    entities.sort(key=lambda e: (e["offset"], -e["length"]))
    return "".join(out), entities


def _html_entity(
    name: str,
    attrs: str,
    stack: list[tuple[str, int, JSON]],
    fail: Callable[[str], TelegramAPIError],
    where: str,
) -> JSON:
    if name not in _HTML_TAGS:
        raise fail(f'Unsupported start tag "{name}" {where}')
    values = {
        m[1].lower(): _HTML_ENTITY_RE.sub(_attr_entity, (m[2] or "").strip("\"'"))
        for m in _ATTR_RE.finditer(attrs)
    }
    entity: JSON = {"type": _HTML_TAGS[name]}
    if name == "span" and values.get("class") != "tg-spoiler":
        raise fail(f'Tag "span" must have class "tg-spoiler" {where}')
    if name == "a":
        if "href" not in values:
            entity["type"] = ""  # Telegram keeps the text, drops the link
        else:
            entity["url"] = values["href"]
    if name == "blockquote" and "expandable" in values:
        entity["type"] = "expandable_blockquote"
    if name == "code" and stack and stack[-1][0] == "pre":
        lang = values.get("class", "")
        if lang.startswith("language-"):
            stack[-1][2]["language"] = lang.removeprefix("language-")
    return entity


def _attr_entity(match: re.Match[str]) -> str:
    decoded = _decode_html_entity(match[1])
    return match[0] if decoded is None else decoded


def _decode_html_entity(name: str) -> str | None:
    if name.startswith(("#x", "#X")):
        code = int(name[2:], 16)
    elif name.startswith("#"):
        code = int(name[1:])
    else:
        return _NAMED_ENTITIES.get(name)
    return chr(code) if 0 < code <= sys.maxunicode else None


def check_markdown_v2(text: str) -> None:
    """The MarkdownV2 mistake bots make most: unescaped reserved characters in plain text."""
    i, in_code, in_url = 0, "", False
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if in_code:
            if text.startswith(in_code, i):
                i, in_code = i + len(in_code), ""
                continue
        elif text.startswith("```", i) or ch == "`":
            in_code = "```" if text.startswith("```", i) else "`"
            i += len(in_code)
            continue
        elif in_url:
            in_url = ch != ")"
        elif text.startswith("](", i):
            in_url, i = True, i + 2
            continue
        elif ch in _MDV2_RESERVED:
            raise _bad(
                f"can't parse entities: Character '{ch}' is reserved and must be escaped "
                "with the preceding '\\'"
            )
        i += 1


# --------------------------------------------------------------------------- HTTP layer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Bursts of concurrent requests (50 taps answered at once) overflow the default backlog
    # of 5, and the kernel then resets connections: Telegram's servers do not do that.
    request_queue_size = 256

    def __init__(self, fake: FakeBotAPI, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _RequestHandler)
        self.fake = fake
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        with self._open_lock:
            self._open.add(sock)
        return sock, addr

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        """Wake handler threads idling on keep-alive connections so server_close can join."""
        with self._open_lock:
            socks = list(self._open)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return  # a client went away mid-request (e.g. a cancelled long poll)
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections
    disable_nagle_algorithm = True  # else headers and body in two writes cost 40 ms a call

    def do_GET(self) -> None:
        cast(_Server, self.server).fake._serve(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _read_body(req: BaseHTTPRequestHandler) -> bytes:
    if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        while True:
            size = int(req.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while req.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(req.rfile.read(size))
            req.rfile.readline()
    length = int(req.headers.get("Content-Length") or 0)
    return req.rfile.read(length) if length else b""


def _respond(req: BaseHTTPRequestHandler, status: int, content_type: str, body: bytes) -> None:
    """One whole HTTP response: status, type and length headers, then the body."""
    req.send_response(status)
    req.send_header("Content-Type", content_type)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    req.wfile.write(body)


def _parse_body(content_type: str, body: bytes) -> JSON:
    media = content_type.split(";")[0].strip().lower()
    if not body:
        return {}
    if media == "application/json":
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("JSON body must be an object")
        return data
    if media == "multipart/form-data":
        return _parse_multipart(content_type, body)
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def _header_text(value: str) -> str:
    # Raw UTF-8 in headers (httpx sends non-ASCII file names that way) arrives
    # surrogate-escaped from the email parser.
    try:
        return value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return value


def _parse_multipart(content_type: str, body: bytes) -> JSON:
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    msg = BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    out: JSON = {}
    for part in msg.iter_parts():
        raw_name = part.get_param("name", header="content-disposition")
        if raw_name is None:
            continue
        name = _header_text(collapse_rfc2231_value(raw_name))
        data = part.get_payload(decode=True)
        payload = data if isinstance(data, bytes) else b""
        filename = part.get_filename()
        if filename is not None:
            out[name] = UploadedFile(_header_text(filename), part.get_content_type(), payload)
        else:
            out[name] = payload.decode(part.get_content_charset() or "utf-8")
    for key, value in list(out.items()):  # attach://<name> references
        if isinstance(value, str) and value.startswith("attach://"):
            out[key] = out.pop(value.removeprefix("attach://"), value)
    return out


def _coerce(params: JSON) -> JSON:
    out: JSON = {}
    for key, value in params.items():
        if isinstance(value, str):
            try:
                if key in _JSON_PARAMS:
                    value = json.loads(value)
                elif key in _INT_PARAMS:
                    value = int(value)
                elif key in _BOOL_PARAMS:
                    value = value.strip().lower() in ("true", "1")
                elif key == "chat_id" and value.lstrip("-").isdigit():
                    value = int(value)
            except ValueError as exc:
                raise _bad(f"can't parse {key} JSON object") from exc
        out[key] = value
    return out


# --------------------------------------------------------------------------- the fake

_BOT_PATH = re.compile(r"^/bot([^/]+)/([A-Za-z0-9_]+)/?$")
_FILE_PATH = re.compile(r"^/file/bot([^/]+)/(.+)$")
_COMMAND_RE = re.compile(r"^[a-z0-9_]{1,32}$")


class FakeBotAPI:
    """The fake Bot API server.  See the module docstring."""

    def __init__(
        self,
        *,
        group_per_minute: int | None = 20,
        group_window: float = 60.0,
        chat_per_second: int | None = None,
        global_per_second: int | None = 30,
        count_edits: bool = False,
        strict_chats: bool = False,
        strict_html_entities: bool = True,
        port: int = 0,
    ) -> None:
        """Rate limits are per bot, over rolling windows; ``None`` switches one off.

        ``group_window``: the seconds ``group_per_minute`` counts over (a test shrinks
        Telegram's minute to stay short); ``count_edits``: edits count against it too.

        ``port``: listen there (0: any free port); a test can start the fake late on a port
        opsbot is already trying to reach.

        ``strict_chats``: unknown chat ids answer "chat not found" instead of being created
        on first use (positive ids as private chats, negative ones as supergroups).
        """
        self.group_per_minute = group_per_minute
        self.group_window = group_window
        self.chat_per_second = chat_per_second
        self.global_per_second = global_per_second
        self.count_edits = count_edits
        self.strict_chats = strict_chats
        self.strict_html_entities = strict_html_entities
        self.port = port
        self._conflicts: list[Call] = []

        self._cond = threading.Condition(threading.RLock())
        self._bots: dict[str, BotState] = {}
        self._chats: dict[int, Chat] = {}
        self._messages: dict[int, dict[int, FakeMessage]] = {}
        self._next_message_id: dict[int, int] = {}
        self._topics: dict[int, dict[int, ForumTopic]] = {}
        self._members: dict[tuple[int, int], str] = {}
        self._files: dict[str, _StoredFile] = {}
        self._callback_queries: dict[str, tuple[str, JSON | None]] = {}
        self._inline_answers: dict[str, JSON] = {}
        self._calls: list[Call] = []
        self._too_many: list[RateLimitHit] = []
        self._failures: dict[str, deque[TelegramAPIError]] = {}
        self._faults: list[_Fault] = []
        self._down_except: frozenset[str] | None = None
        self.refused_while_down = 0
        self._windows: dict[tuple[str, str, int], deque[float]] = {}
        self._ids = itertools.count(1)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    # ---- lifecycle

    def start(self) -> FakeBotAPI:
        if self._server is not None:
            raise RuntimeError("FakeBotAPI already started")
        self._stopping = False
        self._server = _Server(self, self.port)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="FakeBotAPI",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        with self._cond:
            self._stopping = True
            self._cond.notify_all()  # long polls return at once
        server.shutdown()
        server.close_open_connections()
        server.server_close()  # joins the handler threads
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeBotAPI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeBotAPI not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def bot_base_url(self) -> str:
        """What PTB wants as ``base_url``: it appends the token."""
        return f"{self.url}/bot"

    @property
    def bot_base_file_url(self) -> str:
        return f"{self.url}/file/bot"

    # ---- configuration

    def add_bot(self, token: str, username: str, first_name: str = "Test Bot") -> BotState:
        prefix = token.split(":", 1)[0]
        bot_id = int(prefix) if prefix.isdigit() else 7_000_000_000 + next(self._ids)
        with self._cond:
            state = BotState(token=token, id=bot_id, username=username, first_name=first_name)
            self._bots[token] = state
            return state

    def bot(self, token: str) -> BotState:
        with self._cond:
            return self._bots[token]

    def add_chat(self, chat: Chat) -> Chat:
        with self._cond:
            self._chats[chat.id] = chat
            return chat

    def set_webhook_info(
        self,
        token: str,
        url: str = "",
        pending_update_count: int | None = None,
        last_error_date: int | None = None,
        last_error_message: str | None = None,
    ) -> None:
        """Replace what getWebhookInfo reports (a non-empty url makes getUpdates answer 409)."""
        with self._cond:
            self._bots[token].webhook = WebhookInfo(
                url, pending_update_count, last_error_date, last_error_message
            )

    def set_other_poller(self, token: str, active: bool = True) -> None:
        """Simulate another instance polling: getUpdates answers 409 Conflict."""
        with self._cond:
            self._bots[token].other_poller = active
            self._cond.notify_all()

    def set_member_status(self, chat_id: int, user_id: int, status: str) -> None:
        """getChatMember status: creator, administrator (default), member, left or kicked."""
        if status not in _MEMBER_FIELDS:
            raise ValueError(f"unsupported status {status!r}")
        with self._cond:
            self._members[(chat_id, user_id)] = status

    def fail_next(
        self,
        method: str,
        description: str,
        error_code: int = 400,
        retry_after: int | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` (any bot) with this error."""
        if error_code == 429 and retry_after is None:
            retry_after = 1
        error = TelegramAPIError(error_code, description, retry_after)
        with self._cond:
            self._failures.setdefault(method.lower(), deque()).extend([error] * times)

    def inject(
        self,
        method: str,
        *,
        error_code: int = 502,
        description: str = "Bad Gateway",
        retry_after: int | None = None,
        hang: float | None = None,
        times: int = 1,
        skip: int = 0,
    ) -> _Fault:
        """From the ``skip+1``-th call of ``method`` on, fail ``times`` calls: with the error,
        or (``hang``) by holding the request that long and closing it unanswered, unprocessed
        (the client sees a timeout). ``fault.times`` is 0 once it has all happened."""
        fault = _Fault(method.lower(), skip, times, hang,
                       TelegramAPIError(error_code, description, retry_after))  # fmt: skip
        with self._cond:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._cond:
            self._faults.clear()
            self._down_except = None

    def set_down(self, down: bool, *, except_methods: tuple[str, ...] = ()) -> None:
        """Down: every call (but ``except_methods``) answers 502 and changes nothing."""
        with self._cond:
            self._down_except = frozenset(m.lower() for m in except_methods) if down else None

    def _fault_for(self, method: str) -> _Fault | None:
        with self._cond:
            for fault in self._faults:
                if fault.method != method.lower() or fault.times <= 0:
                    continue
                if fault.skip > 0:
                    fault.skip -= 1
                    return None
                fault.times -= 1
                return fault
            return None

    def reset_rate_limits(self) -> None:
        with self._cond:
            self._windows.clear()

    # ---- recorded state

    @property
    def calls(self) -> list[Call]:
        with self._cond:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method.lower() == method.lower()]

    @property
    def conflicts(self) -> list[Call]:
        """getUpdates calls answered 409 Conflict to a client still listening.

        A long poll whose client went away (cancelled, killed) and that is ended by a newer
        poll is not counted: nobody receives that answer, on Telegram either.
        """
        with self._cond:
            return list(self._conflicts)

    @property
    def too_many_requests(self) -> list[RateLimitHit]:
        with self._cond:
            return list(self._too_many)

    def messages(self, chat_id: int) -> list[FakeMessage]:
        """Snapshots of the messages now in the chat (deleted ones are gone), oldest first."""
        with self._cond:
            return [copy.deepcopy(m) for m in self._messages.get(chat_id, {}).values()]

    def bot_messages(self, chat_id: int, token: str | None = None) -> list[FakeMessage]:
        return [
            m
            for m in self.messages(chat_id)
            if m.from_bot and (token is None or m.bot_token == token)
        ]

    def message(self, chat_id: int, message_id: int) -> FakeMessage | None:
        with self._cond:
            msg = self._messages.get(chat_id, {}).get(message_id)
            return copy.deepcopy(msg)

    def delete_message(self, chat_id: int, message_id: int) -> None:
        """Delete a message as a user (or another admin) would: replies to it then need
        ``allow_sending_without_reply``."""
        with self._cond:
            del self._messages[chat_id][message_id]

    @staticmethod
    def scope_key(scope: JSON | None = None, language_code: str = "") -> tuple[str, str]:
        """The key of ``commands()``: e.g. ``scope_key({"type": "chat", "chat_id": 5})``."""
        return json.dumps(scope or {"type": "default"}, sort_keys=True), language_code

    def commands(self, token: str) -> dict[tuple[str, str], list[JSON]]:
        """What setMyCommands stored, keyed by ``scope_key(scope, language_code)``."""
        with self._cond:
            return copy.deepcopy(self._bots[token].commands)

    def menu_buttons(self, token: str) -> dict[int, JSON]:
        """What setChatMenuButton stored, by chat id."""
        with self._cond:
            return copy.deepcopy(self._bots[token].menu_buttons)

    def topics(self, chat_id: int) -> dict[int, ForumTopic]:
        with self._cond:
            return copy.deepcopy(self._topics.get(chat_id, {}))

    def pending_updates(self, token: str) -> list[JSON]:
        with self._cond:
            return copy.deepcopy(self._bots[token].updates)

    def answers(self, callback_query_id: str) -> JSON | None:
        """What answerCallbackQuery was called with (``text``, ``show_alert``...), or None."""
        with self._cond:
            entry = self._callback_queries.get(callback_query_id)
            return copy.deepcopy(entry[1]) if entry else None

    def inline_answers(self, inline_query_id: str) -> JSON | None:
        with self._cond:
            return copy.deepcopy(self._inline_answers.get(inline_query_id))

    # ---- injecting what users do

    def send_text(
        self,
        token: str,
        chat: Chat | int,
        user: User,
        text: str,
        thread_id: int | None = None,
        *,
        reply_to_message_id: int | None = None,
        date: int | None = None,
    ) -> JSON:
        """A user writes ``text``; a leading ``/command`` gets its bot_command entity.

        ``date`` (epoch seconds) backdates it: a message typed while the bot was away.
        """
        with self._cond:
            self._bot_state(token)
            chat = self._register(chat)
            msg = self._store(chat, user.to_api(), None, text, thread_id=thread_id)
            if date is not None:
                msg.date = date
            if text.startswith("/"):
                command = text.split(maxsplit=1)[0]
                msg.entities = [
                    {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
                ]
            msg.reply_to_message_id = reply_to_message_id
            api = self._message_api(msg)
            self._push(token, "message", api)
            return api

    def edit_text(
        self, token: str, chat: Chat | int, user: User, message_id: int, new_text: str
    ) -> JSON:
        """The user edits their message: an ``edited_message`` update."""
        with self._cond:
            self._bot_state(token)
            chat = self._register(chat)
            msg = self._messages.get(chat.id, {}).get(message_id)
            if msg is None or msg.from_bot:
                raise ValueError(f"no user message {message_id} in chat {chat.id}")
            self._apply_edit(msg, new_text, new_text, [], msg.reply_markup)
            api = self._message_api(msg)
            self._push(token, "edited_message", api)
            return api

    def channel_post(self, token: str, chat: Chat | int, text: str) -> JSON:
        with self._cond:
            self._bot_state(token)
            chat = self._register(chat)
            if chat.type != "channel":
                raise ValueError(f"chat {chat.id} is a {chat.type}, not a channel")
            api = self._message_api(self._store(chat, None, None, text))
            self._push(token, "channel_post", api)
            return api

    def tap_button(
        self,
        token: str,
        chat: Chat | int,
        user: User,
        message_id: int,
        data: str,
        *,
        strict: bool = True,
    ) -> str:
        """The user taps an inline button; returns the callback query id.

        With ``strict`` the data must belong to a button of the message's current keyboard
        (Telegram's clients can only send those).
        """
        with self._cond:
            self._bot_state(token)
            chat = self._register(chat)
            msg = self._messages.get(chat.id, {}).get(message_id)
            if msg is None or msg.bot_token != token:
                raise ValueError(f"no message {message_id} of that bot in chat {chat.id}")
            if strict and data not in _callback_datas(msg.reply_markup):
                raise ValueError(f"message {message_id} has no button with data {data!r}")
            query_id = str(4_000_000_000_000_000_000 + next(self._ids))
            self._callback_queries[query_id] = (token, None)
            query = {
                "id": query_id,
                "from": user.to_api(),
                "message": self._message_api(msg),
                "chat_instance": f"-{abs(chat.id) * 7919 + 17}",
                "data": data,
            }
            self._push(token, "callback_query", query)
            return query_id

    def inline_query(self, token: str, user: User, query: str) -> JSON:
        with self._cond:
            self._bot_state(token)
            inline = {
                "id": str(5_000_000_000_000_000_000 + next(self._ids)),
                "from": user.to_api(),
                "query": query,
                "offset": "",
                "chat_type": "sender",
            }
            self._push(token, "inline_query", inline)
            return inline

    # ---- waiting (for tests running in an event loop)

    async def wait_for_message(
        self,
        chat_id: int,
        predicate: Callable[[FakeMessage], bool] | None = None,
        timeout: float = 10.0,
        *,
        after_message_id: int | None = None,
        token: str | None = None,
    ) -> FakeMessage:
        """The first bot message in the chat (newer than ``after_message_id``) whose current
        state matches ``predicate``; so it also sees edits."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.bot_messages(chat_id, token):
                if after_message_id is not None and msg.message_id <= after_message_id:
                    continue
                if predicate is None or predicate(msg):
                    return msg
            if time.monotonic() >= deadline:
                shown = "\n".join(
                    f"  #{m.message_id} from_bot={m.from_bot} edits={m.edits} {m.text!r}"
                    for m in self.messages(chat_id)[-15:]
                )
                raise AssertionError(
                    f"no matching bot message in chat {chat_id} within {timeout}s\n"
                    f"messages in the chat:\n{shown or '  (none)'}\n{self.dump_calls()}"
                )
            await asyncio.sleep(0.02)

    def next_bot_message(
        self, chat_id: int, after_message_id: int, token: str, timeout: float = 10.0
    ) -> FakeMessage:
        """Block until the bot posts in the chat after ``after_message_id`` (for benchmarks:
        it wakes the moment the message is stored, without polling)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for message_id, msg in self._messages.get(chat_id, {}).items():
                    if message_id > after_message_id and msg.bot_token == token:
                        return copy.deepcopy(msg)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no bot message in chat {chat_id} within {timeout}s")
                self._cond.wait(left)

    async def wait_for_call(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Call:
        """The first call of ``method`` (``calls[since:]``) matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            for call in self.calls[since:]:
                if call.method.lower() == method.lower() and (
                    predicate is None or predicate(call)
                ):
                    return call
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"no matching {method} call within {timeout}s\n{self.dump_calls()}"
                )
            await asyncio.sleep(0.02)

    def wait_for_calls_beyond(self, count: int, timeout: float) -> bool:
        """Block this thread (without polling) until more than ``count`` calls were received;
        False on timeout. For benchmarks, whose waiting must not take CPU from opsbot."""
        with self._cond:
            return self._cond.wait_for(lambda: len(self._calls) > count, timeout)

    def dump_calls(self, last: int = 25) -> str:
        """The last calls, for failure messages (getUpdates polls are only counted)."""
        calls = self.calls
        polls = sum(c.method == "getUpdates" for c in calls)
        shown = [c for c in calls if c.method != "getUpdates"][-last:]
        lines = [f"  {c.method} {c.params!r:.300}" for c in shown]
        return f"last calls ({polls} getUpdates not shown):\n" + ("\n".join(lines) or "  (none)")

    # ---- webhooks: doing what Telegram does when a webhook is set

    def deliver_webhook(
        self,
        token: str,
        endpoints: list[str] | None = None,
        *,
        secret_token: str | bool = True,
        timeout: float = 10.0,
    ) -> list[tuple[int, str, int]]:
        """POST every pending update of the bot as JSON, the way Telegram delivers them.

        ``endpoints``: where to post, in turn (a load balancer's round robin); default: the
        URL setWebhook set. The header ``X-Telegram-Bot-Api-Secret-Token`` carries the secret
        setWebhook set (``secret_token=True``), that string, or is left out (False). An update
        answered 2xx is delivered and leaves the queue; any other answer leaves it pending, as
        on Telegram.
        Blocking: from a test whose opsbot runs in the same event loop, use a thread.
        Returns ``(update_id, endpoint, status)`` per POST (status 0: no connection).
        """
        import urllib.error
        import urllib.request

        with self._cond:
            bot = self._bot_state(token)
            pending = copy.deepcopy(bot.updates)
            targets = endpoints or [bot.webhook.url]
            secret = bot.webhook.secret_token if secret_token is True else secret_token or None
        results: list[tuple[int, str, int]] = []
        delivered: set[int] = set()
        for index, update in enumerate(pending):
            endpoint = targets[index % len(targets)]
            request = urllib.request.Request(
                endpoint, data=json.dumps(update).encode(), method="POST",
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            if secret is not None:
                request.add_header("X-Telegram-Bot-Api-Secret-Token", secret)
            try:
                with urllib.request.urlopen(request, timeout=timeout) as answer:
                    status = answer.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            results.append((update["update_id"], endpoint, status))
            if 200 <= status < 300:
                delivered.add(update["update_id"])
        with self._cond:
            bot.updates = [u for u in bot.updates if u["update_id"] not in delivered]
        return results

    # ---- HTTP plumbing

    def _serve(self, req: BaseHTTPRequestHandler) -> None:
        url = urlsplit(req.path)
        status: int = 404
        payload: JSON = {"ok": False, "error_code": 404, "description": "Not Found"}
        raw: bytes | None = None
        try:
            body = _read_body(req)
            if match := _BOT_PATH.match(url.path):
                method = match[2].lower()
                with self._cond:
                    down = self._down_except is not None and method not in self._down_except
                    if down:
                        self.refused_while_down += 1
                fault = None if down else self._fault_for(method)
                if fault is not None and fault.hang is not None:
                    time.sleep(fault.hang)  # never answered: the client times out
                    req.close_connection = True
                    return
                if down or fault is not None:
                    error = fault.error if fault else TelegramAPIError(502, "Bad Gateway")
                    if fault is not None:
                        with self._cond:
                            self._calls.append(Call(unquote(match[1]), match[2], {"_fault": 1}))
                            if error.code == 429:
                                self._too_many.append(RateLimitHit(
                                    unquote(match[1]), match[2], None, error.retry_after or 1,
                                    True))  # fmt: skip
                    data = json.dumps(error.payload()).encode()
                    _respond(req, error.code, "application/json", data)
                    return
                params: JSON
                try:
                    params = dict(parse_qsl(url.query, keep_blank_values=True))
                    params.update(_parse_body(req.headers.get("Content-Type", ""), body))
                except (ValueError, UnicodeError):
                    params = {"_unparsable": True}
                status, payload = self._dispatch(unquote(match[1]), match[2], params)
                if status == 409 and _peer_open(req.connection):
                    with self._cond:
                        self._conflicts.append(Call(unquote(match[1]), match[2], params))
            elif match := _FILE_PATH.match(url.path):
                raw = self._file_bytes(unquote(match[1]), unquote(match[2]))
            if raw is not None:
                _respond(req, 200, "application/octet-stream", raw)
                return
            _respond(req, status, "application/json", json.dumps(payload).encode())
        except (ConnectionError, TimeoutError):
            req.close_connection = True

    def _dispatch(self, token: str, method: str, params: JSON) -> tuple[int, JSON]:
        entry = _METHODS.get(method.lower())
        name = entry[0] if entry else method
        with self._cond:
            try:
                if params.pop("_unparsable", False):
                    self._calls.append(Call(token, name, params))
                    raise _bad("can't parse request body")
                try:
                    params = _coerce(params)
                finally:
                    self._calls.append(Call(token, name, params, time.monotonic()))
                bot = self._bots.get(token)
                if bot is None:
                    raise TelegramAPIError(401, "Unauthorized")
                if entry is None:
                    raise TelegramAPIError(404, "Not Found")
                failures = self._failures.get(name.lower())
                if failures:
                    error = failures.popleft()
                    if error.code == 429:
                        self._too_many.append(
                            RateLimitHit(
                                token, name, params.get("chat_id"), error.retry_after or 1, True
                            )
                        )
                    raise error
                return 200, {"ok": True, "result": entry[1](self, bot, params)}
            except TelegramAPIError as exc:
                return exc.code, exc.payload()
            except Exception as exc:  # a bug in the fake: make it loud
                traceback.print_exc()
                return 500, {
                    "ok": False,
                    "error_code": 500,
                    "description": f"Internal Server Error: fake failed: {exc!r}",
                }
            finally:
                self._cond.notify_all()  # for wait_for_calls_beyond()

    def _file_bytes(self, token: str, path: str) -> bytes | None:
        with self._cond:
            if token not in self._bots:
                return None
            for stored in self._files.values():
                if stored.path == path:
                    return stored.data
            return None

    # ---- internals (called with the lock held)

    def _bot_state(self, token: str) -> BotState:
        bot = self._bots.get(token)
        if bot is None:
            raise ValueError(f"unknown bot token {token!r}: add_bot() it first")
        return bot

    def _register(self, chat: Chat | int) -> Chat:
        if isinstance(chat, Chat):
            self._chats[chat.id] = chat
            return chat
        return self._chat(chat)

    def _chat(self, chat_id: Any) -> Chat:
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        if isinstance(chat_id, str):
            for known in self._chats.values():
                if known.username and f"@{known.username}".lower() == chat_id.lower():
                    return known
            raise _bad("chat not found")
        chat = self._chats.get(chat_id)
        if chat is None:
            if self.strict_chats:
                raise _bad("chat not found")
            chat = Chat(chat_id, "private" if chat_id > 0 else "supergroup")
            self._chats[chat_id] = chat
        return chat

    def _push(self, token: str, kind: str, payload: JSON) -> JSON:
        bot = self._bot_state(token)
        update = {"update_id": bot.next_update_id, kind: copy.deepcopy(payload)}
        bot.next_update_id += 1
        wanted = (
            kind in bot.allowed_updates
            if bot.allowed_updates is not None
            else kind not in _OPT_IN_UPDATES
        )
        if wanted:
            bot.updates.append(update)
            self._cond.notify_all()
        return update

    def _store(
        self,
        chat: Chat,
        sender: JSON | None,
        bot: BotState | None,
        text: str | None,
        *,
        thread_id: int | None = None,
    ) -> FakeMessage:
        message_id = self._new_message_id(chat.id)
        msg = FakeMessage(
            chat_id=chat.id,
            message_id=message_id,
            text=text,
            raw_text=text,
            thread_id=thread_id,
            from_bot=bot is not None,
            bot_token=bot.token if bot else None,
            sender=sender,
            date=int(time.time()),
            history=[text],
        )
        self._messages.setdefault(chat.id, {})[message_id] = msg
        self._cond.notify_all()  # wakes next_bot_message
        return msg

    def _new_message_id(self, chat_id: int) -> int:
        message_id = self._next_message_id.get(chat_id, 1)
        self._next_message_id[chat_id] = message_id + 1
        return message_id

    def _apply_edit(
        self,
        msg: FakeMessage,
        plain: str | None,
        raw: str | None,
        entities: list[JSON],
        markup: JSON | None,
    ) -> None:
        if msg.document_name is not None:
            msg.caption = plain
        else:
            msg.text = plain
            msg.history.append(plain)
        msg.raw_text = raw
        msg.entities = entities
        msg.reply_markup = markup
        msg.edits += 1
        msg.edit_date = int(time.time())

    def _message_api(self, msg: FakeMessage, *, nested: bool = True) -> JSON:
        chat = self._chats[msg.chat_id]
        out: JSON = {"message_id": msg.message_id, "date": msg.date, "chat": chat.to_api()}
        if chat.type == "channel":
            out["sender_chat"] = chat.to_api()
        elif msg.sender is not None:
            out["from"] = msg.sender
        if msg.thread_id is not None:
            out["message_thread_id"] = msg.thread_id
            if chat.is_forum:
                out["is_topic_message"] = True
        if msg.photo is not None:
            width, height = msg.photo
            out["photo"] = [{
                "file_id": msg.file_id,
                "file_unique_id": self._files[msg.file_id or ""].file_unique_id,
                "width": width,
                "height": height,
                "file_size": len(msg.document_bytes or b""),
            }]  # fmt: skip
            if msg.caption is not None:
                out["caption"] = msg.caption
                if msg.entities:
                    out["caption_entities"] = msg.entities
        elif msg.document_name is not None:
            out["document"] = {
                "file_id": msg.file_id,
                "file_unique_id": self._files[msg.file_id or ""].file_unique_id,
                "file_name": msg.document_name,
                "mime_type": msg.document_mime,
                "file_size": len(msg.document_bytes or b""),
            }
            if msg.caption is not None:
                out["caption"] = msg.caption
                if msg.entities:
                    out["caption_entities"] = msg.entities
        elif msg.text is not None:
            out["text"] = msg.text
            if msg.entities:
                out["entities"] = msg.entities
        if (inline := _inline(msg.reply_markup)) is not None:
            out["reply_markup"] = inline
        if msg.edit_date is not None:
            out["edit_date"] = msg.edit_date
        if nested and msg.reply_to_message_id is not None:
            replied = self._messages.get(msg.chat_id, {}).get(msg.reply_to_message_id)
            if replied is not None:
                out["reply_to_message"] = self._message_api(replied, nested=False)
        return out

    def _render(
        self, text: Any, parse_mode: Any, entities: Any, *, caption: bool = False
    ) -> tuple[str | None, list[JSON]]:
        """Validate a text or caption as Telegram does; returns (plain text, entities)."""
        if text is None or text == "":
            if caption:
                return None, []
            raise _bad("message text is empty")
        text = str(text)
        mode = str(parse_mode or "").lower()
        if mode == "html":
            plain, found = parse_html(text, strict_entities=self.strict_html_entities)
        else:
            if mode == "markdownv2":
                check_markdown_v2(text)
            plain, found = text, list(entities or [])
        if not plain.strip():
            if caption:
                return None, []
            raise _bad("message text is empty")
        if caption and len(plain) > MAX_CAPTION:
            raise _bad("message caption is too long")
        if not caption and len(plain) > MAX_TEXT:
            raise _bad("message is too long")
        return plain, found

    def _thread_for(self, chat: Chat, params: JSON) -> int | None:
        thread_id = params.get("message_thread_id")
        if thread_id is None:
            return None
        if chat.is_forum and thread_id != 1 and thread_id not in self._topics.get(chat.id, {}):
            raise _bad("message thread not found")
        return int(thread_id)

    def _reply_to(self, chat: Chat, params: JSON) -> int | None:
        reply = params.get("reply_parameters") or {}
        message_id = reply.get("message_id", params.get("reply_to_message_id"))
        if message_id is None:
            return None
        if message_id not in self._messages.get(chat.id, {}):
            if reply.get("allow_sending_without_reply") or params.get(
                "allow_sending_without_reply"
            ):
                return None
            raise _bad("message to be replied not found")
        return int(message_id)

    def _find(self, chat: Chat, params: JSON, what: str) -> FakeMessage:
        if params.get("inline_message_id"):
            raise _bad("the fake does not support inline_message_id")
        msg = self._messages.get(chat.id, {}).get(params.get("message_id") or 0)
        if msg is None:
            raise _bad(f"message to {what} not found")
        return msg

    def _rate_limit(self, bot: BotState, method: str, chat_id: int) -> None:
        now = time.monotonic()
        checks: list[tuple[tuple[str, str, int], int, float]] = []
        if chat_id < 0 and self.group_per_minute:
            checks.append(((bot.token, "group", chat_id), self.group_per_minute,
                           self.group_window))  # fmt: skip
        if chat_id > 0 and self.chat_per_second:
            checks.append(((bot.token, "chat", chat_id), self.chat_per_second, 1.0))
        if self.global_per_second:
            checks.append(((bot.token, "global", 0), self.global_per_second, 1.0))
        windows = []
        for key, limit, span in checks:
            window = self._windows.setdefault(key, deque())
            while window and window[0] <= now - span:
                window.popleft()
            if len(window) >= limit:
                retry_after = max(1, math.ceil(window[0] + span - now))
                self._too_many.append(RateLimitHit(bot.token, method, chat_id, retry_after))
                raise TelegramAPIError(
                    429, f"Too Many Requests: retry after {retry_after}", retry_after
                )
            windows.append(window)
        for window in windows:
            window.append(now)


def _inline(markup: JSON | None) -> JSON | None:
    if markup and "inline_keyboard" in markup:
        return markup
    return None


def _callback_datas(markup: JSON | None) -> set[str]:
    inline = _inline(markup) or {"inline_keyboard": []}
    return {
        button["callback_data"]
        for row in inline["inline_keyboard"]
        for button in row
        if "callback_data" in button
    }


def _check_markup(markup: Any) -> JSON | None:
    if markup is None:
        return None
    if not isinstance(markup, dict):
        raise _bad("can't parse reply keyboard markup JSON object")
    if "force_reply" in markup:  # ForceReply: recorded as sent, never echoed in a Message
        if markup["force_reply"] is not True:
            raise _bad("can't parse reply keyboard markup JSON object")
        placeholder = markup.get("input_field_placeholder")
        if placeholder is not None and not 1 <= len(str(placeholder)) <= 64:
            raise _bad("can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                raise _bad("can't parse inline keyboard button: Text is empty")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA:
                raise _bad("BUTTON_DATA_INVALID")
            if len(button) == 1:
                raise _bad(
                    "can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard"
                )
    return markup


# --------------------------------------------------------------------------- methods


def _peer_open(sock: socket.socket) -> bool:
    """Whether the client of this connection is still there (not closed or reset)."""
    timeout = sock.gettimeout()
    try:
        sock.setblocking(False)
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True  # nothing to read: still open
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(timeout)


def _get_me(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    return {
        **bot.user(),
        "can_join_groups": True,
        "can_read_all_group_messages": False,
        "supports_inline_queries": False,
        "can_connect_to_business": False,
        "has_main_web_app": False,
    }


def _true(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    return True


def _chat_only(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    fake._chat(p.get("chat_id"))
    return True


def _get_updates(fake: FakeBotAPI, bot: BotState, p: JSON) -> list[JSON]:
    offset = int(p.get("offset") or 0)
    limit = min(max(int(p.get("limit") or 100), 1), 100)
    deadline = time.monotonic() + max(float(p.get("timeout") or 0), 0.0)
    if isinstance(p.get("allowed_updates"), list):
        bot.allowed_updates = p["allowed_updates"] or None
    bot.poll_generation += 1  # a newer getUpdates terminates the older one, as on Telegram
    generation = bot.poll_generation
    fake._cond.notify_all()
    while True:
        if bot.other_poller or generation != bot.poll_generation:
            raise TelegramAPIError(409, CONFLICT_OTHER_POLLER)
        if bot.webhook.url:
            raise TelegramAPIError(409, CONFLICT_WEBHOOK)
        if offset > 0:
            bot.updates = [u for u in bot.updates if u["update_id"] >= offset]
        elif offset < 0:
            bot.updates = bot.updates[offset:]
        remaining = deadline - time.monotonic()
        if bot.updates or fake._stopping or remaining <= 0:
            return copy.deepcopy(bot.updates[:limit])
        fake._cond.wait(remaining)


def _delete_webhook(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    bot.webhook = WebhookInfo()
    if p.get("drop_pending_updates"):
        bot.updates.clear()
    return True


def _set_webhook(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    url = str(p.get("url") or "")
    if url and not url.startswith("https://"):
        raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
    secret = p.get("secret_token")
    if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
        raise _bad("secret token contains unallowed characters")
    if p.get("drop_pending_updates"):
        bot.updates.clear()
    if isinstance(p.get("allowed_updates"), list):
        bot.allowed_updates = p["allowed_updates"] or None
    bot.webhook = WebhookInfo(
        url=url,
        secret_token=None if secret is None else str(secret),
        max_connections=p.get("max_connections"),
    )
    return True


def _get_webhook_info(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    info = bot.webhook
    pending = info.pending_update_count
    out: JSON = {
        "url": info.url,
        "has_custom_certificate": False,
        "pending_update_count": len(bot.updates) if pending is None else pending,
    }
    if info.last_error_date is not None:
        out["last_error_date"] = info.last_error_date
    if info.last_error_message is not None:
        out["last_error_message"] = info.last_error_message
    if info.url:
        out["max_connections"] = info.max_connections or 40
    if bot.allowed_updates is not None:
        out["allowed_updates"] = bot.allowed_updates
    return out


def _send_message(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    chat = fake._chat(p.get("chat_id"))
    thread_id = fake._thread_for(chat, p)
    markup = _check_markup(p.get("reply_markup"))
    plain, entities = fake._render(p.get("text"), p.get("parse_mode"), p.get("entities"))
    reply_to = fake._reply_to(chat, p)
    fake._rate_limit(bot, "sendMessage", chat.id)
    msg = fake._store(chat, bot.user(), bot, plain, thread_id=thread_id)
    msg.raw_text, msg.entities, msg.reply_markup = p.get("text"), entities, markup
    msg.parse_mode, msg.reply_to_message_id = p.get("parse_mode"), reply_to
    return fake._message_api(msg)


def _send_document(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    return _send_file(fake, bot, p, "document")


def _send_photo(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    """As Telegram: a PNG or JPEG upload (else IMAGE_PROCESS_FAILED), width and height at
    most 10,000 together and a side at most 20 times the other (PHOTO_INVALID_DIMENSIONS)."""
    photo = p.get("photo")
    if isinstance(photo, UploadedFile):
        size = _image_size(photo.data)
        if size is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        width, height = size
        if width + height > 10_000 or max(width, height) > 20 * min(width, height):
            raise _bad("PHOTO_INVALID_DIMENSIONS")
    return _send_file(fake, bot, p, "photo")


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a PNG (from its header) or a JPEG (from its frame marker)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data[:2] == b"\xff\xd8":
        at = 2
        while at + 9 < len(data) and data[at] == 0xFF:
            marker, length = data[at + 1], int.from_bytes(data[at + 2 : at + 4], "big")
            if marker in (0xC0, 0xC1, 0xC2):
                height = int.from_bytes(data[at + 5 : at + 7], "big")
                return int.from_bytes(data[at + 7 : at + 9], "big"), height
            at += 2 + length
    return None


def _send_file(fake: FakeBotAPI, bot: BotState, p: JSON, kind: str) -> JSON:
    """sendDocument (``kind`` "document") or sendPhoto ("photo")."""
    chat = fake._chat(p.get("chat_id"))
    thread_id = fake._thread_for(chat, p)
    markup = _check_markup(p.get("reply_markup"))
    caption, entities = fake._render(
        p.get("caption"), p.get("parse_mode"), p.get("caption_entities"), caption=True
    )
    document = p.get(kind)
    if isinstance(document, UploadedFile):
        if not document.data:
            raise _bad("file must be non-empty")
        if len(document.data) > MAX_UPLOAD:
            raise TelegramAPIError(413, "Request Entity Too Large")
        n = next(fake._ids)
        stored = _StoredFile(
            file_id=f"BQACAgIAAxkBAAIF{n:08d}fake",
            file_unique_id=f"AgADF{n:06d}",
            name=document.filename,
            mime=document.content_type,
            data=document.data,
            path=f"documents/file_{n}_{document.filename}",
        )
        fake._files[stored.file_id] = stored
    elif isinstance(document, str) and document in fake._files:
        stored = fake._files[document]
    else:
        raise _bad("wrong file identifier/HTTP URL specified")
    reply_to = fake._reply_to(chat, p)
    fake._rate_limit(bot, "sendPhoto" if kind == "photo" else "sendDocument", chat.id)
    msg = fake._store(chat, bot.user(), bot, None, thread_id=thread_id)
    msg.history = []
    msg.caption, msg.raw_text, msg.entities = caption, p.get("caption"), entities
    msg.document_name, msg.document_bytes, msg.document_mime = (
        stored.name,
        stored.data,
        stored.mime,
    )
    msg.file_id, msg.reply_markup, msg.parse_mode = stored.file_id, markup, p.get("parse_mode")
    msg.reply_to_message_id = reply_to
    if kind == "photo":
        msg.photo = _image_size(stored.data)
    return fake._message_api(msg)


def _get_file(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    stored = fake._files.get(str(p.get("file_id")))
    if stored is None:
        raise _bad("invalid file_id")
    return {
        "file_id": stored.file_id,
        "file_unique_id": stored.file_unique_id,
        "file_size": len(stored.data),
        "file_path": stored.path,
    }


def _edit_message_text(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    return _edit(fake, bot, p, "editMessageText", "text")


def _edit_message_caption(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    return _edit(fake, bot, p, "editMessageCaption", "caption")


def _edit(fake: FakeBotAPI, bot: BotState, p: JSON, method: str, kind: str) -> JSON:
    chat = fake._chat(p.get("chat_id"))
    msg = fake._find(chat, p, "edit")
    if msg.bot_token != bot.token:
        raise _bad("message can't be edited")
    if kind == "text" and msg.text is None:
        raise _bad("there is no text in the message to edit")
    if kind == "caption" and msg.document_name is None:
        raise _bad("there is no caption in the message to edit")
    markup = _check_markup(p.get("reply_markup"))
    entities_key = "entities" if kind == "text" else "caption_entities"
    plain, entities = fake._render(
        p.get(kind), p.get("parse_mode"), p.get(entities_key), caption=kind == "caption"
    )
    current = msg.text if kind == "text" else msg.caption
    if (plain, entities, _inline(markup)) == (current, msg.entities, _inline(msg.reply_markup)):
        raise TelegramAPIError(400, NOT_MODIFIED)
    if fake.count_edits:
        fake._rate_limit(bot, method, chat.id)
    fake._apply_edit(msg, plain, p.get(kind), entities, markup)
    msg.parse_mode = p.get("parse_mode")
    return fake._message_api(msg)


def _edit_message_media(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    """As Telegram, for a photo: ``media`` is an InputMediaPhoto (JSON) whose ``media`` is
    ``attach://NAME`` (the upload in field NAME) or a known file id; only a message that has
    media can be edited so ("there is no media in the message to edit" for a text)."""
    chat = fake._chat(p.get("chat_id"))
    msg = fake._find(chat, p, "edit")
    if msg.bot_token != bot.token:
        raise _bad("message can't be edited")
    if msg.document_name is None:
        raise _bad("there is no media in the message to edit")
    try:
        media = json.loads(str(p.get("media")))
    except ValueError:
        raise _bad("can't parse InputMedia JSON object") from None
    if not isinstance(media, dict) or media.get("type") != "photo":
        raise _bad("unsupported media type in the fake (photo only)")
    source = str(media.get("media", ""))
    upload = p.get(source.removeprefix("attach://")) if source.startswith("attach://") else None
    if isinstance(upload, UploadedFile):
        if _image_size(upload.data) is None:
            raise _bad("IMAGE_PROCESS_FAILED")
        data, name = upload.data, upload.filename
    elif source in fake._files:
        data, name = fake._files[source].data, fake._files[source].name
    else:
        raise _bad("wrong file identifier/HTTP URL specified")
    markup = _check_markup(p.get("reply_markup"))
    caption, entities = fake._render(
        media.get("caption"), media.get("parse_mode"), media.get("caption_entities"),
        caption=True,
    )  # fmt: skip
    if fake.count_edits:
        fake._rate_limit(bot, "editMessageMedia", chat.id)
    msg.document_name, msg.document_bytes, msg.photo = name, data, _image_size(data)
    fake._apply_edit(msg, caption, media.get("caption"), entities, markup)
    msg.parse_mode = media.get("parse_mode")
    return fake._message_api(msg)


def _edit_message_reply_markup(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    chat = fake._chat(p.get("chat_id"))
    msg = fake._find(chat, p, "edit")
    if msg.bot_token != bot.token:
        raise _bad("message can't be edited")
    markup = _check_markup(p.get("reply_markup"))
    if _inline(markup) == _inline(msg.reply_markup):
        raise TelegramAPIError(400, NOT_MODIFIED)
    if fake.count_edits:
        fake._rate_limit(bot, "editMessageReplyMarkup", chat.id)
    msg.reply_markup = markup
    msg.edits += 1
    msg.edit_date = int(time.time())
    return fake._message_api(msg)


def _delete_message(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    chat = fake._chat(p.get("chat_id"))
    msg = fake._find(chat, p, "delete")
    del fake._messages[chat.id][msg.message_id]
    return True


def _answer_callback_query(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    query_id = str(p.get("callback_query_id") or "")
    entry = fake._callback_queries.get(query_id)
    if entry is None or entry[0] != bot.token or entry[1] is not None:
        raise _bad(QUERY_INVALID.removeprefix("Bad Request: "))
    text = p.get("text")
    if text is not None and len(str(text)) > MAX_CALLBACK_ANSWER:
        raise _bad("MESSAGE_TOO_LONG")
    answer = {"text": text, "show_alert": bool(p.get("show_alert", False))}
    answer.update({k: p[k] for k in ("url", "cache_time") if k in p})
    fake._callback_queries[query_id] = (bot.token, answer)
    return True


def _answer_inline_query(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    fake._inline_answers[str(p.get("inline_query_id"))] = copy.deepcopy(p)
    return True


def _set_my_commands(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    commands = p.get("commands")
    if not isinstance(commands, list):
        raise _bad("can't parse commands JSON object")
    if len(commands) > 100:
        raise _bad("BOT_COMMANDS_TOO_MUCH")
    for command in commands:
        if not _COMMAND_RE.match(str(command.get("command", ""))):
            raise _bad("BOT_COMMAND_INVALID")
        if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
            raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
    key = FakeBotAPI.scope_key(p.get("scope"), str(p.get("language_code") or ""))
    if commands:
        bot.commands[key] = commands
    else:
        bot.commands.pop(key, None)
    return True


def _get_my_commands(fake: FakeBotAPI, bot: BotState, p: JSON) -> list[JSON]:
    key = FakeBotAPI.scope_key(p.get("scope"), str(p.get("language_code") or ""))
    return copy.deepcopy(bot.commands.get(key, []))


def _delete_my_commands(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    key = FakeBotAPI.scope_key(p.get("scope"), str(p.get("language_code") or ""))
    bot.commands.pop(key, None)
    return True


def _set_chat_menu_button(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    """Per private chat (``strict_chats``: one the user opened); a web_app button needs https."""
    button = p.get("menu_button") or {"type": "default"}
    if button.get("type") == "web_app":
        url = str((button.get("web_app") or {}).get("url", ""))
        if not url.startswith("https://") or not button.get("text"):
            raise _bad("BUTTON_URL_INVALID")
    chat = fake._chat(p.get("chat_id"))
    if chat.type != "private":
        raise _bad("chat not found")
    bot.menu_buttons[chat.id] = copy.deepcopy(button)
    return True


def _pin(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    fake._find(fake._chat(p.get("chat_id")), p, "pin").pinned = True
    return True


def _unpin(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    chat = fake._chat(p.get("chat_id"))
    if p.get("message_id") is not None:
        fake._find(chat, p, "unpin").pinned = False
        return True
    pinned = [m for m in fake._messages.get(chat.id, {}).values() if m.pinned]
    if pinned:
        pinned[-1].pinned = False
    return True


def _unpin_all(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    for msg in fake._messages.get(fake._chat(p.get("chat_id")).id, {}).values():
        msg.pinned = False
    return True


def _forum(fake: FakeBotAPI, p: JSON) -> tuple[Chat, dict[int, ForumTopic]]:
    chat = fake._chat(p.get("chat_id"))
    if not chat.is_forum:
        raise _bad("the chat is not a forum")
    return chat, fake._topics.setdefault(chat.id, {})


def _topic(fake: FakeBotAPI, p: JSON) -> ForumTopic:
    _, topics = _forum(fake, p)
    topic = topics.get(p.get("message_thread_id") or 0)
    if topic is None:
        raise _bad("message thread not found")
    return topic


def _create_forum_topic(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    chat, topics = _forum(fake, p)
    name = str(p.get("name") or "")
    if not 1 <= len(name) <= 128:
        raise _bad("TOPIC_TITLE_EMPTY" if not name else "TOPIC_TITLE_TOO_LONG")
    # The thread id is the id of the "topic created" service message.
    thread_id = fake._new_message_id(chat.id)
    topics[thread_id] = ForumTopic(name, int(p.get("icon_color") or 7322096))
    return {
        "message_thread_id": thread_id,
        "name": name,
        "icon_color": topics[thread_id].icon_color,
    }


def _edit_forum_topic(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    topic = _topic(fake, p)
    name = p.get("name")
    if name is None or name == topic.name:
        raise _bad("TOPIC_NOT_MODIFIED")
    topic.name = str(name)
    return True


def _close_forum_topic(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    return _set_closed(_topic(fake, p), True)


def _reopen_forum_topic(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    return _set_closed(_topic(fake, p), False)


def _set_closed(topic: ForumTopic, closed: bool) -> bool:
    if topic.closed == closed:
        raise _bad("TOPIC_NOT_MODIFIED")
    topic.closed = closed
    return True


def _get_chat(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    return {
        **fake._chat(p.get("chat_id")).to_api(),
        "accent_color_id": 0,
        "max_reaction_count": 11,
        "accepted_gift_types": {
            "unlimited_gifts": False,
            "limited_gifts": False,
            "unique_gifts": False,
            "premium_subscription": False,
            "gifts_from_channels": False,
        },
    }


_ADMIN_RIGHTS = (
    "can_manage_chat", "can_delete_messages", "can_manage_video_chats", "can_restrict_members",
    "can_change_info", "can_invite_users", "can_post_stories", "can_edit_stories",
    "can_delete_stories", "can_pin_messages", "can_manage_topics",
)  # fmt: skip
_MEMBER_FIELDS: dict[str, JSON] = {
    "creator": {"is_anonymous": False},
    "administrator": {
        "can_be_edited": False,
        "is_anonymous": False,
        "can_promote_members": False,
        **dict.fromkeys(_ADMIN_RIGHTS, True),
    },
    "member": {},
    "left": {},
    "kicked": {"until_date": 0},
}


def _get_chat_member(fake: FakeBotAPI, bot: BotState, p: JSON) -> JSON:
    chat = fake._chat(p.get("chat_id"))
    user_id = p.get("user_id")
    if user_id is None:
        raise _bad("user_id is empty")
    status = fake._members.get((chat.id, int(user_id)), "administrator")
    user: JSON = {"id": int(user_id), "is_bot": False, "first_name": f"User {user_id}"}
    for other in fake._bots.values():
        if other.id == user_id:
            user = other.user()
    return {"status": status, "user": user, **_MEMBER_FIELDS[status]}


def _set_message_reaction(fake: FakeBotAPI, bot: BotState, p: JSON) -> bool:
    msg = fake._find(fake._chat(p.get("chat_id")), p, "react")
    reaction = p.get("reaction") or []
    if any(r.get("type") not in ("emoji", "custom_emoji", "paid") for r in reaction):
        raise _bad("REACTION_INVALID")
    msg.reactions = reaction
    return True


_METHODS: dict[str, tuple[str, Handler]] = {
    name.lower(): (name, handler)
    for name, handler in (
        ("getMe", _get_me),
        ("logOut", _true),
        ("close", _true),
        ("getUpdates", _get_updates),
        ("deleteWebhook", _delete_webhook),
        ("setWebhook", _set_webhook),
        ("getWebhookInfo", _get_webhook_info),
        ("sendMessage", _send_message),
        ("sendDocument", _send_document),
        ("sendPhoto", _send_photo),
        ("getFile", _get_file),
        ("editMessageText", _edit_message_text),
        ("editMessageCaption", _edit_message_caption),
        ("editMessageReplyMarkup", _edit_message_reply_markup),
        ("editMessageMedia", _edit_message_media),
        ("deleteMessage", _delete_message),
        ("answerCallbackQuery", _answer_callback_query),
        ("answerInlineQuery", _answer_inline_query),
        ("sendChatAction", _chat_only),
        ("setMyCommands", _set_my_commands),
        ("getMyCommands", _get_my_commands),
        ("deleteMyCommands", _delete_my_commands),
        ("setChatMenuButton", _set_chat_menu_button),
        ("pinChatMessage", _pin),
        ("unpinChatMessage", _unpin),
        ("unpinAllChatMessages", _unpin_all),
        ("createForumTopic", _create_forum_topic),
        ("editForumTopic", _edit_forum_topic),
        ("closeForumTopic", _close_forum_topic),
        ("reopenForumTopic", _reopen_forum_topic),
        ("getChat", _get_chat),
        ("getChatMember", _get_chat_member),
        ("setMessageReaction", _set_message_reaction),
    )
}
