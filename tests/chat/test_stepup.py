"""Step-up approval with TOTP, per-target approver counts and change windows.

The e2e test runs the whole story through the fake Bot API: ``opsbot totp enroll`` (a
subprocess, as an admin would run it) prints the otpauth URI and a QR code and stores the
secret encrypted; an approval then waits for the approver's code in a private chat; wrong and
replayed codes are refused and audited, three lock the approver out, and an unanswered
challenge expires without running anything. A canary file shows what ran.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from opsbot.actions.stepup import StepUp, TargetRules, enroll, in_window, new_key
from opsbot.config import Settings
from opsbot.state.audit import Audit
from opsbot.state.store.sqlite import SQLiteStore
from tests.factories import (
    ALICE,
    BOB,
    OPS,
    OSCAR,
    ChatSession,
    fake_fixture,
    module_config,
    running_opsbot,
    write_config,
)
from tests.fakebotapi import Chat, FakeBotAPI, FakeMessage

REPO = Path(__file__).resolve().parents[2]
KEY = new_key()
ALICE_PRIVATE, BOB_PRIVATE = Chat(ALICE.id), Chat(BOB.id)


def window_excluding_now() -> str:
    later = time.gmtime(time.time() + 2 * 3600)
    end = time.gmtime(time.time() + 3 * 3600)
    return f"{later.tm_hour:02d}:00-{end.tm_hour:02d}:00"


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest.fixture(scope="module")
def setup(fake: FakeBotAPI, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp, config = module_config(fake, tmp_path_factory, "stepup")
    canary = tmp / "ran"
    restart = ["sh", "-c", 'echo restart >> "$0"', str(canary)]
    actions = {"status": ["true"], "restart": restart}
    config["telegram"]["allow_private_chats"] = True
    config["telegram"]["incident_chat_id"] = BOB.id
    config["approvals"] = {"step_up": "totp", "totp_key": KEY, "step_up_timeout": 3}
    config["targets"] = {
        "canary": {"kind": "command", "actions": actions},
        "nightly": {
            "kind": "command",
            "actions": actions,
            "approvals": {"allowed_hours": window_excluding_now()},
        },
    }
    path = tmp / "opsbot.yaml"
    write_config(path, config)
    return path, canary


def enroll_cli(config: Path, name: str) -> str:
    """``opsbot totp enroll NAME`` as an admin runs it; the TOTP secret it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "opsbot", "totp", "enroll", name, "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    uri = next(line for line in done.stdout.splitlines() if line.startswith("otpauth://"))
    assert "▄" in done.stdout or "█" in done.stdout  # the QR code, in the terminal
    parsed = urlparse(uri)
    assert parsed.netloc == "totp" and parsed.path == f"/opsbot:{name}"
    return parse_qs(parsed.query)["secret"][0]


async def request_card(chat: ChatSession, target: str = "canary") -> FakeMessage:
    card = await chat.ask(f"/restart {target}", user=OSCAR, chat=OPS)
    assert card.text is not None and "approval needed" in card.text
    return card


async def tap(chat: ChatSession, card: FakeMessage, user: Any) -> str:
    data = card.reply_markup["inline_keyboard"][0][0]["callback_data"]  # type: ignore[index]
    query = chat.tap(card, data, user=user)
    await chat.fake.wait_for_call(
        "answerCallbackQuery", lambda c: c.params["callback_query_id"] == query
    )
    answer = chat.fake.answers(query) or {}
    return str(answer.get("text"))


async def card_says(chat: ChatSession, card: FakeMessage, text: str) -> FakeMessage:
    return await chat.fake.wait_for_message(
        OPS.id, lambda m: m.message_id == card.message_id and text in (m.text or ""), timeout=20
    )


