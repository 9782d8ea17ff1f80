"""How opsbot itself runs: approvals, where alerts go, its web server, its store, limits."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from opsbot.config.base import Seconds, _Model
from opsbot.config.targets import ChangeWindow, Monitor


class ApprovalPolicy(_Model):
    """Which actions need approval, and by how many admins other than the requester."""

    required: Annotated[int, Field(ge=1, le=5)] = Field(
        default=1, description="Distinct approvers needed besides the requester."
    )
    allow_self_approval: bool = Field(
        default=False, description="A single-admin team may approve its own requests."
    )
    ttl: Seconds = Field(default=600.0, description="Unapproved requests expire after this.")
    # Per action: needs approval? Unset, each action's own declaration decides
    # (opsbot/actions/action.py: restart, rollback and restore do; a backup does not).
    restart: bool | None = None
    rollback: bool | None = None
    restore: bool | None = None
    backup: bool | None = Field(default=None, description="Backups need none by default.")
    deploy: bool | None = None
    step_up: Literal["none", "totp"] = Field(
        default="none",
        description="totp: after Approve, the approver sends a TOTP code in a private chat.",
    )
    step_up_actions: list[str] = Field(
        default_factory=list, description="Only these actions need step-up (default: all)."
    )
    step_up_timeout: Seconds = Field(default=60.0, description="Seconds to send the code.")
    allowed_hours: ChangeWindow | None = Field(
        default=None, description="Change window, UTC: HH:MM-HH:MM (may wrap past midnight)."
    )
    totp_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting TOTP secrets in the store."
    )
    totp_key_file: Path | None = None


class AlertSettings(_Model):
    """Where alerts go and how fast: Telegram allows about 20 messages a minute in a group."""

    chat_id: int | None = Field(default=None, description="Default: the incident chat.")
    thread_id: int | None = Field(default=None, description="A forum topic for alerts.")
    max_messages_per_minute: Annotated[int, Field(ge=1, le=20)] = Field(
        default=15,
        description="New alert messages while the chat's window holds fewer calls than "
        "this (the outbox paces every call); beyond it, storm digests.",
    )
    edit_interval: Seconds = Field(
        default=10.0, description="Seconds between counter edits (×37) of one alert message."
    )
    digest_interval: Seconds = Field(default=60.0, description="Seconds between storm digests.")
    reminder_interval: Seconds = Field(
        default=900.0, description="Re-announce unacknowledged critical alerts this often."
    )
    monitor: Monitor = Monitor()


class WebSettings(_Model):
    """opsbot's HTTP server: alert webhooks, /healthz and /metrics."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    token: SecretStr | None = Field(default=None, description="Bearer token for the webhooks.")
    token_file: Path | None = None
    hmac_secret: SecretStr | None = Field(
        default=None, description="Or: HMAC-SHA256 of the body in X-Opsbot-Signature."
    )
    hmac_secret_file: Path | None = None
    max_body_bytes: Annotated[int, Field(ge=1024, le=50_000_000)] = 1_000_000
    max_in_hand_bytes: Annotated[int, Field(ge=1024, le=500_000_000)] = Field(
        default=2_000_000,
        description="Webhook bodies held at once (read, not yet recorded); past it: 503 with"
        " Retry-After, which Alertmanager retries.",
    )
    metrics_public: bool = Field(
        default=False, description="Serve /metrics without the bearer token (loopback only)."
    )

    @model_validator(mode="after")
    def _needs_auth(self) -> WebSettings:
        if self.enabled and self.token is None and self.hmac_secret is None:
            raise ValueError("the web server needs token or hmac_secret for its webhooks")
        return self


class StoreSettings(_Model):
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: SecretStr | None = Field(default=None, description="redis://host:6379/0")
    redis_url_file: Path | None = None
    prefix: str = Field(default="opsbot", description="Key prefix in Redis.")
    sentinels: list[str] = Field(
        default_factory=list,
        description="Redis Sentinel addresses (host:port); then redis_url is optional.",
    )
    sentinel_service: str = Field(default="mymaster", description="The Sentinel master name.")
    leader_lease: Annotated[float, Field(ge=2, le=120)] = Field(
        default=3.0,
        description="Seconds of the leader lease (polling, background work) between replicas; "
        "a dead leader is replaced within this plus 0.25 s.",
    )

    @field_validator("sentinels")
    @classmethod
    def _host_port(cls, value: list[str]) -> list[str]:
        for item in value:
            if not re.fullmatch(r"[^\s:]+:\d{1,5}", item):
                raise ValueError(f"{item!r}: expected host:port")
        return value

    @model_validator(mode="after")
    def _needs_url(self) -> StoreSettings:
        if self.backend == "redis" and self.redis_url is None and not self.sentinels:
            raise ValueError("the redis backend needs redis_url (or redis_url_file, or sentinels)")
        return self


class Limits(_Model):
    max_log_lines: Annotated[int, Field(ge=1, le=10000)] = 10000
    default_log_lines: Annotated[int, Field(ge=1, le=10000)] = 100
    inline_chars: Annotated[int, Field(ge=200, le=4096)] = 4096
