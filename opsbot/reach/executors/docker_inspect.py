"""What the engine says about a container, read: its status, and the settings a rollback
recreates it with (the image changed, everything else kept)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class ContainerStatus:
    name: str
    exists: bool
    state: str | None = None  # created, running, paused, restarting, exited, dead
    health: str | None = None  # healthy, unhealthy, starting; None without a healthcheck
    image: str | None = None  # as configured, e.g. "quizbot:1.4"
    image_id: str | None = None
    started_at: datetime | None = None
    restart_count: int = 0
    exit_code: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


def _parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 timestamps (nanoseconds, 'Z'); the zero time means never."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, rest = text.split(".", 1)
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _status_from_inspect(name: str, attrs: dict[str, Any]) -> ContainerStatus:
    state = attrs.get("State") or {}
    health = state.get("Health") or {}
    config = attrs.get("Config") or {}
    exit_code = state.get("ExitCode")
    return ContainerStatus(
        name=name,
        exists=True,
        state=state.get("Status"),
        health=health.get("Status") or None,
        image=config.get("Image"),
        image_id=attrs.get("Image"),
        started_at=_parse_time(state.get("StartedAt")),
        restart_count=int(attrs.get("RestartCount") or 0),
        exit_code=int(exit_code) if isinstance(exit_code, int) else None,
    )


def _recreate_config(
    attrs: dict[str, Any], old_image: dict[str, Any] | None, image: str
) -> tuple[dict[str, Any], list[tuple[str, dict[str, Any]]]]:
    """The create body for a copy of the inspected container running ``image``.

    Settings equal to the old image's defaults are left out so the new image's own apply
    (its env, cmd, labels...). Returns the body and the extra networks to connect before
    the start (API < 1.44 takes one network at create).
    """
    cfg: dict[str, Any] = attrs.get("Config") or {}
    known = old_image is not None
    base: dict[str, Any] = ((old_image or {}).get("Config") or {}) if known else {}

    def differs(key: str) -> bool:
        return not known or cfg.get(key) != base.get(key)

    out: dict[str, Any] = {"Image": image}
    for key in ("Tty", "OpenStdin", "StdinOnce", "AttachStdin", "AttachStdout", "AttachStderr",
                "StopTimeout", "NetworkDisabled"):  # fmt: skip
        if cfg.get(key) is not None:
            out[key] = cfg[key]
    image_env = set(base.get("Env") or [])
    out["Env"] = [e for e in cfg.get("Env") or [] if e not in image_env]
    image_labels = base.get("Labels") or {}
    out["Labels"] = {k: v for k, v in (cfg.get("Labels") or {}).items()
                     if image_labels.get(k) != v}  # fmt: skip
    if differs("Entrypoint"):  # an explicit entrypoint resets the image's cmd as well
        out["Entrypoint"] = cfg.get("Entrypoint")
        out["Cmd"] = cfg.get("Cmd")
    elif differs("Cmd"):
        out["Cmd"] = cfg.get("Cmd")
    for key in ("User", "WorkingDir", "Healthcheck", "StopSignal"):
        if differs(key) and cfg.get(key):
            out[key] = cfg[key]
    for key in ("ExposedPorts", "Volumes"):
        extra = {k: v for k, v in (cfg.get(key) or {}).items() if k not in (base.get(key) or {})}
        if extra:
            out[key] = extra
    host: dict[str, Any] = dict(attrs.get("HostConfig") or {})
    mode = str(host.get("NetworkMode") or "default")
    shares_host = mode == "host" or mode.startswith("container:")
    hostname = cfg.get("Hostname")
    if not shares_host and hostname and hostname != str(attrs.get("Id", ""))[:12]:
        out["Hostname"] = hostname
        if cfg.get("Domainname"):
            out["Domainname"] = cfg["Domainname"]
    # Anonymous volumes (from the image's VOLUME or `-v /path`) are re-attached by name.
    binds = list(host.get("Binds") or [])
    covered = {b.split(":")[1] for b in binds if b.count(":") >= 1}
    covered |= {m.get("Target") for m in host.get("Mounts") or []}
    for mount in attrs.get("Mounts") or []:
        if mount.get("Type") == "volume" and mount.get("Destination") not in covered:
            ro = "" if mount.get("RW", True) else ":ro"
            binds.append(f"{mount['Name']}:{mount['Destination']}{ro}")
    if binds:
        host["Binds"] = binds
    out["HostConfig"] = host
    networks: list[tuple[str, dict[str, Any]]] = []
    short_id = str(attrs.get("Id", ""))[:12]
    attached = ((attrs.get("NetworkSettings") or {}).get("Networks")) or {}
    for net, endpoint in attached.items():
        if net in ("host", "none", "bridge") or shares_host:
            continue
        aliases = [a for a in endpoint.get("Aliases") or [] if a != short_id]
        ipam = endpoint.get("IPAMConfig") or {}
        if net == mode:
            out["NetworkingConfig"] = {"EndpointsConfig": {net: {
                "Aliases": aliases or None, "IPAMConfig": ipam or None,
                "Links": endpoint.get("Links"),
            }}}  # fmt: skip
        else:
            networks.append((net, {
                "aliases": aliases or None, "links": endpoint.get("Links"),
                "ipv4_address": ipam.get("IPv4Address"), "ipv6_address": ipam.get("IPv6Address"),
            }))  # fmt: skip
    return out, networks
