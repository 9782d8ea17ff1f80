"""Session-wide real servers on loopback (see tests/lab/). A missing binary fails, never skips.

Also small per-test fixtures shared by several files: the ``fake`` Bot API (a module may
define its own with ``factories.fake_fixture``), a PTB ``bot`` talking to it, and a
``sqlite_store`` in the test's tmp dir, and a module's ``ssh_pool``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from telegram import Bot

from opsbot.reach.executors.ssh import SSHPool
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import OPSBOT_TOKEN, fake_bot_api
from tests.fakebotapi import FakeBotAPI
from tests.lab.dockerd import DockerLab, start_dockerd
from tests.lab.postgres import PostgresServer, start_postgres
from tests.lab.redis import RedisServer, start_redis
from tests.lab.sentinel import SentinelLab, start_sentinel_lab
from tests.lab.sshd import SSHServer, start_sshd


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with start_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def sentinel_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelLab]:
    """A master, a replica and three sentinels; a test that fails over calls ``settle()``."""
    with start_sentinel_lab(tmp_path_factory.mktemp("sentinel")) as lab:
        yield lab


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    with start_sshd(tmp_path_factory.mktemp("sshd")) as server:
        yield server


@pytest.fixture(scope="session")
def docker_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerLab]:
    with start_dockerd(tmp_path_factory.mktemp("dockerd")) as lab:
        yield lab


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with start_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="session")
def alertmanager_factory(tmp_path_factory: pytest.TempPathFactory) -> object:
    """An AlertmanagerFactory: ``with alertmanager_factory(webhook_url, token) as am``."""
    from tests.lab.alertmanager import AlertmanagerFactory

    return AlertmanagerFactory(tmp_path_factory)


@pytest.fixture
def fake() -> Iterator[FakeBotAPI]:
    """The fake Bot API with opsbot's bot on it, no per-group limit (a test module wanting
    other limits, chats or scope defines its own with ``factories.fake_fixture``)."""
    with fake_bot_api(group_per_minute=None) as api:
        yield api


@pytest_asyncio.fixture
async def bot(fake: FakeBotAPI) -> AsyncIterator[Bot]:
    """A real python-telegram-bot client of the module's fake Bot API (``fake`` fixture)."""
    async with Bot(OPSBOT_TOKEN, base_url=fake.bot_base_url) as opened:
        yield opened


@pytest_asyncio.fixture(scope="module")
async def ssh_pool() -> AsyncIterator[SSHPool]:
    """One SSH connection pool per test module (connections reused across its tests)."""
    pool = SSHPool()
    try:
        yield pool
    finally:
        await pool.close()


@pytest_asyncio.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        yield opened
    finally:
        await opened.close()
