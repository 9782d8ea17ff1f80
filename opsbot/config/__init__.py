"""The configuration: one YAML file, validated once, overridable by ``OPSBOT_*`` variables.

Secrets are ``SecretStr`` and may come from the environment or from a sibling ``*_file``
field (``token_file: /run/secrets/bot_token``). A bad file fails with a message naming the
field and the line it is on (``load_config``), never with a traceback.

Part of the ground: it imports nothing of opsbot but ``opsbot.errors``. The sections live in
``base``, ``telegram``, ``targets``, ``incidents``, ``objectives``, ``miniapp``, ``updates``,
``deploy`` and ``running`` (how opsbot itself runs: approvals, alerts, web, store, limits);
this module keeps ``Settings`` and its loading, and re-exports every public name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from opsbot.config.base import (
    NAME_PATTERN,
    Argv,
    Duration,
    Minutes,
    Name,
    Seconds,
    tolerating_unreadable_secret_files,
)
from opsbot.config.errors import describe, env_source
from opsbot.config.incidents import (
    POSTMORTEM_FIELDS,
    Escalation,
    EscalationPolicy,
    IncidentSettings,
    OnCallSettings,
    Rotation,
    StatusComponent,
    StatusPageSettings,
)
from opsbot.config.miniapp import MiniAppSettings
from opsbot.config.objectives import (
    LATENCY_BUCKETS,
    WORKBOOK_RULES,
    BurnRule,
    Objective,
    ObjectiveOverride,
    ObjectiveSettings,
    ReportSchedule,
)
from opsbot.config.running import (
    AlertSettings,
    ApprovalPolicy,
    Limits,
    StoreSettings,
    WebSettings,
)
from opsbot.config.targets import (
    Actions,
    Backup,
    Check,
    CommandCheck,
    CommandTarget,
    ComposeTarget,
    ContainerTarget,
    DockerEndpoint,
    DockerTLS,
    Endpoint,
    FilesBackup,
    HttpCheck,
    K8sTarget,
    LocalEndpoint,
    MetricCheck,
    Monitor,
    PM2Target,
    PostgresBackup,
    RedisBackup,
    SQLiteBackup,
    SSHEndpoint,
    SystemdTarget,
    Target,
    TargetApprovals,
    TcpCheck,
    TelegramCheck,
    cron_trigger,
    parse_window,
)
from opsbot.config.telegram import (
    Person,
    Role,
    TelegramSettings,
    WebhookSettings,
)
from opsbot.errors import ConfigError

_yaml_data: ContextVar[dict[str, Any]] = ContextVar("opsbot_yaml_data", default={})  # noqa: B039


# --------------------------------------------------------------------------- incidents

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
    miniapp: MiniAppSettings = MiniAppSettings()
    oncall: OnCallSettings | None = None
    incidents: IncidentSettings = IncidentSettings()
    objectives: ObjectiveSettings = ObjectiveSettings()
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
        if self.miniapp.enabled and not self.web.enabled:
            raise ValueError("miniapp.enabled needs the web server (web.enabled: true)")
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

    def objective(self, name: str) -> Objective | None:
        """The target's objective (its own keys over ``objectives.default``); None: it has
        none (objectives off, ``objective: {enabled: false}``, its monitor off, no such
        target)."""
        target = self.targets.get(name)
        if target is None or not self.objectives.enabled:
            return None
        if not (target.monitor or self.alerts.monitor).enabled:
            return None  # no rounds to measure
        own = target.objective
        if own is None:
            return self.objectives.default
        return own.over(self.objectives.default) if own.enabled else None

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
    text = ""
    where = "environment"
    if path is not None:
        path = Path(path)
        where = str(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
        try:
            loaded = yaml.load(text, Loader=_LOADER)  # noqa: S506 (a safe loader, C or Python)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    token = _yaml_data.set(data)
    try:
        settings = Settings()
    except ValidationError as exc:
        raise ConfigError(_describe(exc, where, _lines_of(text))) from None
    finally:
        _yaml_data.reset(token)
    return _data_dir_beside(settings, path)


#: libyaml where PyYAML has it: a 10,000-target file in the pure-Python loader held ~125 MB
#: of tokens and marks at start-up, which the process kept as RSS.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _lines_of(text: str) -> dict[tuple[str | int, ...], int]:
    """Each key's line in the file, for an error message (composed only when one is needed)."""
    lines: dict[tuple[str | int, ...], int] = {}
    node = yaml.compose(text, Loader=_LOADER) if text else None
    if node is not None:
        _index_lines(node, (), lines)
    return lines


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


__all__ = [
    "LATENCY_BUCKETS",
    "NAME_PATTERN",
    "POSTMORTEM_FIELDS",
    "WORKBOOK_RULES",
    "Actions",
    "AlertSettings",
    "ApprovalPolicy",
    "Argv",
    "Backup",
    "BurnRule",
    "Check",
    "CommandCheck",
    "CommandTarget",
    "ComposeTarget",
    "ContainerTarget",
    "DockerEndpoint",
    "DockerTLS",
    "Duration",
    "Endpoint",
    "Escalation",
    "EscalationPolicy",
    "FilesBackup",
    "HttpCheck",
    "IncidentSettings",
    "K8sTarget",
    "Limits",
    "LocalEndpoint",
    "MetricCheck",
    "MiniAppSettings",
    "Minutes",
    "Monitor",
    "Name",
    "Objective",
    "ObjectiveOverride",
    "ObjectiveSettings",
    "OnCallSettings",
    "PM2Target",
    "Person",
    "PostgresBackup",
    "RedisBackup",
    "ReportSchedule",
    "Role",
    "Rotation",
    "SQLiteBackup",
    "SSHEndpoint",
    "Seconds",
    "Settings",
    "StatusComponent",
    "StatusPageSettings",
    "StoreSettings",
    "SystemdTarget",
    "Target",
    "TargetApprovals",
    "TcpCheck",
    "TelegramCheck",
    "TelegramSettings",
    "WebSettings",
    "WebhookSettings",
    "cron_trigger",
    "json_schema",
    "load_config",
    "parse_window",
    "tolerating_unreadable_secret_files",
]
