"""The board's lab: two local targets watched every second (``down`` makes the ledger fail,
its restart cures it), a web server with the Mini App on, and initData signed like Telegram's."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from opsbot.config import Settings
from tests.factories import OPSBOT_TOKEN, ChatSession, base_config, running_opsbot, write_config
from tests.fakebotapi import FakeBotAPI, User
from tests.lab.ports import free_port

WEB_TOKEN = "board-lab-web-token"
LINK = "https://t.me/opsbot_test_bot/board"
URL = "https://ops.example.com/board"
REFRESH = 2


def board_settings(
    fake: FakeBotAPI,
    tmp_path: Path,
    *,
    tweak: Any = None,
    ledger_down: bool = False,
    **miniapp: Any,
) -> Settings:
    """The lab's configuration; ``tweak(config)`` may change the dict before it is written;
    ``ledger_down``: the ledger fails its status check until it is restarted."""
    config: dict[str, Any] = base_config(fake, tmp_path / "data")
    down = tmp_path / "down"
    if ledger_down:
        down.touch()
    config["targets"] = {
        "payments": {"kind": "command", "actions": {"status": ["true"]}},
        "ledger": {
            "kind": "command",
            "actions": {
                "status": ["test", "!", "-e", str(down)],
                "restart": ["rm", "-f", str(down)],
            },
            "rpo": "1d",
            "backups": [{"type": "files", "paths": ["/var/lib/ledger"]}],
        },
    }
    config["alerts"] = {
        "monitor": {"enabled": True, "interval": 1, "fail_after": 1, "recover_after": 1}
    }
    config["web"] = {"enabled": True, "port": free_port(), "token": WEB_TOKEN}
    config["miniapp"] = {
        "enabled": True, "link": LINK, "url": URL, "refresh": REFRESH, **miniapp,
    }  # fmt: skip
    if tweak is not None:
        tweak(config)
    return write_config(tmp_path / "opsbot.yaml", config)


def sign(fields: dict[str, str], token: str) -> str:
    """Telegram's signature, written out here from its documentation (not opsbot's code):
    hash = hex HMAC-SHA256(key = HMAC-SHA256(key="WebAppData", msg=token), msg = the sorted
    key=value lines of every other field)."""
    secret = hmac.new(b"WebAppData", token.encode(), hashlib.sha256).digest()
    check = "\n".join(f"{k}={v}" for k, v in sorted(fields.items()))
    digest = hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()
    return urlencode({**fields, "hash": digest})


def init_data(user: User, *, token: str = OPSBOT_TOKEN, age: float = 5.0, **extra: str) -> str:
    """What Telegram hands a Mini App opened by ``user``: signed with the bot's token."""
    fields = {
        "query_id": "AAHdF6IQAAAAAN0XohDhrOrc",
        "user": json.dumps(
            {"id": user.id, "first_name": user.first_name, "username": user.username},
            separators=(",", ":"),
        ),
        "auth_date": str(int(time.time() - age)),
        **extra,
    }
    return sign(fields, token)


def base_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.web.port}"


@contextlib.asynccontextmanager
async def opsbot_and_board(
    fake: FakeBotAPI, settings: Settings, headers: dict[str, str] | None = None
) -> AsyncIterator[tuple[ChatSession, httpx.AsyncClient]]:
    """opsbot running on ``settings``, and an HTTP client of its web server (``headers``:
    e.g. the signed initData of a person)."""
    async with (
        running_opsbot(fake, settings) as chat,
        httpx.AsyncClient(base_url=base_url(settings), headers=headers) as web,
    ):
        yield chat, web
