"""/health shows progress: a message within 1 s, edited in place, ending with every target.

Through the fake Bot API, against the real lab sshd: one target's command check sleeps over
SSH, so the answer takes seconds; the chat must not stay silent meanwhile.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from opsbot.catalog import dispatch
from opsbot.config import Role, Settings
from opsbot.render import Reply
from opsbot.services import Services
from opsbot.verbs.registry import Caller
from tests.factories import (
    ALICE_PRIVATE,
    OPSBOT_TOKEN,
    ChatSession,
    fake_fixture,
    module_config,
    opsbot_chat,
    ssh_endpoint,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.sshd import SSHServer

SLOW_SECONDS = 3.0
MEDIUM_SECONDS = 1.5
MANY = 24  # above the 20 targets from which progress shows at once


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory, sshd_server: SSHServer
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "progress")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    targets: dict[str, object] = {
        "slowbot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "timeout": 10,
            "checks": [{"type": "command", "argv": ["sleep", str(SLOW_SECONDS)], "timeout": 8}],
        },
        "mediumbot": {
            "kind": "command",
            "endpoint": "lab-ssh",
            "checks": [{"type": "command", "argv": ["sleep", str(MEDIUM_SECONDS)]}],
        },
        "fastbot": {"kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["true"]}},
        "brokenbot": {"kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["false"]}},
    }
    config["targets"] = targets
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


async def test_slow_health_shows_progress_within_a_second_then_every_target(
    chat: ChatSession,
) -> None:
    """In a private chat, where the message may be edited every second."""
    total = 4
    since = len(chat.fake.calls)
    sent = chat.send("/health", chat=ALICE_PRIVATE)
    started = time.monotonic()
    first = await chat.next_message(sent, ALICE_PRIVATE, timeout=5)
    waited = time.monotonic() - started
    assert waited < 1.0, f"first feedback after {waited:.2f} s"
    assert first.text is not None and first.text.startswith("⏳ Health: ")
    assert first.reply_to_message_id == sent["message_id"]  # the progress answers the command
    assert f"/{total} checked" in first.text

    # Progress shows the failing target before the slow one has answered.
    shown = await chat.fake.wait_for_message(
        ALICE_PRIVATE.id,
        lambda m: m.message_id == first.message_id and "brokenbot" in (m.text or ""),
        token=OPSBOT_TOKEN,
        timeout=SLOW_SECONDS,
    )
    assert shown.text is not None and "worst so far: ❌ brokenbot" in shown.text
    assert "slowbot" not in shown.text

    final = await chat.fake.wait_for_message(
        ALICE_PRIVATE.id,
        lambda m: m.message_id == first.message_id and (m.text or "").startswith("Health:"),
        token=OPSBOT_TOKEN,
        timeout=15,
    )
    elapsed = time.monotonic() - started
    assert elapsed >= SLOW_SECONDS
    assert final.text is not None
    assert final.text.splitlines()[0].startswith(f"Health: {total} targets, 1 failing")
    rows = final.text.splitlines()[1:]
    assert {r.split()[1] for r in rows} == {"slowbot", "mediumbot", "fastbot", "brokenbot"}
    assert rows[0].startswith("❌ brokenbot")
    assert final.reply_markup is not None  # the Refresh button arrives with the final state
    # One message, edited in place: no second answer was posted.
    later = [m for m in chat.bot_messages(ALICE_PRIVATE) if m.message_id > sent["message_id"]]
    assert [m.message_id for m in later] == [first.message_id]
    edits = [
        c for c in chat.fake.calls[since:]
        if c.method == "editMessageText" and c.params["message_id"] == first.message_id
    ]  # fmt: skip
    assert edits and "Health:" in edits[-1].params["text"]
    # It was edited as results arrived (2/4, then 3/4 once the medium one answered), and
    # the final state came last.
    progress = [t for t in final.history if t is not None and t.startswith("⏳")]
    counts = [int(re.search(r"(\d+)/4 checked", t)[1]) for t in progress]  # type: ignore[index]
    assert counts == sorted(counts) and len(set(counts)) >= 2, final.history
    assert max(counts) < total and final.history[-1] == final.text


async def test_a_quick_answer_comes_once_without_progress(chat: ChatSession) -> None:
    reply = await chat.ask("/health fastbot")
    assert reply.text is not None and reply.text.startswith("✅ fastbot: ok")
    assert reply.edits == 0


async def test_health_over_many_targets_reports_progress_soon(tmp_path: Path) -> None:
    """More than 20 targets: progress from 0.2 s on, even when nothing is slow enough (under
    0.5 s) to show progress over a few targets; then each arrival."""
    targets = {f"many{i:02d}": {"kind": "command", "actions": {"status": ["true"]}}
               for i in range(MANY - 1)}  # fmt: skip
    targets["sleepy"] = {"kind": "command", "actions": {"status": ["sleep", "0.45"]}}
    settings = Settings(
        data_dir=tmp_path / "data", alerts={"monitor": {"enabled": False}}, targets=targets
    )
    services = Services.build(settings)
    seen: list[Reply] = []
    try:
        reply = await dispatch(
            services, Caller("t", Role.viewer, progress=seen.append), "health", []
        )
    finally:
        await services.close()
    assert reply.text.startswith(f"Health: {MANY} targets, all healthy")
    assert seen, "no progress reported"
    assert re.fullmatch(rf"⏳ Health: \d+/{MANY} checked….*", seen[0].text)
    assert f"{MANY}/{MANY}" not in seen[0].text  # shown while the sleepy one still ran
    assert seen[-1].text == f"⏳ Health: {MANY - 1}/{MANY} checked… all healthy so far"
