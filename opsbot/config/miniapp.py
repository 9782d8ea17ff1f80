"""The Telegram Mini App board: where it is served, how it is reached, how long a login lasts."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from opsbot.config.base import Duration, _Model

#: A Mini App's direct link as BotFather gives it: https://t.me/<bot username>/<short name>.
LINK_PATTERN = r"^https://t\.me/[A-Za-z][A-Za-z0-9_]{3,31}/[A-Za-z0-9_]{3,30}$"


class MiniAppSettings(_Model):
    """``miniapp``: the live board at ``/board`` on opsbot's web server (``web.enabled``)."""

    enabled: bool = False
    url: Annotated[str, Field(pattern=r"^https://\S+$")] | None = Field(
        default=None,
        description="The board's public HTTPS address (your reverse proxy's, ending in /board): "
        "the menu button of each person's private chat opens it.",
    )
    link: Annotated[str, Field(pattern=LINK_PATTERN)] | None = Field(
        default=None,
        description="The Mini App's direct link as registered with BotFather "
        "(https://t.me/<bot>/<short name>): /board and the Board buttons open it.",
    )
    max_age: Duration = Field(
        default=3600.0, le=86400, description="How old a Telegram login (auth_date) may be."
    )
    requests_per_minute: Annotated[int, Field(ge=1, le=600)] = Field(
        default=60, description="Per person: API calls a minute (the board polls every refresh)."
    )
    refresh: Annotated[int, Field(ge=2, le=300)] = Field(
        default=10, description="Seconds between the open board's updates."
    )
