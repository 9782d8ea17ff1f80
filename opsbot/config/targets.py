"""What opsbot operates: endpoints (SSH, Docker, local), checks, backups, targets."""

from __future__ import annotations

import datetime
import os
import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from opsbot.config.base import (
    Argv,
    Duration,
    Name,
    Seconds,
    _Model,
)
from opsbot.config.deploy import Deploy
from opsbot.config.objectives import ObjectiveOverride
from opsbot.config.updates import UpdateNotices
from opsbot.errors import ConfigError


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


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_names(field: str) -> str:
    """Crontab's day-of-week field with its numbers as names (0 and 7: Sunday).

    APScheduler 3 reads numbers in that field as 0 = Monday, so ``1-5`` would run Tuesday to
    Saturday; names mean the same to both."""
    if field == "*" or any(c.isalpha() for c in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if span == "*":
            first, last = 0, 6
        else:
            first_text, _, last_text = span.partition("-")
            first = int(first_text)
            last = int(last_text) if last_text else (first if not step_text else 7)
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"day of week {part!r} is not within 0-7")
        days.update(d % 7 for d in range(first, last + 1, step))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def cron_trigger(expression: str) -> CronTrigger:
    """APScheduler's parser of a five-field crontab line, in UTC, with crontab's weekdays."""
    try:
        fields = expression.split()
        if len(fields) == 5:
            fields[4] = _weekday_names(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone=datetime.UTC)
    except ValueError as exc:
        raise ValueError(f"not a cron expression ({exc}): {expression!r}") from None


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


def parse_window(text: str) -> tuple[int, int]:
    """``"09:00-18:00"`` → minutes of the day (start, end); end < start wraps past midnight."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*", text)
    if not match:
        raise ValueError(f"expected HH:MM-HH:MM (UTC), not {text!r}")
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59:
        raise ValueError(f"not a time of day in {text!r}")
    return h1 * 60 + m1, h2 * 60 + m2


def _a_window(text: str) -> str:
    parse_window(text)
    return text


#: A change window, UTC, "HH:MM-HH:MM" (may wrap past midnight).
ChangeWindow = Annotated[str, AfterValidator(_a_window)]


class TargetApprovals(_Model):
    """Per-target approval rules, overriding ``approvals`` for this target."""

    required: Annotated[int, Field(ge=1, le=5)] | None = None
    step_up: Literal["none", "totp"] | None = None
    allowed_hours: ChangeWindow | None = None


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
    objective: ObjectiveOverride | None = Field(
        default=None, description="Its own objective keys; default: objectives.default."
    )
    verify_deadline: Seconds = Field(
        default=60.0, description="After restart/rollback, how long to wait for healthy."
    )
    approvals: TargetApprovals | None = Field(
        default=None, description="required / step_up / allowed_hours for this target."
    )
    deploy: Deploy | None = Field(
        default=None, description="/deploy TARGET VERSION: versions taken, argv (not containers)."
    )

    @model_validator(mode="after")
    def _deploy_argv_where_it_runs(self) -> _TargetBase:
        kind = getattr(self, "kind", None)
        spec = self.deploy
        runs_argv = spec is not None and (spec.argv is not None or spec.current is not None)
        if runs_argv and kind in ("container", "compose", "k8s"):
            raise ValueError(f"deploy.argv and deploy.current are for pm2, systemd and "
                             f"command targets: a {kind} target deploys its image's tag")
        return self


class ContainerTarget(_TargetBase):
    kind: Literal["container"]
    container: str | None = Field(
        default=None, description="Container name; default: target name."
    )
    updates: UpdateNotices | None = Field(
        default=None, description="Announce newer images from the registry (update notices)."
    )


class ComposeTarget(_TargetBase):
    kind: Literal["compose"]
    file: str = Field(description="Path of the compose file on the endpoint.")
    service: str
    compose_command: Argv = Field(default_factory=lambda: ["docker", "compose"])
    updates: UpdateNotices | None = Field(
        default=None, description="Announce newer images from the registry (update notices)."
    )


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
