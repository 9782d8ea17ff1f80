"""The board's API on a running opsbot: who gets in, what they see, and that its buttons are
the chat's own (the card goes to the ops group; the chat's role rules answer)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from opsbot.actions.stepup import new_key
from opsbot.miniapp.routes import CSP
from tests.chat.test_stepup import window_excluding_now
from tests.factories import (
    ALICE,
    BOB,
    INCIDENTS,
    OPERATED_TOKEN,
    OPS,
    OPSBOT_TOKEN,
    OSCAR,
    STRANGER,
    VIC,
    running_opsbot,
)
from tests.fakebotapi import FakeBotAPI, FakeMessage, User
from tests.miniapp.lab import LINK, URL, board_settings, init_data, opsbot_and_board
from tests.web.test_statuspage import poll


def signed(user: User, **kwargs: Any) -> dict[str, str]:
    return {"Authorization": f"tma {init_data(user, **kwargs)}"}


def buttons(message: FakeMessage) -> list[dict[str, Any]]:
    return [b for row in (message.reply_markup or {}).get("inline_keyboard", []) for b in row]


async def test_only_a_configured_persons_fresh_telegram_signature_opens_the_api(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path, max_age="10m")
    async with opsbot_and_board(fake, settings) as (_, web):
        ok = await web.get("/board/api/state", headers=signed(ALICE))
        assert ok.status_code == 200 and ok.json()["you"] == {"name": "alice", "role": "admin"}
        forged = init_data(ALICE).replace(str(ALICE.id), str(BOB.id))
        refused = {
            "missing": {},
            "not tma": {"Authorization": f"Bearer {init_data(ALICE)}"},
            "forged": {"Authorization": f"tma {forged}"},
            "expired": signed(ALICE, age=11 * 60),
            "another bot's": signed(ALICE, token=OPERATED_TOKEN),
            "a stranger": signed(STRANGER),
        }
        for why, headers in refused.items():
            for answer in (
                await web.get("/board/api/state", headers=headers),
                await web.post(
                    "/board/api/act", headers=headers, json={"do": "restart", "target": "ledger"}
                ),
            ):
                assert answer.status_code == 401, why
                assert answer.json() == {"error": "open this from Telegram"}, why
        assert fake.bot_messages(OPS.id, OPSBOT_TOKEN) == []  # nothing was filed


async def test_the_page_allows_no_inline_script_and_only_telegrams_web_clients_as_frames(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path)
    async with opsbot_and_board(fake, settings) as (_, web):
        page = await web.get("/board")
        assert page.status_code == 200
        csp = page.headers["Content-Security-Policy"]
        assert csp == CSP and "unsafe-inline" not in csp
        assert "script-src 'self' https://telegram.org;" in csp
        assert csp.endswith("frame-ancestors https://web.telegram.org")
        scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.DOTALL)
        assert [src for src, _ in scripts] == [
            ' src="https://telegram.org/js/telegram-web-app.js"',
            ' src="/board/static/board.js" defer',
        ]
        assert all(body.strip() == "" for _, body in scripts)
        script = await web.get("/board/static/board.js")
        assert script.status_code == 200 and "initData" in script.text
        assert (await web.get("/board/static/../routes.py")).status_code == 404
        assert (await web.get("/board/static/nosuch.js")).status_code == 404


async def test_targets_come_worst_first_and_a_viewer_is_offered_no_action(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path, ledger_down=True)
    async with opsbot_and_board(fake, settings) as (_, web):
        web.headers.update(signed(ALICE))
        board = await poll(
            web, "/board/api/state", lambda b: b["targets"][0]["state"] == "fail" and b["alerts"]
        )
        ledger, payments = board["targets"]
        assert (ledger["name"], payments["name"], payments["state"]) == (
            "ledger",
            "payments",
            "ok",
        )
        assert ledger["actions"] == ["restart", "rollback", "backup"]
        assert payments["actions"] == ["rollback"]  # no restart argv: no Restart button
        assert set(ledger["uptime"]) == {"24h", "7d", "30d"} and len(ledger["spark"]) == 96
        assert ledger["latency_ms"] is not None  # the monitor's first round was recorded
        objective = ledger["objective"]  # /slo's figures; no rounds flushed yet (5 min)
        assert set(objective) == {"objective", "sli", "budget_left", "burn_1h", "verdict"}
        assert objective["objective"] == 99.9
        assert objective["verdict"] == "ledger: no rounds recorded yet (objective 99.9 %)"
        assert board["alerts"][0]["target"] == "ledger"
        assert board["alerts"][0]["can"] == {"ack": True, "silence": True}
        assert board["backups"][0]["target"] == "ledger"
        assert board["backups"][0]["state"] == "fail"  # no backup yet, RPO 1 d

        web.headers.update(signed(VIC))
        seen = (await web.get("/board/api/state")).json()
        assert seen["you"]["role"] == "viewer"
        assert [t["actions"] for t in seen["targets"]] == [[], []]
        assert seen["alerts"][0]["can"] == {"ack": False, "silence": False}
        refused = await web.post("/board/api/act", json={"do": "restart", "target": "ledger"})
        assert refused.json() == {
            "ok": False,
            "text": "/restart needs the operator role: alice, bob, oscar have it",
        }
        ack = await web.post(
            "/board/api/act", json={"do": "ack", "alert": seen["alerts"][0]["id"]}
        )
        assert ack.json()["ok"] is False and "operator role" in ack.json()["text"]
        assert (await web.post("/board/api/act", json={"do": "rm -rf"})).status_code == 400
        bad_target = await web.post("/board/api/act", json={"do": "restart", "target": "a b"})
        assert bad_target.status_code == 400
        assert (await web.post("/board/api/act", content=b"[1")).status_code == 400
        huge = {"do": "update", "incident": "INC-1", "text": "x" * 5000}
        assert (await web.post("/board/api/act", json=huge)).status_code == 413


async def test_a_restart_from_the_board_is_the_chats_request_approved_in_the_group(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path, ledger_down=True)
    async with opsbot_and_board(fake, settings, signed(OSCAR)) as (chat, web):
        answer = await web.post("/board/api/act", json={"do": "restart", "target": "ledger"})
        assert answer.json()["ok"] is True and "restart ledger" in answer.json()["text"]
        card = await fake.wait_for_message(
            OPS.id, lambda m: "restart ledger" in (m.text or ""), token=OPSBOT_TOKEN
        )
        assert "oscar" in (card.text or "")
        assert [b["text"] for b in buttons(card)] == ["✅ Approve", "✖️ Deny"]
        board = await poll(web, "/board/api/state", lambda b: bool(b["requests"]))
        request = board["requests"][0]
        assert (request["action"], request["requester"], request["status"]) == (
            "restart",
            "oscar",
            "pending",
        )
        assert request["can"] == {"approve": False, "deny": True}  # an operator cannot approve
        assert (tmp_path / "down").exists()  # nothing ran without an approval

        chat.tap(card, buttons(card)[0]["callback_data"], user=BOB)
        await fake.wait_for_message(
            OPS.id,
            lambda m: m.message_id == card.message_id and "healthy" in (m.text or ""),
            token=OPSBOT_TOKEN,
        )
        assert not (tmp_path / "down").exists()
        await poll(
            web,
            "/board/api/state",
            lambda b: not b["requests"] and b["targets"][0]["state"] == "ok",
        )


async def test_an_admin_approves_from_the_board_within_the_same_rules(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path, ledger_down=True)
    alice, bob = signed(ALICE), signed(BOB)
    async with opsbot_and_board(fake, settings, alice) as (_, web):
        await web.post("/board/api/act", json={"do": "restart", "target": "ledger"})
        board = await poll(web, "/board/api/state", lambda b: bool(b["requests"]))
        request_id = board["requests"][0]["id"]
        own = await web.post(
            "/board/api/act", headers=alice, json={"do": "approve", "request": request_id}
        )
        assert own.json()["ok"] is False and (tmp_path / "down").exists()  # not your own
        approved = await web.post(
            "/board/api/act", headers=bob, json={"do": "approve", "request": request_id}
        )
        assert approved.json()["ok"] is True, approved.json()
        await fake.wait_for_message(
            OPS.id,
            lambda m: "restart ledger" in (m.text or "") and "healthy" in (m.text or ""),
            token=OPSBOT_TOKEN,
        )
        assert not (tmp_path / "down").exists()


async def test_ack_and_update_from_the_board_are_the_chats_buttons_and_commands(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path, ledger_down=True)
    async with opsbot_and_board(fake, settings, signed(OSCAR)) as (chat, web):
        await chat.ask("/incident P2 ledger disk full ledger", user=ALICE)
        board = await poll(web, "/board/api/state", lambda b: b["alerts"] and b["incidents"])
        alert = board["alerts"][0]
        acked = await web.post("/board/api/act", json={"do": "ack", "alert": alert["id"]})
        assert acked.json()["ok"] is True
        incident = board["incidents"][0]["id"]
        text = "Disk cleaned; watching the ledger"
        updated = await web.post(
            "/board/api/act", json={"do": "update", "incident": incident, "text": text}
        )
        assert updated.json()["ok"] is True, updated.json()
        after = await poll(
            web, "/board/api/state", lambda b: b["alerts"][0]["acked_by"] == "oscar"
        )
        timeline = after["incidents"][0]["timeline"]
        assert timeline[0]["actor"] == "oscar" and text in timeline[0]["text"]
        await chat.services.audit.flush()
        trail = [e for e in await chat.services.audit.entries(limit=50) if e.get("who") == "oscar"]
        assert {e.get("verb") for e in trail} >= {"ack", "incident"}


async def test_each_person_has_a_rate_limit(fake: FakeBotAPI, tmp_path: Path) -> None:
    settings = board_settings(fake, tmp_path, requests_per_minute=3)
    async with opsbot_and_board(fake, settings) as (_, web):
        codes = [
            (await web.get("/board/api/state", headers=signed(VIC))).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        assert (await web.get("/board/api/state", headers=signed(ALICE))).status_code == 200


async def test_ways_in_the_menu_button_board_and_the_health_and_alert_buttons(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    settings = board_settings(fake, tmp_path, ledger_down=True)
    async with running_opsbot(fake, settings) as chat:
        board = await chat.ask("/board", user=VIC)
        assert buttons(board) == [{"text": "📊 Board", "url": LINK}]
        health = await chat.ask("/health")
        assert {"text": "📊 Board", "url": LINK} in buttons(health)
        alert = await fake.wait_for_message(
            INCIDENTS.id,
            lambda m: "ledger" in (m.text or "") and "👀 Ack" in str(m.reply_markup),
            token=OPSBOT_TOKEN,
        )
        assert buttons(alert)[-1] == {"text": "📊 Board", "url": LINK}
        for person in (ALICE, BOB, VIC, OSCAR):  # the menu round starts 0.5 s after start-up
            await fake.wait_for_call(
                "setChatMenuButton", lambda c, p=person: str(c.params.get("chat_id")) == str(p.id)
            )
        menus = fake.menu_buttons(OPSBOT_TOKEN)
        for person in (ALICE, BOB, VIC, OSCAR):
            assert menus[person.id] == {
                "type": "web_app",
                "text": "Board",
                "web_app": {"url": URL},
            }
        help_text = (await chat.ask("/help", user=VIC)).text or ""
        assert "/board" in help_text


async def test_approving_from_the_board_keeps_step_up_and_change_windows(
    fake: FakeBotAPI, tmp_path: Path
) -> None:
    """A step-up request still wants its code in private; outside a change window, no one may."""
    ran = tmp_path / "nightly-ran"

    def tweak(config: dict[str, Any]) -> None:
        config["approvals"] = {"totp_key": new_key()}
        config["targets"]["ledger"]["approvals"] = {"step_up": "totp"}
        config["targets"]["nightly"] = {
            "kind": "command",
            "actions": {"status": ["true"], "restart": ["touch", str(ran)]},
            "approvals": {"allowed_hours": window_excluding_now()},
        }

    settings = board_settings(fake, tmp_path, tweak=tweak, ledger_down=True)
    async with opsbot_and_board(fake, settings, signed(OSCAR)) as (_, web):
        for target in ("ledger", "nightly"):
            filed = await web.post("/board/api/act", json={"do": "restart", "target": target})
            assert filed.json()["ok"] is True, filed.json()
        board = await poll(web, "/board/api/state", lambda b: len(b["requests"]) == 2)
        ids = {r["target"]: r["id"] for r in board["requests"]}
        web.headers.update(signed(BOB))
        step_up = await web.post(
            "/board/api/act", json={"do": "approve", "request": ids["ledger"]}
        )
        assert step_up.json() == {
            "ok": False,
            "text": "⚠️ this request needs a TOTP step-up: tap Approve on its card, "
            "then send your code to opsbot in private",
        }
        window = await web.post(
            "/board/api/act", json={"do": "approve", "request": ids["nightly"]}
        )
        assert window.json()["ok"] is False
        assert "Outside the change window of nightly" in window.json()["text"]
        after = (await web.get("/board/api/state")).json()
        assert sorted(r["status"] for r in after["requests"]) == ["pending", "pending"]
        assert (tmp_path / "down").exists() and not ran.exists()  # nothing ran
