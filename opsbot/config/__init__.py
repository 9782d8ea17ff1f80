"""The configuration: one YAML file, validated once, overridable by ``OPSBOT_*`` variables.

Secrets are ``SecretStr`` and may come from the environment or from a sibling ``*_file``
field (``token_file: /run/secrets/bot_token``). A bad file fails with a message naming the
field and the line it is on (``load_config``), never with a traceback.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date
from enum import StrEnum
from pathlib import Path
from string import Template
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opsbot.config.errors import describe, env_source
from opsbot.errors import ConfigError

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,31}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Argv = Annotated[list[str], Field(min_length=1)]
Seconds = Annotated[float, Field(gt=0, le=3600)]


class _Model(BaseModel):
    """Frozen, strict about unknown keys, and able to read ``x_file`` into a secret ``x``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Read x_file when the check runs rather than at start-up (a missing file fails one check).
    lazy_secret_files: ClassVar[bool] = False

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        if not isinstance(data, dict) or cls.lazy_secret_files:
            return data
        for key in [k for k in data if isinstance(k, str) and k.endswith("_file")]:
            field = key.removesuffix("_file")
            info = cls.model_fields.get(field)
            if info is None or "SecretStr" not in repr(info.annotation):
                continue
            if data.get(field) is None and data[key] is not None:
                # $CREDENTIALS_DIRECTORY/x (systemd LoadCredential=), ~/x
                path = Path(os.path.expandvars(str(data[key]))).expanduser()
                try:
                    data = {**data, field: path.read_text().strip()}
                except OSError as exc:
                    problems = _unread_secret_files.get()
                    if problems is None:
                        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None
                    problems.append((key, path, exc.strerror or str(exc)))
        return data


# --------------------------------------------------------------------------- people, chats


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


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
    group_messages_per_minute: Annotated[int, Field(ge=1, le=100_000)] = Field(
        default=20,
        description="New messages a minute opsbot sends to one group (Telegram allows about "
        "20); raise it only for a self-hosted Bot API server without that limit.",
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


# --------------------------------------------------------------------------- endpoints


class SSHEndpoint(_Model):
    type: Literal["ssh"]
    host: str = Field(min_length=1)
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    user: str = Field(min_length=1)
    key_files: list[Path] = Field(default_factory=list, description="Private keys; none = agent.")
    known_hosts: Path | None = Field(default=None, description="Default: ~/.ssh/known_hosts.")
    insecure_no_host_key_check: bool = Field(
        default=False,
        description="Skip host key verification for this host. Logged on every connect.",
    )
    connect_timeout: Seconds = 10.0
    keepalive_interval: Seconds = 15.0
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 8
    via: Name | None = Field(
        default=None,
        description="An ssh endpoint to reach this host through (a bastion, like ProxyJump): "
        "its pooled connection carries this one; both host keys are verified.",
    )
    ssh_config: bool | Path = Field(
        default=False,
        description="Honour ~/.ssh/config (or this file) for this host: Host aliases, "
        "ProxyJump, IdentityFile, User defaults. Off by default: the settings say it all.",
    )


class DockerTLS(_Model):
    ca_cert: Path
    client_cert: Path
    client_key: Path
    verify: bool = True


class DockerEndpoint(_Model):
    type: Literal["docker"]
    url: str = Field(
        default="unix:///var/run/docker.sock",
        description="unix:///path, or tcp://host:2376 (with tls). Ignored with via_ssh.",
    )
    tls: DockerTLS | None = None
    via_ssh: Name | None = Field(
        default=None, description="An ssh endpoint to reach the engine through."
    )
    remote_socket: str = Field(
        default="/var/run/docker.sock", description="Engine socket with via_ssh."
    )
    timeout: Seconds = 20.0


class LocalEndpoint(_Model):
    type: Literal["local"]


Endpoint = Annotated[SSHEndpoint | DockerEndpoint | LocalEndpoint, Field(discriminator="type")]

# --------------------------------------------------------------------------- checks


class HttpCheck(_Model):
    type: Literal["http"]
    url: str = Field(pattern=r"^https?://")
    expect_status: list[int] = Field(default_factory=lambda: [200])
    latency_warning: Seconds = Field(default=3.0, description="Slower than this is a warning.")
    timeout: Seconds = 5.0
    json_field: str | None = Field(
        default=None, description="Dotted path into a JSON body, e.g. status."
    )
    json_expect: str | int | float | bool | None = None
    verify_tls: bool = True


class TcpCheck(_Model):
    type: Literal["tcp"]
    host: str
    port: Annotated[int, Field(ge=1, le=65535)]
    timeout: Seconds = 3.0


class TelegramCheck(_Model):
    """The operated bot's token still works, and its webhook is not backing up."""

    type: Literal["telegram"]
    lazy_secret_files: ClassVar[bool] = True
    token: SecretStr | None = None
    token_file: Path | None = None
    api_url: str | None = Field(default=None, description="Default: telegram.api_url.")
    pending_warning: Annotated[int, Field(ge=0)] = 100
    timeout: Seconds = 5.0

    @model_validator(mode="after")
    def _needs_token(self) -> TelegramCheck:
        if self.token is None and self.token_file is None:
            raise ValueError("a telegram check needs token or token_file")
        return self

    def secret(self) -> str:
        """The token; read from token_file now, so a rotated file is picked up."""
        if self.token is not None:
            return self.token.get_secret_value()
        assert self.token_file is not None
        try:
            return Path(os.path.expandvars(self.token_file)).expanduser().read_text().strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read token_file {self.token_file}: {exc.strerror}"
            ) from None


