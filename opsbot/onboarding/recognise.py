"""What one runbook command says about the inventory: a target, a check, a backup, or nothing.

``recognise(words, cwd)`` reads one simple command (``shell.simple_commands``) and returns
``Sighting``s; ``runbook.py`` turns them into a draft. Destructive commands (``down -v``,
``rm -rf``, ``volume prune``, ``delete namespace``, ``DROP``, ``pm2 kill``, ``setWebhook``…) are
sightings of their own and never become anything routine.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from opsbot.onboarding import probes
from opsbot.onboarding.shell import options
from opsbot.onboarding.sighting import Sighting, What, clean, infrastructure

#: Programs that are understood and draft nothing (reading files, moving around, git).
QUIET = frozenset(
    (
        "cd", "echo", "printf", "grep", "egrep", "rg", "less", "more", "cat", "head", "ls", "ll",
        "df", "du", "free", "top", "htop", "ps", "uptime", "git", "export", "source", ".", "exit",
        "sleep", "awk", "sed", "wc", "jq", "sort", "uniq", "find", "which", "whoami", "date",
        "mkdir", "chmod", "chown", "ss", "netstat", "lsof", "nslookup", "dig", "host", "ping",
        "traceroute", "openssl", "vim", "nano", "vi", "ln", "mv", "touch", "tee", "xargs", "env",
        "kill", "pkill", "nc", "telnet", "iostat", "vmstat", "dmesg", "hostname", "stat", "file",
        "diff", "read", "set", "unset", "true", "false", "test", "[", "history", "clear", "alias"
    )
)

_DESTRUCTIVE_TEXT = re.compile(
    r"\bDROP\s+(?:TABLE|DATABASE|SCHEMA|INDEX|USER|ROLE|VIEW)\b|\bTRUNCATE\b|\bFLUSH(?:ALL|DB)\b"
    r"|\b(?:set|delete)Webhook\b|\bDELETE\s+FROM\b",
    re.IGNORECASE,
)

ENDPOINT_NOTE = "endpoint: an ssh endpoint of the host this runs on (endpoints: {type: ssh, …})"


def recognise(words: list[str], cwd: str | None = None) -> list[Sighting]:
    """The sightings of one simple command; ``cwd`` is where an earlier ``cd`` went."""
    if not words:
        return []
    text = " ".join(words)
    program = words[0].rsplit("/", 1)[-1]
    if _DESTRUCTIVE_TEXT.search(text) or _rm_rf(words):
        return [Sighting("destructive")]
    if program == "docker" and len(words) > 1 and words[1] == "compose":
        return _compose(["docker", "compose"], words[2:], cwd)
    handler = _HANDLERS.get(program)
    if handler is not None:
        return handler(words, cwd)
    if program in QUIET:
        return [Sighting("known")]
    return [Sighting("unknown")]


def _operated(reading_logs: bool, name: str) -> What:
    """Restarting operates a thing; reading its logs does too, unless it is a database or proxy
    (``docker compose logs db`` is looking at the database, not running it)."""
    return "mention" if reading_logs and infrastructure(name) else "target"


def _rm_rf(words: list[str]) -> bool:
    return words[0] == "rm" and any(re.fullmatch(r"-[a-zA-Z]*[rR][a-zA-Z]*", w) for w in words)


# --------------------------------------------------------------------------- process managers


_PM2_OPERATE = {"restart", "reload", "stop", "start", "logs", "log"}
_PM2_READ = {"status", "describe", "show", "info", "env"}


def _pm2(words: list[str], cwd: str | None) -> list[Sighting]:
    opts, rest = options(words[1:], {"--name", "-n", "--lines", "--time", "--only"})
    if not rest:
        return [Sighting("known")]
    sub, args = rest[0], rest[1:]
    if sub in ("kill", "delete", "del", "flush"):
        return [Sighting("destructive")]
    name = opts.get("--name") or opts.get("-n")
    if name is None and args and not re.search(r"\.(?:[cm]?js|json|ya?ml)$", args[0]):
        name = args[0]
    if sub in _PM2_OPERATE | _PM2_READ and name and name != "all" and not name.isdigit():
        what: What = _operated(sub in ("logs", "log"), name) if sub in _PM2_OPERATE else "mention"
        if clean(name):
            return [Sighting(what, "pm2", name, {"process": name}, (ENDPOINT_NOTE,))]
    return [Sighting("known")]


_COMPOSE_GLOBAL = {"-f", "--file", "-p", "--project-name", "--project-directory", "--env-file",
                   "--profile", "--ansi", "--parallel"}  # fmt: skip
_COMPOSE_SUB = {"--tail", "-n", "-t", "--timeout", "--scale", "-u", "--user", "-w", "--workdir",
                "-e", "--env", "--index", "--since", "--until", "--format", "--pull"}  # fmt: skip
_COMPOSE_OPERATE = {"restart", "logs", "up", "start", "stop"}
_COMPOSE_READ = {"ps", "top", "port", "images", "events"}


def _compose_v1(words: list[str], cwd: str | None) -> list[Sighting]:
    return _compose(["docker-compose"], words[1:], cwd)


def _compose(command: list[str], words: list[str], cwd: str | None) -> list[Sighting]:
    glob, rest = _leading_options(words, _COMPOSE_GLOBAL)
    if not rest:
        return [Sighting("known")]
    sub, args = rest[0], rest[1:]
    if sub in ("exec", "run"):
        _, inner = _leading_options(args, _COMPOSE_SUB)
        args = inner[:1]
        inner = inner[1:]
    sub_opts, services = options(args, _COMPOSE_SUB)
    if sub == "down" and ({"-v", "--volumes", "--rmi"} & set(sub_opts)):
        return [Sighting("destructive")]
    if sub == "rm" and ({"-v", "--volumes"} & set(sub_opts)):
        return [Sighting("destructive")]
    file, notes = _compose_file(glob, cwd)
    project = glob.get("-p") or glob.get("--project-name")
    prefix = [*command, *(["-p", project] if project and clean(project) else [])]
    if sub in ("exec", "run") and services:
        via = [*prefix, *(["-f", file] if file else []), "exec", "-T", services[0]]
        return _inside(via, inner, services[0], cwd)
    what: What | None = "target" if sub in _COMPOSE_OPERATE else None
    if sub in _COMPOSE_READ:
        what = "mention"
    if what is None or not services:
        return [Sighting("known")]
    found = []
    for service in services:
        if not clean(service):
            continue
        fields: dict[str, Any] = {"file": file or "docker-compose.yml", "service": service}
        if prefix != ["docker", "compose"]:
            fields["compose_command"] = prefix
        seen = _operated(sub == "logs", service) if what == "target" else what
        found.append(Sighting(seen, "compose", service, fields, (*notes, ENDPOINT_NOTE)))
    return found or [Sighting("known")]


def _leading_options(words: list[str], with_value: set[str]) -> tuple[dict[str, str], list[str]]:
    """Options before the subcommand only (``docker compose -f x logs -f bot``)."""
    found: dict[str, str] = {}
    i = 0
    while i < len(words) and words[i].startswith("-"):
        word = words[i]
        if "=" in word:
            key, _, value = word.partition("=")
            found[key] = value
        elif word in with_value and i + 1 < len(words):
            found[word] = words[i + 1]
            i += 1
        else:
            found[word] = ""
        i += 1
    if "--file" in found:
        found.setdefault("-f", found["--file"])
    return found, words[i:]


def _compose_file(glob: dict[str, str], cwd: str | None) -> tuple[str | None, tuple[str, ...]]:
    named = clean(glob.get("-f", ""))
    folder = clean(glob.get("--project-directory", "")) or (cwd and clean(cwd))
    if named and named.startswith("/"):
        return named, ()
    if folder and folder.startswith("/"):
        return posixpath.join(folder, named or "docker-compose.yml"), ()
    if named:
        return named, (f"file: {named} is relative in the runbook: give its absolute path",)
    return None, ("file: the absolute path of the compose file on the host",)


_DOCKER_OPERATE = {"restart", "logs", "start", "stop"}
_DOCKER_READ = {"inspect", "stats", "top", "port"}


def _docker(words: list[str], cwd: str | None) -> list[Sighting]:
    _, rest = _leading_options(words[1:], {"-H", "--host", "--context", "-c", "--config"})
    if rest[:1] == ["container"]:
        rest = rest[1:]
    if not rest:
        return [Sighting("known")]
    sub, args = rest[0], rest[1:]
    if sub in ("rm", "rmi", "kill") or (sub in ("volume", "system", "image", "network",
                                                 "container", "builder") and "prune" in args):
        return [Sighting("destructive")]
    if sub == "volume" and args[:1] == ["rm"]:
        return [Sighting("destructive")]
    opts, names = options(args, {"--tail", "-n", "--since", "--until", "-t", "--time",
                                 "--format", "-f", "--filter", "-u", "--user", "-w", "-e",
                                 "--env", "--name", "-p", "--publish", "-v", "--volume",
                                 "--network", "--restart", "--env-file", "--signal"})  # fmt: skip
    if sub == "run":
        name = opts.get("--name")
        if name and clean(name):
            return [Sighting("target", "container", name, {"container": name})]
        return [Sighting("known")]
    if sub == "exec":
        _, inner = _leading_options(args, {"-u", "--user", "-w", "--workdir", "-e", "--env"})
        if inner:
            return _inside(["docker", "exec", inner[0]], inner[1:], inner[0], cwd)
        return [Sighting("known")]
    what: What | None = "target" if sub in _DOCKER_OPERATE else None
    if sub in _DOCKER_READ:
        what = "mention"
    named = [n for n in names if clean(n)]
    if what is None or not named:
        return [Sighting("known")]
    return [
        Sighting(_operated(sub == "logs", n) if what == "target" else what, "container", n,
                 {"container": n})
        for n in named
    ]  # fmt: skip


#: A backup's programs, run inside the container when the runbook runs them there.
_TOOLS = {"postgres": ("pg_dump", "pg_restore", "psql"), "sqlite": ("sqlite3",),
          "redis": ("redis_cli",)}  # fmt: skip


def _inside(via: list[str], inner: list[str], where: str, cwd: str | None) -> list[Sighting]:
    """A command run in a container (``docker compose exec postgres pg_dump …``)."""
    how = "compose" if "compose" in via[0] + via[1] else via[0]  # else docker, kubectl
    through = f"{how}:{where}"
    found = recognise(inner, cwd) if inner else []
    out = []
    for s in found:
        if s.what in ("check", "backup"):
            fields = dict(s.fields)
            if fields.get("type") == "http":  # a URL of the container's network: curl it there
                fields = {"type": "command", "argv": inner}
            if "argv" in fields:
                fields["argv"] = [*via, *fields["argv"]]
            for tool in _TOOLS.get(str(fields.get("type")), ()):
                fields[tool] = [*via, "redis-cli" if tool == "redis_cli" else tool]
            out.append(
                Sighting(s.what, s.kind, s.name, fields, s.notes, s.near or where, through)
            )
        elif s.what == "destructive":
            out.append(s)
    return out or [Sighting("known")]


def _systemctl(words: list[str], cwd: str | None) -> list[Sighting]:
    opts, rest = options(words[1:], {"-n", "--lines", "-H", "--host", "-M", "-p"})
    if not rest:
        return [Sighting("known")]
    sub, units = rest[0], rest[1:]
    operate = {"restart", "reload", "start", "stop", "try-restart", "reload-or-restart"}
    read = {"status", "is-active", "is-failed", "show", "cat"}
    if sub not in operate | read:
        return [Sighting("known")]
    user = "--user" in opts
    return [_unit(u, "target" if sub in operate else "mention", user) for u in units
            if clean(u) and not _engine(u)] or [Sighting("known")]  # fmt: skip


def _engine(unit: str) -> bool:
    """The container engine's own units: opsbot reaches it as an endpoint, it is no target."""
    return unit.removesuffix(".service").removesuffix(".socket") in ("docker", "containerd")


