"""Each action is declared once, and everything that gates it reads that declaration."""

from __future__ import annotations

from pathlib import Path

from opsbot.actions.approvals import APPROVER, Approvals
from opsbot.actions.declared import ACTIONS
from opsbot.catalog import BUTTONS, VERBS
from opsbot.config import ApprovalPolicy, Person, Role
from opsbot.state.store.sqlite import SQLiteStore

OSCAR = Person(id=4, name="oscar", role=Role.operator)


def test_each_action_is_one_declared_verb_with_its_role_and_destructiveness() -> None:
    assert set(ACTIONS) == {"restart", "rollback", "backup", "restore", "deploy"}
    for action in ACTIONS.values():
        verb = VERBS[action.verb]
        assert verb.role == action.role, action.name
        # a verb that can file a destructive action is destructive in the authorization table
        assert verb.destructive or not action.destructive, action.name
    assert VERBS["backup"].destructive, "/backup TARGET restore NAME replaces live data"
    assert not ACTIONS["backup"].destructive and ACTIONS["restore"].destructive
    assert BUTTONS["rb"].verb == "rollback" and BUTTONS["rb"].destructive
    assert ACTIONS["deploy"].destructive and ACTIONS["deploy"].approval
    assert BUTTONS["ud"].verb == "deploy" and BUTTONS["ud"].destructive  # an update's Deploy
    assert VERBS["deploy"].destructive


def test_approve_is_the_approvers_role_typed_or_tapped() -> None:
    assert APPROVER is Role.admin
    assert VERBS["approve"].role is APPROVER and BUTTONS["a"].role is APPROVER
    assert VERBS["deny"].role is Role.operator  # a requester cancels their own request


async def test_approval_is_the_declared_default_unless_the_configuration_says(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "state.sqlite3")
    try:
        declared = Approvals(store, ApprovalPolicy())
        assert [a for a in ACTIONS.values() if declared.needs_approval(a)] == [
            ACTIONS["restart"], ACTIONS["rollback"], ACTIONS["restore"], ACTIONS["deploy"],
        ]  # fmt: skip
        configured = Approvals(store, ApprovalPolicy(backup=True, restart=False))
        assert configured.needs_approval(ACTIONS["backup"])
        assert not configured.needs_approval(ACTIONS["restart"])
        assert configured.needs_approval(ACTIONS["rollback"])  # not configured: declared
        # no step-up unless configured: the declared default
        filed = await declared.create(
            action="restart", target="web", args=(), steps=("pm2 restart web",), note="",
            payload={}, requester=OSCAR, chat_id=-100,
        )  # fmt: skip
        assert not declared.needs_step_up(filed, ACTIONS["restart"])
    finally:
        await store.close()