class CommandCheck(_Model):
    type: Literal["command"]
    argv: Argv
    endpoint: Name | None = Field(default=None, description="Default: the target's endpoint.")
    timeout: Seconds = 10.0


class MetricCheck(_Model):
    """A Prometheus metric read from the target's /metrics, against thresholds.

    Samples matching ``metric`` (and ``labels``) are summed; above ``warning`` is a warning,
    above ``critical`` a failure (``below: true`` for metrics that must stay high).
    """

    type: Literal["metric"]
    url: str = Field(pattern=r"^https?://")
    metric: str = Field(pattern=r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
    labels: dict[str, str] = Field(default_factory=dict)
    warning: float | None = None
    critical: float | None = None
    below: bool = False
    timeout: Seconds = 5.0


Check = Annotated[
    HttpCheck | TcpCheck | TelegramCheck | CommandCheck | MetricCheck,
    Field(discriminator="type"),
]

# --------------------------------------------------------------------------- backups


class _BackupBase(_Model):
    remote_dir: str = Field(
        default="/var/backups/opsbot", description="Where dumps are written on the endpoint."
    )
    keep: Annotated[int, Field(ge=1, le=1000)] = Field(default=7, description="Newest N kept.")
    copy_local: bool = Field(
        default=True, description="Also copy each backup to opsbot's own backups directory."
    )
    send_max_bytes: Annotated[int, Field(ge=0, le=50_000_000)] = Field(
        default=0, description="Send backups up to this size to the chat as documents (0: never)."
    )
    shrink_warning: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.5, description="Flag a backup smaller than this fraction of the previous one."
    )
    timeout: Seconds = 600.0
    schedule: str | None = Field(
        default=None,
        description="Cron expression (UTC), e.g. '0 */6 * * *': run this backup unattended.",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            cron_trigger(value)  # raises ValueError with the reason
        return value


def cron_trigger(expression: str) -> CronTrigger:
    """APScheduler's parser of a five-field crontab line, in UTC."""
    try:
        return CronTrigger.from_crontab(expression, timezone=datetime.UTC)
    except ValueError as exc:
        raise ValueError(f"not a cron expression ({exc}): {expression!r}") from None


_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _duration(value: Any) -> Any:
    """``6h``, ``90m``, ``1d12h`` or a number of seconds."""
    if isinstance(value, str) and not value.strip().isdigit():
        word = value.strip().lower()
        if not word or _DURATION_PART.sub("", word):
            raise ValueError(f"a duration looks like 6h, 90m or 1d12h, not {value!r}")
        return sum(int(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(word))
    return value


Duration = Annotated[float, BeforeValidator(_duration), Field(gt=0)]


class PostgresBackup(_BackupBase):
    """pg_dump -Fc, verified with pg_restore --list. Credentials: the host's .pgpass/peer."""

    type: Literal["postgres"]
    database: str
    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    user: str | None = None
    pg_dump: Argv = Field(default_factory=lambda: ["pg_dump"])
    pg_restore: Argv = Field(default_factory=lambda: ["pg_restore"])
    psql: Argv = Field(
        default_factory=lambda: ["psql"],
        description="For /backup verify: creates, counts and drops a scratch database.",
    )


class SQLiteBackup(_BackupBase):
    """sqlite3 .backup (online), verified with PRAGMA integrity_check."""

    type: Literal["sqlite"]
    path: str
    sqlite3: Argv = Field(default_factory=lambda: ["sqlite3"])


class RedisBackup(_BackupBase):
    """BGSAVE, then a copy of the dump file once LASTSAVE moves."""

    type: Literal["redis"]
    dump_path: str = Field(description="The server's RDB file, e.g. /var/lib/redis/dump.rdb.")
    redis_cli: Argv = Field(default_factory=lambda: ["redis-cli"])
    redis_server: Argv = Field(
        default_factory=lambda: ["redis-server"],
        description="For /backup verify: loads the dump in a scratch server on a unix socket.",
    )


class FilesBackup(_BackupBase):
    """A tar.gz of the given paths."""

    type: Literal["files"]
    paths: Annotated[list[str], Field(min_length=1)]


Backup = Annotated[
    PostgresBackup | SQLiteBackup | RedisBackup | FilesBackup, Field(discriminator="type")
]

# --------------------------------------------------------------------------- targets


class Actions(_Model):
    """Explicit argv per action, replacing the kind's default (runbook as code).

    ``{lines}`` in a logs argv element is replaced by the requested line count.
    """

    status: Argv | None = None
    logs: Argv | None = None
    restart: Argv | None = None
    rollback: Argv | None = None


class Monitor(_Model):
    """The built-in monitor: checks on an interval, with hysteresis so one blip pages nobody."""

    enabled: bool = True
    interval: Seconds = Field(default=30.0, description="Seconds between check rounds.")
    fail_after: Annotated[int, Field(ge=1, le=100)] = Field(
        default=3, description="Consecutive failed rounds before an alert."
    )
    recover_after: Annotated[int, Field(ge=1, le=100)] = Field(
        default=2, description="Consecutive passed rounds before it recovers."
    )


class TargetApprovals(_Model):
    """Per-target approval rules, overriding ``approvals`` for this target."""

    required: Annotated[int, Field(ge=1, le=5)] | None = None
    step_up: Literal["none", "totp"] | None = None
    allowed_hours: str | None = None

    @field_validator("allowed_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value


def parse_window(text: str) -> tuple[int, int]:
    """``"09:00-18:00"`` → minutes of the day (start, end); end < start wraps past midnight."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM (UTC), not {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError(f"not a time of day in {text!r}")
    return h1 * 60 + m1, h2 * 60 + m2


class _TargetBase(_Model):
    endpoint: Name = "local"
    description: str = ""
    checks: list[Check] = Field(default_factory=list)
    status_check: bool = Field(default=True, description="Include the kind's own process status.")
    log_file: str | None = Field(default=None, description="Tail this file for /logs instead.")
    actions: Actions = Actions()
    timeout: Seconds = Field(default=15.0, description="Budget for all of this target's checks.")
    backups: list[Backup] = Field(default_factory=list)
    rpo: Duration | None = Field(
        default=None,
        description="Alert when a backup's newest verified copy is older than this (6h, 1d).",
    )
    monitor: Monitor | None = Field(default=None, description="Default: alerts.monitor.")
    verify_deadline: Seconds = Field(
        default=60.0, description="After restart/rollback, how long to wait for healthy."
    )
    approvals: TargetApprovals | None = Field(
        default=None, description="required / step_up / allowed_hours for this target."
    )


class ContainerTarget(_TargetBase):
    kind: Literal["container"]
    container: str | None = Field(
        default=None, description="Container name; default: target name."
    )


class ComposeTarget(_TargetBase):
    kind: Literal["compose"]
    file: str = Field(description="Path of the compose file on the endpoint.")
    service: str
    compose_command: Argv = Field(default_factory=lambda: ["docker", "compose"])


class SystemdTarget(_TargetBase):
    kind: Literal["systemd"]
    unit: str
    user_unit: bool = False


class PM2Target(_TargetBase):
    kind: Literal["pm2"]
    process: str


class K8sTarget(_TargetBase):
    kind: Literal["k8s"]
    deployment: str
    namespace: str = "default"
    context: str | None = None
    container: str | None = None
    kubectl: Argv = Field(default_factory=lambda: ["kubectl"])


class CommandTarget(_TargetBase):
    kind: Literal["command"]

    @model_validator(mode="after")
    def _needs_something(self) -> CommandTarget:
        if self.actions.status is None and not self.checks:
            raise ValueError("a command target needs actions.status or at least one check")
        return self


Target = Annotated[
    ContainerTarget | ComposeTarget | SystemdTarget | PM2Target | K8sTarget | CommandTarget,
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- status page, on-call


class StatusComponent(_Model):
    """One public component of the status page: a name and the targets behind it."""

    name: str = Field(min_length=1, max_length=64, description="Shown on the page.")
    description: str = Field(default="", max_length=200, description="Shown on the page.")
    targets: Annotated[list[Name], Field(min_length=1)] = Field(
        description="Never shown: the component's state is the worst of theirs."
    )


class StatusPageSettings(_Model):
    """The public status page on the web server: /status, /status.json, /status.atom."""

    title: str = Field(default="Service status", min_length=1, max_length=100)
    public: bool = Field(default=True, description="false: behind web.token (Bearer or Basic).")
    refresh: Annotated[int, Field(ge=5, le=3600)] = Field(
        default=60, description="Seconds between the page's automatic reloads."
    )
    components: list[StatusComponent] = Field(default_factory=list)

    @property
    def enabled(self) -> bool:
        return bool(self.components)


Minutes = Annotated[float, Field(gt=0, le=7 * 24 * 60)]


class Rotation(_Model):
    """Who is on call: ``people`` take turns; the next one in the list is the secondary."""

    people: Annotated[list[str], Field(min_length=1)] = Field(description="Names from people.")
    handover: Literal["daily", "weekly"] = "weekly"
    at: str = Field(
        default="09:00",
        pattern=r"^([01]?\d|2[0-3]):[0-5]\d$",
        description="Local handover time, HH:MM (quote it in YAML).",
    )
    timezone: str = "UTC"
    start: date = Field(
        default=date(2024, 1, 1),
        description="The first person's first shift begins on this day (weekly: the weekday).",
    )

    @field_validator("at", mode="before")
    @classmethod
    def _sexagesimal(cls, value: Any) -> Any:
        """YAML 1.1 reads an unquoted 9:30 as the number 570 (base 60): take it back."""
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
            return f"{value // 60:02d}:{value % 60:02d}"
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (like Europe/Berlin)") from None
        return value


class EscalationPolicy(_Model):
    """Minutes after which an unacknowledged incident or alert pages each step (null: never)."""

    primary: Minutes | None = 15
    secondary: Minutes | None = 30
    contacts: Minutes | None = 60
    resolve_within: Minutes | None = Field(
        default=None, description="Not resolved by then (acked or not): page the contacts."
    )


class Escalation(_Model):
    P0: EscalationPolicy = EscalationPolicy(primary=5, secondary=15, contacts=30)
    P1: EscalationPolicy = EscalationPolicy(
        primary=15, secondary=30, contacts=60, resolve_within=120
    )
    critical: EscalationPolicy = Field(
        default=EscalationPolicy(primary=10, secondary=20, contacts=40),
        description="Critical alerts.",
    )


class OnCallSettings(_Model):
    """The on-call rotation and the escalation policy; pages are private messages."""

    rotation: Rotation
    contacts: list[str] = Field(
        default_factory=list, description="Escalation contacts (names from people), in order."
    )
    escalation: Escalation = Escalation()


# --------------------------------------------------------------------------- the whole file


class ApprovalPolicy(_Model):
    """Which actions need approval, and by how many admins other than the requester."""

    required: Annotated[int, Field(ge=1, le=5)] = Field(
        default=1, description="Distinct approvers needed besides the requester."
    )
    allow_self_approval: bool = Field(
        default=False, description="A single-admin team may approve its own requests."
    )
    ttl: Seconds = Field(default=600.0, description="Unapproved requests expire after this.")
    restart: bool = True
    rollback: bool = True
    restore: bool = True
    backup: bool = Field(default=False, description="Backups are not destructive by default.")
    step_up: Literal["none", "totp"] = Field(
        default="none",
        description="totp: after Approve, the approver sends a TOTP code in a private chat.",
    )
    step_up_actions: list[str] = Field(
        default_factory=list, description="Only these actions need step-up (default: all)."
    )
    step_up_timeout: Seconds = Field(default=60.0, description="Seconds to send the code.")
    allowed_hours: str | None = Field(
        default=None, description="Change window, UTC: HH:MM-HH:MM (may wrap past midnight)."
    )
    totp_key: SecretStr | None = Field(
        default=None, description="Fernet key encrypting TOTP secrets in the store."
    )
    totp_key_file: Path | None = None

    @field_validator("allowed_hours")
    @classmethod
    def _window(cls, value: str | None) -> str | None:
        if value is not None:
            parse_window(value)
        return value


class AlertSettings(_Model):
    """Where alerts go and how fast: Telegram allows about 20 messages a minute in a group."""

    chat_id: int | None = Field(default=None, description="Default: the incident chat.")
    thread_id: int | None = Field(default=None, description="A forum topic for alerts.")
    max_messages_per_minute: Annotated[int, Field(ge=1, le=20)] = Field(
        default=15, description="Alert messages per rolling minute; beyond it, digests."
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
        default=8.0,
        description="Seconds of the leader lease (polling, background work) between replicas.",
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


_unread_secret_files: ContextVar[list[tuple[str, Path, str]] | None] = ContextVar(
    "opsbot_unread_secret_files", default=None
)


@contextmanager
def tolerating_unreadable_secret_files() -> Iterator[list[tuple[str, Path, str]]]:
    """Within: an unreadable ``x_file`` leaves ``x`` unset and is listed (key, path, reason).

    ``opsbot check`` loads the configuration this way, to report the file among its other rows
    instead of stopping at it.
    """
    problems: list[tuple[str, Path, str]] = []
    token = _unread_secret_files.set(problems)
    try:
        yield problems
    finally:
        _unread_secret_files.reset(token)


_yaml_data: ContextVar[dict[str, Any]] = ContextVar("opsbot_yaml_data", default={})  # noqa: B039


# --------------------------------------------------------------------------- incidents

#: The placeholders a post-mortem template may use (``opsbot.incidents.postmortem`` fills
#: them); the blocks (timeline, measures, actions_taken) end with a newline when not empty.
POSTMORTEM_FIELDS = (
    "id", "title", "date", "duration", "severity", "status", "commander", "declared_by",
    "targets", "timeline", "measures", "resolution", "actions_taken",
)  # fmt: skip


class IncidentSettings(_Model):
    postmortem_template: Path | None = Field(
        default=None,
        description=(
            "A Markdown file replacing the post-mortem draft's template: string.Template "
            "placeholders ($id, $title, $timeline, ...; $$ for a dollar sign). Default: the "
            "runbooks' sections shipped with opsbot (opsbot/incidents/postmortem.md)."
        ),
    )

    @field_validator("postmortem_template")
    @classmethod
    def _fillable(cls, path: Path | None) -> Path | None:
        if path is None:
            return None
        try:
            template = Template(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, 'strerror', None) or exc
            raise ValueError(f"cannot read {path}: {reason}") from None
        if not template.is_valid():
            raise ValueError(f"{path}: a $ that is no placeholder (write $$ for a dollar sign)")
        unknown = sorted(set(template.get_identifiers()) - set(POSTMORTEM_FIELDS))
        if unknown:
            raise ValueError(
                f"{path}: unknown placeholder(s) {', '.join('$' + u for u in unknown)}; "
                f"known: {', '.join('$' + f for f in POSTMORTEM_FIELDS)}"
            )
        return path


class _YamlSource(PydanticBaseSettingsSource):
    """Feeds the parsed YAML file to pydantic-settings, below the environment in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return _yaml_data.get().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_yaml_data.get())


class Settings(BaseSettings):
    """opsbot's whole configuration."""

    model_config = SettingsConfigDict(
        env_prefix="OPSBOT_",
        env_nested_delimiter="__",
        env_ignore_empty=True,  # OPSBOT_TELEGRAM__TOKEN= (empty) counts as unset
        extra="forbid",
        frozen=True,
    )

    telegram: TelegramSettings = TelegramSettings()
    people: list[Person] = Field(default_factory=list)
    endpoints: dict[Name, Endpoint] = Field(default_factory=dict)
    targets: dict[Name, Target] = Field(default_factory=dict)
    limits: Limits = Limits()
    approvals: ApprovalPolicy = ApprovalPolicy()
    store: StoreSettings = StoreSettings()
    alerts: AlertSettings = AlertSettings()
    web: WebSettings = WebSettings()
    status_page: StatusPageSettings = StatusPageSettings()
    oncall: OnCallSettings | None = None
    incidents: IncidentSettings = IncidentSettings()
    data_dir: Path = Field(default=Path("./data"), description="Where opsbot keeps its own files.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one object per line, for log shippers."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls))

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        endpoints: dict[str, Any] = {"local": LocalEndpoint(type="local"), **self.endpoints}
        for name, endpoint in endpoints.items():
            via = endpoint.via_ssh if isinstance(endpoint, DockerEndpoint) else None
            if via is not None and not isinstance(endpoints.get(via), SSHEndpoint):
                raise ValueError(f"endpoints.{name}.via_ssh: {via!r} is not an ssh endpoint")
            _check_bastions(name, endpoints)
        for name, target in self.targets.items():
            where = endpoints.get(target.endpoint)
            if where is None:
                raise ValueError(f"targets.{name}.endpoint: unknown endpoint {target.endpoint!r}")
            is_docker = isinstance(where, DockerEndpoint)
            if (target.kind == "container") != is_docker:
                raise ValueError(
                    f"targets.{name}.endpoint: a {target.kind} target needs "
                    + ("a docker endpoint" if target.kind == "container" else "an ssh or local")
                    + " endpoint"
                )
            for check in target.checks:
                if isinstance(check, CommandCheck) and check.endpoint not in (None, *endpoints):
                    raise ValueError(f"targets.{name}.checks: unknown endpoint {check.endpoint!r}")
        if self.telegram.mode == "webhook" and not self.web.enabled:
            raise ValueError("telegram.mode webhook needs the web server (web.enabled: true)")
        ids = [p.id for p in self.people]
        if len(ids) != len(set(ids)):
            raise ValueError("people: a user id is listed twice")
        return self

    @model_validator(mode="after")
    def _status_and_oncall(self) -> Settings:
        for index, component in enumerate(self.status_page.components):
            for name in component.targets:
                if name not in self.targets:
                    raise ValueError(
                        f"status_page.components.{index}.targets: unknown target {name!r}"
                    )
        if not self.status_page.public and self.web.token is None:
            raise ValueError("status_page.public: false needs web.token")
        if self.oncall is not None:
            names = {p.name for p in self.people}
            listed = [("oncall.rotation.people", n) for n in self.oncall.rotation.people]
            listed += [("oncall.contacts", n) for n in self.oncall.contacts]
            for where, name in listed:
                if name not in names:
                    raise ValueError(f"{where}: {name!r} is not one of people")
        return self

    @property
    def all_endpoints(self) -> dict[str, SSHEndpoint | DockerEndpoint | LocalEndpoint]:
        return {"local": LocalEndpoint(type="local"), **self.endpoints}

    def person(self, user_id: int | None) -> Person | None:
        return next((p for p in self.people if p.id == user_id), None)

    def secrets(self) -> list[str]:
        """Every secret value in the configuration, for redaction."""
        return [s.get_secret_value() for s in _walk_secrets(self) if s.get_secret_value()]


def _check_bastions(name: str, endpoints: dict[str, Any]) -> None:
    """An ssh endpoint's ``via`` chain names ssh endpoints and ends (no loop)."""
    seen = [name]
    endpoint = endpoints[name]
    while isinstance(endpoint, SSHEndpoint) and endpoint.via is not None:
        via = endpoint.via
        if not isinstance(endpoints.get(via), SSHEndpoint):
            raise ValueError(f"endpoints.{seen[-1]}.via: {via!r} is not an ssh endpoint")
        if via in seen:
            raise ValueError(f"endpoints.{name}.via: a loop ({' → '.join([*seen, via])})")
        seen.append(via)
        endpoint = endpoints[via]


def _walk_secrets(value: object) -> Iterator[SecretStr]:
    if isinstance(value, SecretStr):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from _walk_secrets(getattr(value, name))
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk_secrets(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _walk_secrets(item)


# --------------------------------------------------------------------------- loading


def load_config(path: Path | str | None) -> Settings:
    """Read and validate the file (and the environment); raise ConfigError on any problem."""
    data: dict[str, Any] = {}
    lines: dict[tuple[str | int, ...], int] = {}
    where = "environment"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            node = yaml.compose(text, Loader=yaml.SafeLoader)
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
        if node is not None:
            _index_lines(node, (), lines)
    token = _yaml_data.set(data)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, lines)) from None
    finally:
        _yaml_data.reset(token)
    return _data_dir_beside(settings, path)


