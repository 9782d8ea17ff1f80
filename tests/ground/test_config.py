"""Configuration: YAML + environment, secrets from files, errors that name field and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from opsbot.config import ComposeTarget, Role, load_config
from opsbot.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_example_and_local_configs_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPSBOT_TELEGRAM__TOKEN", "123456:" + "A" * 35)
    example = load_config(REPO / "config" / "opsbot.example.yaml")
    kinds = {t.kind for t in example.targets.values()}
    assert {"pm2", "systemd", "compose", "container", "k8s", "command"} <= kinds
    assert {p.role for p in example.people} == {Role.admin, Role.operator, Role.viewer}
    monkeypatch.delenv("OPSBOT_TELEGRAM__TOKEN")
    local = load_config(REPO / "config" / "local.yaml")
    assert local.telegram.token is None
    assert all(t.endpoint == "local" for t in local.targets.values())


def test_errors_name_the_field_and_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "telegram:\n"
        "  api_url: ftp://nope\n"
        "endpoints:\n"
        "  vps: {type: ssh, host: h}\n"
        "targets:\n"
        "  quizbot:\n"
        "    kind: compose\n"
        "    endpoint: vps\n"
        "    service: bot\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}, line 2: telegram.api_url: must start with http:// or https://" in message
    assert f"{path}, line 4: endpoints.vps.user: Field required" in message
    assert f"{path}, line 6: targets.quizbot.file: Field required" in message
    assert "Traceback" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("targets: [1, 2", "not valid YAML"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("targets:\n  Bad Name!: {kind: command, actions: {status: [true]}}\n", "targets.Bad"),
        ("targets:\n  x: {kind: container}\n", "needs a docker endpoint"),
        ("targets:\n  x: {kind: command, endpoint: nowhere, actions: {status: [a]}}\n", "unknown"),
        ("targets:\n  x: {kind: command}\n", "needs actions.status or at least one check"),
        ("people: [{id: 1, name: a}, {id: 1, name: b}]\n", "listed twice"),
        ("surprise: 1\n", "surprise: Extra inputs are not permitted"),
    ],
)
def test_invalid_files_are_refused_clearly(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(path)
    assert expected in str(caught.value)


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("telegram:\n  ops_chat_id: -1\n  api_url: http://file.example\n")
    monkeypatch.setenv("OPSBOT_TELEGRAM__OPS_CHAT_ID", "-100200300")
    monkeypatch.setenv("OPSBOT_TELEGRAM__TOKEN", "42:from-env-secret")
    settings = load_config(path)
    assert settings.telegram.ops_chat_id == -100200300
    assert settings.telegram.api_url == "http://file.example"
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == "42:from-env-secret"
    assert "from-env-secret" not in repr(settings)
    assert "from-env-secret" not in str(settings.telegram)


def test_secrets_come_from_files_and_are_collected_for_redaction(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("99:file-secret-value\n")
    path = tmp_path / "c.yaml"
    path.write_text(
        f"telegram:\n  token_file: {tmp_path / 'token'}\n"
        "targets:\n"
        "  bot:\n"
        "    kind: command\n"
        "    checks: [{type: telegram, token: '77:inline-check-token'}]\n"
    )
    settings = load_config(path)
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == "99:file-secret-value"
    assert sorted(settings.secrets()) == ["77:inline-check-token", "99:file-secret-value"]


def test_a_missing_secret_file_names_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"telegram:\n  token_file: {tmp_path / 'absent'}\n")
    with pytest.raises(ConfigError, match="token_file: cannot read"):
        load_config(path)


def test_compose_defaults_and_schema() -> None:
    from opsbot.config import json_schema

    schema = json_schema()
    assert "targets" in schema["properties"]
    assert json.dumps(schema)  # serialisable for editors
    target = ComposeTarget(kind="compose", file="/srv/x.yml", service="bot")
    assert target.compose_command == ["docker", "compose"]
    assert target.endpoint == "local"


def test_an_unreadable_secret_file_says_which_variable_can_carry_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"store:\n  backend: redis\n  redis_url_file: {tmp_path / 'absent'}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert f"{path}, line 3: store: redis_url_file: cannot read {tmp_path / 'absent'}" in message
    assert "or give the secret itself in OPSBOT_STORE__REDIS_URL" in message


def test_secret_files_may_live_in_the_systemd_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "opsbot_token").write_text("55:from-a-credential\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("OPSBOT_TELEGRAM__TOKEN_FILE", "$CREDENTIALS_DIRECTORY/opsbot_token")
    settings = load_config(None)
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == "55:from-a-credential"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("telegram:\n  tokn: x\n", "line 2: telegram.tokn: Extra inputs are not permitted; "
                                   "did you mean 'token'?"),
        ("endpoints:\n  vps: {type: ssh, hostname: h, user: u}\n",
         "line 2: endpoints.vps.hostname: Extra inputs are not permitted; did you mean 'host'?"),
        ("targets:\n  x:\n    kind: command\n    actions: {status: [a]}\n    verify_deadlin: 5\n",
         "line 5: targets.x.verify_deadlin: Extra inputs are not permitted; "
         "did you mean 'verify_deadline'?"),
        ("targets:\n  x:\n    kind: command\n    actions: {statu: [a]}\n",
         "targets.x.actions.statu: Extra inputs are not permitted; did you mean 'status'?"),
        ("approvals:\n  zzz: 1\n", "approvals.zzz: Extra inputs are not permitted (valid here: "
                                   "allow_self_approval, allowed_hours, backup, deploy, required, "
                                   "restart, restore, rollback, step_up, step_up_actions, "
                                   "step_up_timeout, totp_key, totp_key_file, ttl)"),
    ],
)  # fmt: skip
def test_a_misspelt_key_gets_the_nearest_valid_one(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert expected in str(caught.value)


def test_a_bad_environment_value_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("telegram:\n  ops_chat_id: -1\n")
    monkeypatch.setenv("OPSBOT_TELEGRAM__OPS_CHAT_ID", "ops")
    monkeypatch.setenv("OPSBOT_STORE__BACKEN", "redis")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert (
        "environment variable OPSBOT_TELEGRAM__OPS_CHAT_ID: telegram.ops_chat_id: "
        "Input should be a valid integer" in message
    )
    assert "line 2" not in message
    assert (
        "environment variable OPSBOT_STORE__BACKEN: store.backen: Extra inputs are not "
        "permitted; did you mean OPSBOT_STORE__BACKEND?" in message
    )


def test_a_relative_data_dir_is_beside_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc" / "c.yaml"
    path.write_text("data_dir: ./state\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(path).data_dir == tmp_path / "etc" / "state"
    assert load_config(Path("etc/c.yaml")).data_dir == tmp_path / "etc" / "state"
    path.write_text(f"data_dir: {tmp_path / 'abs'}\n")
    assert load_config(path).data_dir == tmp_path / "abs"
    path.write_text("targets: {}\n")  # the default, ./data, is beside the file too
    assert load_config(path).data_dir == tmp_path / "etc" / "data"
    monkeypatch.setenv("OPSBOT_DATA_DIR", "rel")  # a shell's relative path: from where it runs
    assert load_config(path).data_dir == Path("rel")


def test_json_logs_are_one_redacted_object_per_line_and_libraries_are_quiet(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import logging

    from opsbot.logsetup import CHATTY, setup_logging

    monkeypatch.setenv("OPSBOT_TELEGRAM__TOKEN", "4242:json-log-secret")
    settings = load_config(None)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        setup_logging(settings, "json")
        logging.getLogger("opsbot.test").warning("token is %s", "4242:json-log-secret")
        logging.getLogger("apscheduler.scheduler").info("Running job every 3 s")
        logging.getLogger("asyncssh").info("Opening SSH connection")
        logging.getLogger("opsbot.test").info("plain info")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name in (*CHATTY, "httpx"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(e["level"], e["logger"]) for e in lines] == [
        ("WARNING", "opsbot.test"),
        ("INFO", "opsbot.test"),
    ]
    assert "json-log-secret" not in lines[0]["message"]
    assert lines[0]["ts"].endswith("Z")


def test_an_unreadable_secret_file_named_in_the_environment_is_blamed_on_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("telegram:\n  ops_chat_id: -1\n")
    monkeypatch.setenv("OPSBOT_TELEGRAM__TOKEN_FILE", str(tmp_path / "absent"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert (
        "environment variable OPSBOT_TELEGRAM__TOKEN_FILE: telegram: token_file: cannot read"
        in str(caught.value)
    )


def test_cron_weekdays_are_crontabs_where_sunday_is_0_and_7() -> None:
    """APScheduler 3 alone reads ``1-5`` as Tuesday to Saturday; opsbot reads it as crontab."""
    from datetime import UTC, datetime

    from opsbot.config.targets import cron_trigger

    saturday = datetime(2026, 12, 5, 12, tzinfo=UTC)

    def next_days(expression: str, count: int = 7) -> list[str]:
        trigger, when, days = cron_trigger(expression), saturday, []
        for _ in range(count):
            when = trigger.get_next_fire_time(None, when)
            days.append(when.strftime("%a"))
            when = when.replace(hour=23, minute=59)
        return days

    assert next_days("0 3 * * 1-5", 5) == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert next_days("0 3 * * 0", 2) == ["Sun", "Sun"] == next_days("0 3 * * 7", 2)
    assert next_days("0 3 * * mon-fri", 5) == next_days("0 3 * * 1-5", 5)
    assert next_days("0 3 * * */2", 4) == ["Sun", "Tue", "Thu", "Sat"]
    with pytest.raises(ValueError, match="not a cron expression"):
        cron_trigger("0 3 * * 8")
