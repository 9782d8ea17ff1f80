"""A real Prometheus Alertmanager on a loopback port whose only receiver is opsbot's webhook.

The receiver URL differs per test (opsbot's web server picks a free port), so this is a
context manager the tests enter themselves: ``with start_alertmanager(tmp, url, token) as am``.
It is ready in well under a second. Clustering is disabled (``--cluster.listen-address=``),
otherwise it binds 9094 and tries to gossip.

Alerts go in through ``post_alerts`` (Alertmanager's ``POST /api/v2/alerts``, as Prometheus
does); an ``endsAt`` in the past resolves an alert, and with ``send_resolved: true`` the
webhook then receives it again as ``resolved``.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.lab.ports import free_port, require_binary, start_process, stop_process, wait_until


@dataclass(frozen=True)
class Alertmanager:
    host: str
    port: int
    url: str
    log_path: Path


def rfc3339(moment: datetime | None = None) -> str:
    """A time as Alertmanager's API wants it (default: now)."""
    return (moment or datetime.now(UTC)).isoformat().replace("+00:00", "Z")


def _config(webhook_url: str, token: str) -> str:
    config = {
        "route": {
            "receiver": "opsbot",
            "group_by": ["alertname"],
            "group_wait": "1s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [
            {
                "name": "opsbot",
                "webhook_configs": [
                    {
                        "url": webhook_url,
                        "send_resolved": True,
                        "http_config": {"authorization": {"type": "Bearer", "credentials": token}},
                    }
                ],
            }
        ],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def _ready(url: str) -> bool:
    with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as response:
        return bool(response.status == 200)


@contextmanager
def start_alertmanager(tmp_path: Path, webhook_url: str, token: str) -> Iterator[Alertmanager]:
    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / "alertmanager.yml"
    config.write_text(_config(webhook_url, token))
    config.chmod(0o600)
    storage = tmp_path / "data"
    storage.mkdir(exist_ok=True)
    log = tmp_path / "alertmanager.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.path={storage}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        "--log.level=info",
    ]
    proc = start_process(argv, log)
    try:
        wait_until(lambda: _ready(url), what="prometheus-alertmanager", log=log, proc=proc)
        yield Alertmanager(host="127.0.0.1", port=port, url=url, log_path=log)
    finally:
        stop_process(proc)


class AlertmanagerFactory:
    """``factory(webhook_url, token)``: a context manager of a fresh Alertmanager.

    The session fixture ``alertmanager_factory`` (tests/conftest.py) is one of these; it
    checks for the binary up front, so a missing package fails at the first test using it.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        require_binary("prometheus-alertmanager", "prometheus-alertmanager")
        self._tmp = tmp_path_factory

    def __call__(self, webhook_url: str, token: str) -> AbstractContextManager[Alertmanager]:
        return start_alertmanager(self._tmp.mktemp("alertmanager"), webhook_url, token)


async def post_alerts(am: Alertmanager, alerts: list[dict[str, Any]]) -> None:
    """POST alerts (``labels``, ``annotations``, ``startsAt``, ``endsAt``) to Alertmanager."""
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.post(f"{am.url}/api/v2/alerts", json=alerts)
        response.raise_for_status()
