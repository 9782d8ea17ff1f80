"""Telegram's ``initData``, validated exactly as Telegram specifies
(core.telegram.org/bots/webapps, "Validating data received via the Mini App").

The string is a URL query; every field but ``hash``, URL-decoded, sorted by key and written as
``key=value`` lines joined by ``\\n``, is the data-check-string. Its HMAC-SHA256, keyed with
``HMAC_SHA256(key="WebAppData", msg=bot_token)``, in hex, must equal ``hash`` (compared in
constant time). ``auth_date`` (Unix seconds) may be at most ``max_age`` old. Anything else,
malformed or not, is simply not valid: the caller answers 401 and says nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

MAX_CHARS = 8192  # Telegram's initData is a few hundred bytes; longer is not Telegram's
CLOCK_SKEW = 60.0  # an auth_date this far in the future is still accepted


@dataclass(frozen=True, slots=True)
class WebAppUser:
    """Who opened the Mini App, as Telegram signed it."""

    id: int
    auth_date: int


def secret_key(bot_token: str) -> bytes:
    return hmac.new(b"WebAppData", bot_token.encode(), hashlib.sha256).digest()


def data_check_string(fields: dict[str, str]) -> str:
    return "\n".join(f"{k}={fields[k]}" for k in sorted(fields) if k != "hash")


def validate(init_data: str, bot_token: str, max_age: float, now: float) -> WebAppUser | None:
    """The signed user, or None when ``init_data`` is not Telegram's, for this bot, fresh."""
    if not init_data or len(init_data) > MAX_CHARS:
        return None
    try:
        pairs = parse_qsl(init_data, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return None
    fields = dict(pairs)
    if len(fields) != len(pairs):  # a key given twice: not what Telegram signs
        return None
    given = fields.get("hash", "")
    expected = hmac.new(
        secret_key(bot_token), data_check_string(fields).encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode()):
        return None
    try:
        auth_date = int(fields.get("auth_date", ""))
        user = json.loads(fields.get("user", ""))
        user_id = user["id"] if isinstance(user, dict) else None
    except (ValueError, KeyError):
        return None
    if not isinstance(user_id, int) or isinstance(user_id, bool):
        return None
    if not now - max_age <= auth_date <= now + CLOCK_SKEW:
        return None
    return WebAppUser(id=user_id, auth_date=auth_date)
