"""Plain-text rendering of results, shared by Telegram and the console.

A ``Reply`` is what a command answers: text (optionally one preformatted block), an optional
document for long output, and optional buttons. The Telegram layer turns it into HTML; the
console prints it. Nothing here knows Telegram.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace

from opsbot.redact import Redactor


@dataclass(frozen=True, slots=True)
class Button:
    label: str
    data: str  # callback data ("key:ARG"), or an https:// link (the Board button)

    @property
    def is_link(self) -> bool:
        return self.data.startswith("https://")


#: What a row of buttons may hold on a phone (360 px wide): three short labels, or fewer long
#: ones. Telegram shrinks a crowded row's labels to "Decl…", which nobody can read at 3 a.m.
ROW_BUTTONS = 3
ROW_CHARS = 30


def button_rows(buttons: tuple[Button, ...] | list[Button]) -> list[list[Button]]:
    """The buttons in rows, in order: a row takes the next button while it holds fewer than
    ``ROW_BUTTONS`` and their labels stay within ``ROW_CHARS`` characters."""
    rows: list[list[Button]] = []
    for button in buttons:
        row = rows[-1] if rows else None
        width = sum(len(b.label) for b in row) + len(button.label) if row else 0
        if row is None or len(row) >= ROW_BUTTONS or width > ROW_CHARS:
            rows.append([button])
        else:
            row.append(button)
    return rows


@dataclass(frozen=True, slots=True)
class Document:
    filename: str
    content: bytes
    raw: bool = False  # binary data sent as is (a backup the config opted in to send)
    photo: bool = False  # an image shown in the chat (a PNG chart), the text its caption


@dataclass(frozen=True, slots=True)
class Reply:
    """A command's answer. ``block`` is shown preformatted below ``text``."""

    text: str
    block: str = ""
    document: Document | None = None
    buttons: tuple[Button, ...] = field(default_factory=tuple)
    request_id: str | None = None  # an approval card: its message id is recorded once sent
    # Asks for a reply (Telegram's ForceReply): the input field's placeholder. Never with
    # buttons (a message has one markup).
    prompt: str | None = None

    @property
    def empty(self) -> bool:
        """Nothing to say (the verb said it already, or a card shows it): no message sent."""
        return not (self.text or self.block or self.document or self.buttons or self.prompt)

    def redacted(self, redactor: Redactor) -> Reply:
        """Ready to leave: secrets hidden, terminal escapes and control characters removed,
        over-long lines folded (documents keep their lines whole)."""
        document = self.document
        if document is not None and not document.raw:
            text = document.content.decode("utf-8", errors="replace")
            content = redactor.redact(clean(text)).encode()
            document = replace(document, content=content)
        return replace(
            self,
            text=fold(redactor.redact(clean(self.text))),
            block=fold(redactor.redact(clean(self.block))),
            document=document,
        )


# ANSI/VT100 escape sequences: CSI (colours, cursor moves), OSC (titles, hyperlinks, ended by
# BEL or ST) and the two-character ones; then any other C0/C1 control character except tab and
# newline. A carriage return ends a progress-bar frame: keep what follows it, like a terminal.
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]|\x9b[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC
    r"|\x1b[@-Z\\-_]"  # two-character escapes
)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_PROGRESS = re.compile(r"[^\n]*\r(?!\n)")
FOLD_AT = 512  # characters a chat line may have before it is folded


def clean(text: str) -> str:
    """Text as a terminal would have shown it: no escape sequences, no control characters."""
    text = _ANSI.sub("", text).replace("\r\n", "\n")
    if "\r" in text:  # the test first: the pattern costs ~70 ns a character even without one
        text = _PROGRESS.sub("", text)
    return _CONTROL.sub("", text)


def fold(text: str, width: int = FOLD_AT) -> str:
    """Lines longer than ``width`` broken into ``width``-character lines marked with ↪."""
    if all(len(line) <= width for line in text.split("\n")):
        return text
    out: list[str] = []
    for line in text.split("\n"):
        out.append(line[:width])
        out.extend("↪ " + line[i : i + width] for i in range(width, len(line), width))
    return "\n".join(out)


def truncate(text: str, limit: int) -> str:
    """Keep the end of a log (the newest lines), marking what was cut."""
    if len(text) <= limit:
        return text
    marker = "…(earlier lines cut)\n"
    return marker + text[-(limit - len(marker)) :]


def plural(count: int, word: str, many: str | None = None) -> str:
    """"1 check", "2 checks", "0 backups" ("1 entry", "3 entries" with ``many``)."""
    return f"{count} {word if count == 1 else many or word + 's'}"


# --------------------------------------------------------------------------- time and durations
# Every time and duration a chat message shows is worded here, so one reads the same everywhere.


def clock() -> str:
    """Now, to the second: "21:41:05 UTC" (the moment a reply was made)."""
    return time.strftime("%H:%M:%S UTC", time.gmtime())


def hhmm(ts: float, *, zone: bool = True) -> str:
    """A time of today's work: "21:41 UTC" ("21:41" where the card says UTC already)."""
    return time.strftime("%H:%M UTC" if zone else "%H:%M", time.gmtime(ts))


def day_hhmm(ts: float) -> str:
    """A time that may be another day: "5 Dec 21:41 UTC"."""
    return time.strftime("%-d %b %H:%M UTC", time.gmtime(ts))


def moment(ts: float, now: float | None = None) -> str:
    """``hhmm`` today, ``day_hhmm`` another day (with the year when it is another year):
    "21:41 UTC", "5 Dec 21:41 UTC", "5 Dec 2025 21:41 UTC"."""
    today = time.gmtime(time.time() if now is None else now)
    then = time.gmtime(ts)
    if then[:3] == today[:3]:
        return hhmm(ts)
    if then.tm_year == today.tm_year:
        return day_hhmm(ts)
    return time.strftime("%-d %b %Y %H:%M UTC", then)


def short_duration(seconds: float) -> str:
    """A latency as a person reads it: "120 ms" under a second, "1.2 s" over."""
    if seconds < 0.9995:
        return f"{max(1, round(seconds * 1000))} ms" if seconds > 0 else "0 ms"
    return f"{seconds:.1f} s"


def span(seconds: float) -> str:
    """How long something lasted: "45 s", "4 min", "2h 05m", "3 d"."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{round(seconds)} s"
    if seconds >= 48 * 3600:
        return f"{round(seconds / 86400)} d"
    minutes = round(seconds / 60)
    return f"{minutes} min" if seconds < 90 * 60 else _hours_minutes(minutes)


def span_minutes(seconds: float) -> str:
    """``span`` to the minute, for text refreshed once a minute (an incident card):
    "<1 min", "12 min", "2h 05m", "3 d 4h"."""
    minutes = int(max(0.0, seconds) // 60)
    if minutes >= 48 * 60:
        return f"{minutes // 1440} d {minutes % 1440 // 60}h"
    if minutes < 60:
        return f"{minutes} min" if minutes else "<1 min"
    return _hours_minutes(minutes)


def elapsed(seconds: float) -> str:
    """A running clock, to the second: "12 s", "2 min 5 s"."""
    whole = int(seconds)
    return f"{whole // 60} min {whole % 60} s" if whole >= 60 else f"{whole} s"


def _hours_minutes(minutes: int) -> str:
    return f"{minutes // 60}h {minutes % 60:02d}m"


def ago(seconds: float) -> str:
    """How long ago: "just now", "45 s ago", "14 min ago", "3 h ago", "2 days ago"."""
    seconds = max(0.0, seconds)
    if seconds < 5:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} days ago"