def _unit(unit: str, what: What, user: bool = False) -> Sighting:
    name = unit.removesuffix(".service")
    fields: dict[str, Any] = {"unit": unit if "." in unit else f"{unit}.service"}
    if user:
        fields["user_unit"] = True
    return Sighting(what, "systemd", name, fields, (ENDPOINT_NOTE,))


def _journalctl(words: list[str], cwd: str | None) -> list[Sighting]:
    opts, _ = options(words[1:], {"-u", "--unit", "-n", "--lines", "--since", "--until", "-p",
                                  "-o", "--output", "-b"})  # fmt: skip
    unit = opts.get("-u") or opts.get("--unit")
    if unit and clean(unit) and not _engine(unit):
        return [_unit(unit, _operated(True, unit), "--user" in opts)]
    return [Sighting("known")]


# --------------------------------------------------------------------------- kubernetes


_K8S_OPTS = {"-n", "--namespace", "--context", "-l", "--selector", "-c", "--container",
             "--tail", "--since", "--to-revision", "--replicas", "-o", "--output",
             "--timeout", "--kubeconfig"}  # fmt: skip


def _kubectl(words: list[str], cwd: str | None) -> list[Sighting]:
    if "exec" in words[1:] and "--" in words:
        return _kubectl_exec(words, cwd)
    opts, rest = options(words[1:], _K8S_OPTS)
    if not rest:
        return [Sighting("known")]
    if rest[0] == "delete":
        return [Sighting("destructive")]
    sub = rest[0]
    args = rest[2:] if sub in ("rollout", "set") else rest[1:]
    what: What = "target" if sub in ("rollout", "logs", "scale", "set", "restart") else "mention"
    reading_logs = sub == "logs"
    deployment = None
    for i, arg in enumerate(args):
        kind, _, name = arg.partition("/")
        if kind in ("deployment", "deploy", "deployments", "deployment.apps") and name:
            deployment = name
            break
        if kind in ("deployment", "deploy", "deployments") and i + 1 < len(args):
            deployment = args[i + 1]
            break
    if sub not in ("rollout", "logs", "scale", "set", "get", "describe", "restart") or not (
        deployment and clean(deployment)
    ):
        return [Sighting("known")]
    fields: dict[str, Any] = {"deployment": deployment}
    namespace = opts.get("-n") or opts.get("--namespace")
    if namespace and clean(namespace):
        fields["namespace"] = namespace
    context = opts.get("--context")
    if context and clean(context):
        fields["context"] = context
    what = _operated(reading_logs, deployment) if what == "target" else what
    return [Sighting(what, "k8s", deployment, fields, (ENDPOINT_NOTE,))]


