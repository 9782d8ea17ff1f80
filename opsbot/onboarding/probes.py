"""Recognisers of the commands that probe or back up: health URLs, Bot API, pg, Redis, SQLite, tar.

Each takes one simple command's words and returns its ``Sighting``s (see ``recognise.py``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from opsbot.onboarding.shell import is_placeholder, options
from opsbot.onboarding.sighting import Sighting, clean, relative

_HEALTH_PATH = re.compile(r"/(?:health[a-z_-]*|healthz|ready|readyz|livez|ping|status)/?$", re.I)


def curl(words: list[str], cwd: str | None) -> list[Sighting]:
    opts, args = options(words[1:], {"-X", "--request", "-d", "--data", "--data-raw", "-H",
                                     "--header", "-u", "--user", "-o", "--output", "-m",
                                     "--max-time", "-w", "--write-out", "-O", "-T",
                                     "--connect-timeout", "-F", "--form", "-A"})  # fmt: skip
    urls = [a for a in args if re.match(r"^(?:https?://|localhost[:/]|127\.0\.0\.1[:/])", a)]
    if not urls:
        return [Sighting("known")]
    url = urls[0] if "://" in urls[0] else f"http://{urls[0]}"
    method = (opts.get("-X") or opts.get("--request") or "GET").upper()
    posting = method != "GET" or {"-d", "--data", "--data-raw", "-F", "--form", "-T"} & set(opts)
    telegram = re.search(r"api\.telegram\.org/bot[^/]*/(\w+)", url)
    if telegram:
        if telegram.group(1) in ("getMe", "getWebhookInfo"):
            # token_file is named after the target it joins (runbook.py): never the URL's token
            note = "token_file: write the bot's token into this file (0600)"
            return [Sighting("check", fields={"type": "telegram"}, near="bot", notes=(note,))]
        return [Sighting("known")]
    if posting:
        return [Sighting("known")]
    parts = urlsplit(url)
    if not _HEALTH_PATH.search(parts.path or ""):
        return [Sighting("known")]
    if is_placeholder(url):
        note = f"checks: an http check of {url} (replace the placeholder with the real address)"
        return [Sighting("note", notes=(note,))]
    check: dict[str, Any] = {"type": "http", "url": url}
    if "-k" in opts or "--insecure" in opts:
        check["verify_tls"] = False
    return [Sighting("check", fields=check)]


def _argv_check(words: list[str], near: str, drop: set[str]) -> list[Sighting]:
    """A probe command as a command check, secrets (``-a PASS``) and placeholders left out."""
    argv: list[str] = []
    words_iter = iter(words)
    for word in words_iter:
        if word in drop:
            next(words_iter, None)  # the option's value: a password, a URL with one
            continue
        if word.startswith(("--pass=", "--password=", "--user=")) or re.fullmatch(r"-a.+", word):
            continue
        if is_placeholder(word):
            note = f"checks: {' '.join(words)} (fill in the placeholder)"
            return [Sighting("note", notes=(note,), near=near)]
        argv.append(word)
    return [Sighting("check", fields={"type": "command", "argv": argv}, near=near)]


def pg_isready(words: list[str], cwd: str | None) -> list[Sighting]:
    return _argv_check(words, "postgres", set())


def redis_cli(words: list[str], cwd: str | None) -> list[Sighting]:
    _, args = options(words[1:], {"-h", "-p", "-a", "-n", "-u", "--user", "--pass", "-s"})
    command = [a.lower() for a in args]
    if command[:1] == ["ping"]:
        return _argv_check(words, "redis", {"-a", "--pass", "-u", "--user"})
    if command[:1] == ["bgsave"] or command[:1] == ["save"]:
        backup = {"type": "redis", "dump_path": "/var/lib/redis/dump.rdb"}
        note = "dump_path: the server's RDB file (redis-cli CONFIG GET dir, dbfilename)"
        return [Sighting("backup", fields=backup, near="redis", notes=(note,))]
    return [Sighting("known")]


# --------------------------------------------------------------------------- backups


def pg_dump(words: list[str], cwd: str | None) -> list[Sighting]:
    opts, args = options(words[1:], {"-d", "--dbname", "-h", "--host", "-p", "--port", "-U",
                                     "--username", "-F", "--format", "-f", "--file", "-t",
                                     "-n", "-j", "--jobs", "-Z", "--compress"})  # fmt: skip
    database = opts.get("-d") or opts.get("--dbname") or (args[0] if args else "")
    if words[0].endswith("pg_restore"):
        database = opts.get("-d") or opts.get("--dbname") or ""
    if not clean(database):
        note = "backups: a postgres backup (database: fill in the runbook's placeholder)"
        return [Sighting("note", notes=(note,))] if database else [Sighting("known")]
    backup: dict[str, Any] = {"type": "postgres", "database": database}
    for flag, key in (("-h", "host"), ("--host", "host"), ("-U", "user"), ("--username", "user")):
        if clean(opts.get(flag, "")):
            backup[key] = opts[flag]
    port = opts.get("-p") or opts.get("--port")
    if port and port.isdigit():
        backup["port"] = int(port)
    notes: tuple[str, ...] = ()
    fmt = opts.get("-F") or opts.get("--format") or ("c" if "-Fc" in words else "p")
    if not fmt.startswith("c") and words[0].endswith("pg_dump"):
        notes = (f"the runbook dumps in format {fmt!r}; opsbot dumps -Fc (custom), verified "
                 "with pg_restore --list",)  # fmt: skip
    return [Sighting("backup", fields=backup, notes=notes, near="postgres")]


def sqlite3(words: list[str], cwd: str | None) -> list[Sighting]:
    args = [w for w in words[1:] if not w.startswith("-")]
    if len(args) >= 2 and args[1].lstrip().startswith(".backup") and clean(args[0]):
        return [Sighting("backup", fields={"type": "sqlite", "path": args[0]},
                         notes=relative(args[0]))]  # fmt: skip
    return [Sighting("known")]


def copy(words: list[str], cwd: str | None) -> list[Sighting]:
    _, args = options(words[1:], {"-t", "--target-directory", "-e"})
    sources = [a for a in args[:-1] if re.search(r"\.(?:db|sqlite3?)$", a) and clean(a)]
    if not sources:
        return [Sighting("known")]
    return [Sighting("backup", fields={"type": "sqlite", "path": sources[0]},
                     notes=relative(sources[0]))]  # fmt: skip


def tar(words: list[str], cwd: str | None) -> list[Sighting]:
    flags = "".join(w.lstrip("-") for w in words[1:2]) + "".join(
        w[1:] for w in words[2:] if re.fullmatch(r"-[a-zA-Z]+", w)
    )
    if "c" not in flags and "--create" not in words:
        return [Sighting("known")]
    rest = [w for w in words[2:] if not w.startswith("-")]
    paths = [p for p in rest[1:] if clean(p)] if "f" in flags else [p for p in rest if clean(p)]
    if not paths:
        return [Sighting("known")]
    return [Sighting("backup", fields={"type": "files", "paths": paths},
                     notes=tuple(n for p in paths for n in relative(p)))]  # fmt: skip


def tail(words: list[str], cwd: str | None) -> list[Sighting]:
    _, args = options(words[1:], {"-n", "--lines", "-c"})
    logs = [a for a in args if a.endswith(".log") and clean(a) and not set("*?[") & set(a)]
    if logs and logs[0].startswith("/"):
        return [Sighting("log", fields={"log_file": logs[0]})]
    return [Sighting("known")]


