"""Who may talk to opsbot and how it reaches Telegram: people, roles, the bot, the webhook."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from opsbot.config.base import (
    Seconds,
    _Model,
)


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def allows(self, needed: Role) -> bool:
        return _RANK[self] >= _RANK[needed]


_RANK = {role: rank for rank, role in enumerate(Role)}  # /help asks for every verb


class Person(_Model):
    id: int = Field(description="Numeric Telegram user id.")
    name: str = Field(min_length=1, max_length=64)
    role: Role = Role.viewer


class WebhookSettings(_Model):
    """Webhook mode: Telegram POSTs updates to ``url``; opsbot serves the URL's path."""

    url: str | None = Field(
        default=None,
        pattern=r"^https://[^/?#]+(/[^?#]*)?$",
        description="The public HTTPS URL Telegram posts to (behind your reverse proxy).",
    )
    secret_token: SecretStr | None = Field(
        default=None,
        description="Telegram sends it in X-Telegram-Bot-Api-Secret-Token (A-Za-z0-9_-).",
    )
    secret_token_file: Path | None = None
    max_connections: Annotated[int, Field(ge=1, le=100)] = 40

    @field_validator("secret_token")
    @classmethod
    def _secret_charset(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.fullmatch(
            r"[A-Za-z0-9_-]{1,256}", value.get_secret_value()
        ):
            raise ValueError("must be 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @property
    def path(self) -> str:
        """The URL's path: where opsbot's web server accepts the updates."""
        assert self.url is not None
        return "/" + self.url.split("://", 1)[1].partition("/")[2]


class TelegramSettings(_Model):
    token: SecretStr | None = Field(default=None, description="opsbot's own bot token.")
    token_file: Path | None = None
    api_url: str = Field(
        default="https://api.telegram.org",
        description="Bot API server root; the bot calls {api_url}/bot{token}/METHOD.",
    )
    ops_chat_id: int | None = Field(
        default=None, description="The ops group where commands are typed."
    )
    incident_chat_id: int | None = Field(
        default=None, description="Where results and alerts go; defaults to the ops chat."
    )
    incident_thread_id: int | None = Field(
        default=None, description="Forum topic for alerts, if any."
    )
    allow_private_chats: bool = Field(
        default=True, description="Known people may use a private chat."
    )
    poll_timeout: Annotated[int, Field(ge=0, le=60)] = 30
    request_timeout: Annotated[float, Field(gt=0, le=120)] = Field(
        default=5.0,
        description="Seconds a Bot API call may take to answer before it counts as failed "
        "(then the outbox retries it; long polls and file uploads have their own).",
    )
    group_messages_per_minute: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20,
        description="New messages a minute opsbot sends to one group (Telegram allows about "
        "20); raise it only for a self-hosted Bot API server without that limit.",
    )
    group_window: Seconds = Field(
        default=60.0,
        description="The window, in seconds, group_messages_per_minute counts over "
        "(Telegram's is a minute; edits count too).",
    )
    refusal_interval: Seconds = Field(
        default=60.0, description="At most one refusal per user per chat."
    )
    max_update_age: Annotated[float, Field(ge=0, le=86400)] = Field(
        default=120.0,
        description="Commands older than this many seconds are not run (0: no limit).",
    )
    mode: Literal["polling", "webhook"] = Field(
        default="polling",
        description="polling (with the redis store: one replica polls at a time) or webhook.",
    )
    webhook: WebhookSettings = WebhookSettings()

    @model_validator(mode="after")
    def _webhook_complete(self) -> TelegramSettings:
        if self.mode == "webhook" and (
            self.webhook.url is None or self.webhook.secret_token is None
        ):
            raise ValueError(
                "webhook mode needs telegram.webhook.url and telegram.webhook.secret_token "
                "(or secret_token_file, or OPSBOT_TELEGRAM__WEBHOOK__SECRET_TOKEN)"
            )
        return self

    @field_validator("api_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")

    @property
    def chat_ids(self) -> frozenset[int]:
        return frozenset(c for c in (self.ops_chat_id, self.incident_chat_id) if c is not None)