async def test_step_up_totp_end_to_end(fake: FakeBotAPI, setup: tuple[Path, Path]) -> None:
    config, canary = setup
    secret = enroll_cli(config, "alice")
    raw = b"".join(p.read_bytes() for p in (config.parent / "data").glob("opsbot.sqlite3*"))
    assert secret.encode() not in raw  # stored encrypted
    totp = pyotp.TOTP(secret)

    from opsbot.config import load_config

    async with running_opsbot(fake, load_config(config)) as chat:
        # Bob has no TOTP: his approval is refused before anything is recorded.
        card = await request_card(chat)
        assert "enroll first" in await tap(chat, card, BOB)

        # Alice approves: nothing runs until her code arrives in private.
        assert "TOTP code" in await tap(chat, card, ALICE)
        await card_says(chat, card, "waiting for alice's TOTP code")
        await fake.wait_for_message(ALICE.id, lambda m: "Send me your TOTP code" in (m.text or ""))
        code = totp.now()
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        assert "wrong; 2 tries left" in (await chat.ask(wrong, chat=ALICE_PRIVATE)).text  # type: ignore[operator]
        assert not canary.exists()
        accepted = await chat.ask(code, chat=ALICE_PRIVATE)
        assert "accepted" in (accepted.text or "")
        await card_says(chat, card, "restart canary")
        await card_says(chat, card, "✅")
        assert canary.read_text().split() == ["restart"]

        # The same code again is a replay; two more wrong codes lock Alice out. (Her code goes
        # once the new prompt is there, as above: the answer to it is the next message.)
        seen = max((m.message_id for m in fake.messages(ALICE.id)), default=0)
        card = await request_card(chat)
        assert "TOTP code" in await tap(chat, card, ALICE)
        await fake.wait_for_message(
            ALICE.id, lambda m: "Send me your TOTP code" in (m.text or ""), after_message_id=seen
        )
        assert "replayed; 2 tries left" in (await chat.ask(code, chat=ALICE_PRIVATE)).text  # type: ignore[operator]
        assert "1 tries left" in (await chat.ask(wrong, chat=ALICE_PRIVATE)).text  # type: ignore[operator]
        locked = await chat.ask(wrong, chat=ALICE_PRIVATE)
        assert "locked for 15 min" in (locked.text or "")
        await card_says(chat, card, "too many wrong codes")
        assert "locked" in await tap(chat, await request_card(chat), ALICE)

        # Bob enrolls; his challenge goes unanswered and expires: nothing runs.
        stepup = StepUp(chat.services.settings, chat.services.store, chat.services.audit)
        await enroll(chat.services.settings, chat.services.store, "bob")
        card = await request_card(chat)
        assert "TOTP code" in await tap(chat, card, BOB)
        await card_says(chat, card, "no step-up code in time")
        assert canary.read_text().split() == ["restart"]
        assert not await stepup.locked(chat.services.settings.person(BOB.id))  # type: ignore[arg-type]

        # Outside a target's change window, even an enrolled admin's approval is refused.
        card = await request_card(chat, "nightly")
        assert "change window" in await tap(chat, card, BOB)

        outcomes = [
            e.get("outcome")
            for e in await chat.services.audit.entries(limit=500)
            if e["event"] == "step-up"
        ]
        for outcome in ("challenged", "wrong", "verified", "replayed", "locked", "expired"):
            assert outcome in outcomes
        await asyncio.sleep(0)
    assert canary.read_text().split() == ["restart"]


def test_target_rules_count_approvers_and_keep_change_windows() -> None:
    settings = Settings(
        approvals={"required": 1, "step_up": "totp", "step_up_actions": ["rollback"]},
        targets={
            "pay": {"kind": "command", "actions": {"status": ["true"]},
                    "approvals": {"required": 2, "step_up": "totp"}},
            "web": {"kind": "command", "actions": {"status": ["true"]}},
        },
    )  # fmt: skip
    rules = TargetRules(settings)
    assert rules.required("pay", "restart") == 2 and rules.required("web", "restart") == 1
    assert rules.step_up("pay", "restart") and rules.step_up("web", "rollback")
    assert not rules.step_up("web", "restart")
    noon = time.mktime((2026, 12, 1, 12, 0, 0, 0, 0, 0)) - time.timezone
    assert in_window("09:00-18:00", noon) and not in_window("18:00-09:00", noon)
    assert in_window("22:00-13:00", noon) and not in_window("13:00-14:00", noon)


async def test_codes_are_single_use_and_three_wrong_lock(tmp_path: Path) -> None:
    settings = Settings(
        people=[{"id": 1, "name": "ann", "role": "admin"}],
        approvals={"step_up": "totp", "totp_key": KEY},
    )
    store = SQLiteStore(tmp_path / "s.sqlite3")
    try:
        enrolment = await enroll(settings, store, "ANN")
        secret = parse_qs(urlparse(enrolment.uri).query)["secret"][0]
        stepup = StepUp(settings, store, Audit(store))
        ann = enrolment.person
        now = time.time()
        await stepup.challenge(ann, "r1", now)
        code = pyotp.TOTP(secret).at(now)
        assert (await stepup.answer(ann, code, now)).run == "r1"
        await stepup.challenge(ann, "r2", now)
        assert (await stepup.answer(ann, code, now)).run is None  # replay
        assert (
            await stepup.answer(ann, "000000" if code != "000000" else "111111", now)
        ).run is None
        third = await stepup.answer(ann, "abcdef", now)
        assert third.failed == "r2" and await stepup.locked(ann, now)
        assert (await stepup.answer(ann, pyotp.TOTP(secret).at(now + 60), now + 60)).run is None
        assert not await stepup.locked(ann, now + 16 * 60)
        await stepup.challenge(ann, "r3", now + 16 * 60)
        assert await stepup.expire(ann, "r3") and not await stepup.expire(ann, "r3")
    finally:
        await store.close()