def _data_dir_beside(settings: Settings, path: Path | None) -> Settings:
    """A relative data_dir from the file is relative to the file, not to the current directory."""
    if path is None or settings.data_dir.is_absolute() or env_source(("data_dir",)):
        return settings
    return settings.model_copy(update={"data_dir": path.parent.resolve() / settings.data_dir})


def _index_lines(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]
) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            out[sub] = key.start_mark.line + 1
            _index_lines(value, sub, out)
            out[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*path, index), out)


def _describe(exc: ValidationError, where: str, lines: dict[tuple[str | int, ...], int]) -> str:
    return describe(exc, where, lines, Settings, _without_tags)


def _without_tags(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Drop the tag pydantic adds inside a discriminated union (``targets.x.compose.file``)."""
    kept: list[str | int] = []
    for part in loc:
        containers = ("endpoints", "targets", "checks", "backups")
        if len(kept) >= 2 and kept[-2] in containers and part in _TAGS:
            continue
        kept.append(part)
    return tuple(kept)


_TAGS = {
    "ssh", "docker", "local", "http", "tcp", "telegram", "command", "metric",
    "container", "compose", "systemd", "pm2", "k8s",
    "postgres", "sqlite", "redis", "files",
}  # fmt: skip


def json_schema() -> dict[str, Any]:
    """The configuration's JSON schema, for editors."""
    return Settings.model_json_schema()