_POD_NOTE = (
    "a pod's name changes when it is recreated: run it in the workload instead "
    "(kubectl exec deploy/NAME, statefulset/NAME)"
)


def _kubectl_exec(words: list[str], cwd: str | None) -> list[Sighting]:
    """``kubectl exec -n ns POD -- pg_dump …``: what runs inside, run through kubectl."""
    split = words.index("--")
    opts, rest = options(words[1:split], _K8S_OPTS)
    pods = [w for w in rest if w != "exec"]
    if not pods or not clean(pods[0]):
        return [Sighting("known")]
    via = ["kubectl", "exec"]
    for flag in ("-n", "--namespace", "--context", "-c", "--container"):
        if clean(opts.get(flag, "")):
            via += [flag, opts[flag]]
    via += [pods[0], "--"]
    found = _inside(via, words[split + 1 :], pods[0], cwd)
    if "/" in pods[0]:
        return found
    return [
        replace(s, notes=(*s.notes, _POD_NOTE)) if s.what in ("check", "backup") else s
        for s in found
    ]


_HANDLERS: dict[str, Callable[[list[str], str | None], list[Sighting]]] = {
    "pm2": _pm2,
    "docker-compose": _compose_v1,
    "docker": _docker,
    "systemctl": _systemctl,
    "journalctl": _journalctl,
    "kubectl": _kubectl,
    "curl": probes.curl,
    "wget": probes.curl,
    "http": probes.curl,
    "pg_isready": probes.pg_isready,
    "redis-cli": probes.redis_cli,
    "pg_dump": probes.pg_dump,
    "pg_restore": probes.pg_dump,
    "sqlite3": probes.sqlite3,
    "cp": probes.copy,
    "rsync": probes.copy,
    "tar": probes.tar,
    "tail": probes.tail,
    "psql": lambda words, cwd: [Sighting("known")],
}

#: The programs whose inline code in a list item is read as a command.
PROGRAMS = frozenset(_HANDLERS)
