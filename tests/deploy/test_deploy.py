"""The deployment files as an operator uses them: README's first screen, Dockerfile, compose
(with the secrets its script makes and the Redis password it sets), the systemd unit
(``systemd-analyze``), and the Kubernetes manifests (parsed, their config validated).

No image is built here (no registry to pull the base from); compose files are checked with
``docker-compose config``, the unit with ``systemd-analyze verify`` and ``security``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from opsbot.config import SSHEndpoint, load_config
from opsbot.services import ssh_host
from tests.lab.ports import free_port, require_binary, start_process, stop_process, wait_until

REPO = Path(__file__).resolve().parents[2]
OPSBOT_UID, REDIS_UID = 10001, 999
TOKEN = "123456:" + "D" * 35


# --------------------------------------------------------------------------- README, install


def test_readme_first_screen_has_the_two_commands_and_they_exist() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.DOTALL)
    assert first_block is not None
    assert readme.index(first_block.group(0)) < 1200  # on the first screen
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["bash scripts/try.sh", "bash scripts/test.sh"]
    try_sh = (REPO / "scripts" / "try.sh").read_text()
    assert subprocess.run(["bash", "-n", str(REPO / "scripts" / "try.sh")]).returncode == 0
    # a venv, not the system's python (PEP 668), and the console on the bundled config
    assert '"$PY" -m venv .venv' in try_sh
    assert ".venv/bin/pip install --quiet --disable-pip-version-check --require-hashes" in try_sh
    assert "exec .venv/bin/opsbot console --config config/local.yaml" in try_sh
    by_hand = (
        "python3 -m venv .venv && .venv/bin/pip install -r requirements/runtime.txt"
        " && .venv/bin/pip install --no-deps . && .venv/bin/opsbot console"
    )
    assert by_hand in try_sh and by_hand in readme
    load_config(REPO / "config" / "local.yaml")


def test_the_distribution_name_is_ours_and_the_command_stays_opsbot() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["name"] == "opsbot-chatops"  # "opsbot" on PyPI is another project
    assert project["scripts"] == {"opsbot": "opsbot.cli:main"}
    assert "`pip install opsbot-chatops`" in (REPO / "README.md").read_text()


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_caches_dependencies_runs_unprivileged_on_a_pinned_base() -> None:
    lines = [
        line.strip()
        for line in (REPO / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    base = next(line for line in lines if line.startswith("FROM "))
    assert re.fullmatch(r"FROM python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base)
    copies = [i for i, line in enumerate(lines) if line.startswith("COPY ")]
    # alone: the dependency layer, the lock's exact versions with their hashes
    assert lines[copies[0]] == "COPY requirements/runtime.txt ./requirements/"
    deps = next(i for i, line in enumerate(lines) if "pip install" in line)
    assert lines[deps] == "RUN pip install --require-hashes -r requirements/runtime.txt"
    code = next(i for i, line in enumerate(lines) if line.startswith("COPY opsbot"))
    assert copies[0] < deps < code
    assert "pip install --no-deps --no-build-isolation ." in " ".join(lines[code:])
    user = next(line for line in lines if line.startswith("USER "))
    assert user == f"USER {OPSBOT_UID}:{OPSBOT_UID}"
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    ignored = (REPO / ".dockerignore").read_text().splitlines()
    for entry in (".git", ".venv", "data", "tests", "**/secrets", "deploy"):
        assert entry in ignored


# --------------------------------------------------------------------------- compose


@dataclass
class ComposeCopy:
    root: Path
    secrets: Path
    made: str


@pytest.fixture(scope="module")
def compose_copy() -> Iterator[ComposeCopy]:
    """The compose files in a copy of the repository, with secrets made by make-secrets.sh.

    The copy's folders are world-traversable (pytest's tmp_path is not), so that whether uid
    10001 can read a file depends on the file alone, as through a container's bind mount.
    """
    root = Path(tempfile.mkdtemp(prefix="opsbot-compose-"))
    root.chmod(0o755)
    try:
        yield make_compose_copy(root)
    finally:
        shutil.rmtree(root)


def make_compose_copy(root: Path) -> ComposeCopy:
    shutil.copy(REPO / "docker-compose.yml", root)
    shutil.copytree(REPO / "deploy" / "compose", root / "deploy" / "compose")
    (root / "config").mkdir()
    shutil.copy(REPO / "config" / "opsbot.example.yaml", root / "config" / "opsbot.yaml")
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "opsbot_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    key.chmod(0o600)
    (home / ".ssh" / "known_hosts").write_text("bastion ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n")
    env = {**os.environ, "OPSBOT_TOKEN": TOKEN, "SSH_KEY": str(key),
           "KNOWN_HOSTS": str(home / ".ssh" / "known_hosts")}  # fmt: skip
    script = root / "deploy" / "compose" / "make-secrets.sh"
    done = subprocess.run(
        ["bash", str(script)], env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 0, done.stderr
    return ComposeCopy(root, root / "deploy" / "compose" / "secrets", done.stdout)


def readable_by(uid: int, path: Path) -> bool:
    done = subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "cat", str(path)],
        capture_output=True,
    )
    return done.returncode == 0


def test_make_secrets_gives_each_file_to_the_container_user_that_reads_it(
    compose_copy: ComposeCopy,
) -> None:
    secrets = compose_copy.secrets
    expected = {
        "opsbot_token": (OPSBOT_UID, 0o400),
        "ssh_key": (OPSBOT_UID, 0o400),
        "redis_url": (OPSBOT_UID, 0o400),
        "redis.conf": (REDIS_UID, 0o400),
        "known_hosts": (0, 0o444),
    }
    for name, (uid, mode) in expected.items():
        info = (secrets / name).stat()
        assert (info.st_uid, info.st_mode & 0o777) == (uid, mode), name
        assert readable_by(uid or OPSBOT_UID, secrets / name), name
    assert not readable_by(OPSBOT_UID, secrets / "redis.conf")
    assert (secrets / "opsbot_token").read_text() == TOKEN + "\n"
    password = re.search(r"^requirepass ([0-9a-f]{64})$", (secrets / "redis.conf").read_text(),
                         re.MULTILINE)  # fmt: skip
    assert password is not None
    assert (secrets / "redis_url").read_text() == f"redis://:{password.group(1)}@redis:6379/0\n"
    # a second run keeps what exists (the password does not change under a running Redis)
    before = (secrets / "redis.conf").read_text()
    again = subprocess.run(
        ["bash", str(compose_copy.root / "deploy" / "compose" / "make-secrets.sh")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("kept ") == 5
    assert (secrets / "redis.conf").read_text() == before
    # what the script makes is never committed: the folder ignores all but its README
    ignore = (REPO / "deploy" / "compose" / "secrets" / ".gitignore").read_text().splitlines()
    assert [line for line in ignore if not line.startswith("#")] == [
        "*",
        "!.gitignore",
        "!README.md",
    ]


def compose_config(compose_copy: ComposeCopy, file: str) -> dict[str, Any]:
    binary = require_binary("docker-compose", "docker-compose")
    done = subprocess.run(
        [binary, "-f", str(compose_copy.root / file), "config"],
        capture_output=True, text=True, cwd=compose_copy.root,
        env={k: v for k, v in os.environ.items() if not k.startswith("OPSBOT_")},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config: dict[str, Any] = yaml.safe_load(done.stdout)
    return config


def settings_in_container(
    service: dict[str, Any], secrets: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> Any:
    """load_config as the container would: its environment, /run/secrets/X → the host file."""
    for name, value in service.get("environment", {}).items():
        for secret, spec in secrets.items():
            value = str(value).replace(f"/run/secrets/{secret}", spec["file"])
        monkeypatch.setenv(name, str(value))
    return load_config(None)


def test_single_replica_compose_is_valid_and_its_secrets_exist(
    compose_copy: ComposeCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = compose_config(compose_copy, "docker-compose.yml")
    opsbot = config["services"]["opsbot"]
    assert set(config["services"]) == {"opsbot"}
    for spec in config["secrets"].values():
        assert Path(spec["file"]).is_file(), spec
    mounts = {v.split(":")[1]: v.split(":")[0] for v in opsbot["volumes"]}
    key = Path(mounts["/home/opsbot/.ssh/opsbot_ed25519"])
    assert key.is_file() and readable_by(OPSBOT_UID, key)
    assert Path(mounts["/home/opsbot/.ssh/known_hosts"]).is_file()
    assert "/var/lib/opsbot" in mounts and opsbot["read_only"] is True
    assert opsbot["healthcheck"]["test"][0] == "CMD"
    settings = settings_in_container(opsbot, config["secrets"], monkeypatch)
    assert settings.store.backend == "sqlite"
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == TOKEN


def test_replicas_compose_waits_for_a_healthy_password_protected_redis(
    compose_copy: ComposeCopy, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = compose_config(compose_copy, "deploy/compose/docker-compose.replicas.yml")
    services = config["services"]
    replicas = [name for name in services if name.startswith("opsbot")]
    assert len(replicas) == 2
    redis = services["redis"]
    assert redis["healthcheck"]["test"][0] == "CMD-SHELL"
    assert redis["command"] == ["redis-server", "/run/secrets/redis_conf"]
    assert {s["source"] for s in redis["secrets"]} == {"redis_conf"}
    for spec in config["secrets"].values():
        assert Path(spec["file"]).is_file(), spec
    ports = set()
    for name in replicas:
        service = services[name]
        assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
        assert "healthcheck" in service
        ports.add(service["ports"][0])
        settings = settings_in_container(service, config["secrets"], monkeypatch)
        assert settings.store.backend == "redis"
        assert settings.store.redis_url is not None
        assert settings.store.redis_url.get_secret_value().startswith("redis://:")
    assert len(ports) == 2


@pytest.fixture(scope="module")
def compose_redis(compose_copy: ComposeCopy) -> Iterator[int]:
    """redis-server started on the generated redis.conf, as the compose file starts it."""
    binary = require_binary("redis-server", "redis-server")
    port = free_port()
    work = compose_copy.root / "redis-data"
    work.mkdir()
    log = compose_copy.root / "redis.log"
    conf = compose_copy.secrets / "redis.conf"
    proc = start_process([binary, str(conf), "--port", str(port), "--bind", "127.0.0.1",
                          "--dir", str(work), "--daemonize", "no"], log)  # fmt: skip
    try:
        wait_until(lambda: b"NOAUTH" in _cli(port), what="redis-server", log=log, proc=proc)
        yield port
    finally:
        stop_process(proc)


def _cli(port: int, *args: str, env: dict[str, str] | None = None) -> bytes:
    done = subprocess.run(["redis-cli", "-p", str(port), *args, "ping"], capture_output=True,
                          env=env)  # fmt: skip
    return done.stdout + done.stderr


def test_the_redis_healthcheck_passes_only_with_the_generated_password(
    compose_copy: ComposeCopy, compose_redis: int
) -> None:
    config = compose_config(compose_copy, "deploy/compose/docker-compose.replicas.yml")
    check = config["services"]["redis"]["healthcheck"]["test"][1]
    conf = str(compose_copy.secrets / "redis.conf")
    # $$ is compose's escape for $ (`config` may print it either way); in the container
    # redis-cli finds the default port
    command = (
        check.replace("$$", "$")
        .replace("/run/secrets/redis_conf", conf)
        .replace("redis-cli ping", f"redis-cli -p {compose_redis} ping")
    )
    assert subprocess.run(["sh", "-c", command]).returncode == 0
    assert b"NOAUTH" in _cli(compose_redis)  # without the password: refused
    wrong = subprocess.run(["sh", "-c", command.replace(conf, "/dev/null")])
    assert wrong.returncode != 0


# --------------------------------------------------------------------------- systemd

UNIT = REPO / "deploy" / "systemd" / "opsbot.service"


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    analyze = require_binary("systemd-analyze", "systemd")
    text = UNIT.read_text()
    for line in ("DynamicUser=yes", "ProtectSystem=strict", "StateDirectory=opsbot",
                 "NoNewPrivileges=yes", "LoadCredential=opsbot_token:", "ProtectHome=yes",
                 "CapabilityBoundingSet=\n"):  # fmt: skip
        assert line in text, line
    # verify checks that ExecStart's binary exists: point it at this checkout's opsbot
    installed = Path(sys.executable).parent / "opsbot"
    assert installed.exists()
    unit = tmp_path / "opsbot.service"
    unit.write_text(text.replace("/opt/opsbot/bin/opsbot", str(installed)))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True)
    assert verified.returncode == 0 and verified.stderr.strip() == "", verified.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(unit)],
                              capture_output=True, text=True)  # fmt: skip
    level = re.search(r"Overall exposure level for opsbot\.service: ([\d.]+)", security.stdout)
    assert level is not None, security.stdout + security.stderr
    assert float(level.group(1)) <= 2.0, security.stdout


def test_systemd_credentials_reach_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unit's Environment= lines, with %S and %d as systemd fills them, make a config."""
    state, credentials = tmp_path / "state", tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "opsbot_token").write_text(TOKEN + "\n")
    (credentials / "ssh_key").write_text("key\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            name, _, value = line.removeprefix("Environment=").partition("=")
            value = value.replace("%S", str(state)).replace("%d", str(credentials))
            monkeypatch.setenv(name, value)
    settings = load_config(None)
    assert settings.telegram.token is not None
    assert settings.telegram.token.get_secret_value() == TOKEN
    assert settings.data_dir == state / "opsbot"
    # what the unit's comment tells to write for SSH endpoints
    endpoint = SSHEndpoint(type="ssh", host="h", user="u",
                           key_files=[Path("$CREDENTIALS_DIRECTORY/ssh_key")])  # fmt: skip
    assert ssh_host("h", endpoint).client_keys == (credentials / "ssh_key",)
    assert "key_files: [$CREDENTIALS_DIRECTORY/ssh_key]" in UNIT.read_text()


# --------------------------------------------------------------------------- Kubernetes

K8S = REPO / "deploy" / "kubernetes"


def manifests() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                found[doc["kind"]] = doc
    return found


def test_kubernetes_manifests_have_what_a_cluster_needs() -> None:
    docs = manifests()
    assert {"Deployment", "Secret", "ConfigMap", "Service", "PodDisruptionBudget"} <= set(docs)
    deployment = docs["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert deployment["spec"]["replicas"] >= 2
    assert docs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] == 1
    assert docs["Service"]["spec"]["selector"].items() <= labels.items()
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == OPSBOT_UID
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "http"}, probe
    assert docs["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes
    assert volumes["secrets"]["secret"]["secretName"] == docs["Secret"]["metadata"]["name"]
    assert volumes["config"]["configMap"]["name"] == docs["ConfigMap"]["metadata"]["name"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "secret.yaml" not in kustomization["resources"]  # an example, never applied
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file()
    assert ports["http"] == 8080


def test_the_configmap_is_a_valid_config_with_the_secrets_mounted(tmp_path: Path) -> None:
    docs = manifests()
    pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, value in docs["Secret"]["stringData"].items():
        (secrets / name).write_text(value)
    text = docs["ConfigMap"]["data"]["opsbot.yaml"].replace(mounts["secrets"], str(secrets))
    config = tmp_path / "opsbot.yaml"
    config.write_text(text)
    args = container["args"]
    assert args[args.index("--config") + 1] == f"{mounts['config']}/opsbot.yaml"
    settings = load_config(config)
    assert settings.web.enabled and settings.web.host == "0.0.0.0"
    assert settings.web.port == container["ports"][0]["containerPort"]
    assert settings.store.backend == "redis"  # replicas share their state
    assert settings.telegram.token is not None
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["OPSBOT_DATA_DIR"] == mounts["data"]
