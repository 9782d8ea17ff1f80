"""/rollback of a Kubernetes target to a chosen revision, over the real sshd.

No cluster can run here, so ``kubectl`` on the lab host is a small executable (a test double
of the binary, not of opsbot) that the fixture puts first on the lab user's PATH: it records
every argv it is run with and answers like kubectl does, from a state file of ReplicaSets that
``rollout undo --to-revision`` and ``set image`` change the way Kubernetes does (the chosen, or
a new, ReplicaSet becomes the newest revision; an image listed in the state's ``broken`` never
finishes its rollout). The target uses the default ``kubectl`` argv. The tests assert on the
exact argv opsbot ran and on what the chat shows.
"""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.factories import (
    OSCAR,
    ChatSession,
    approved,
    fake_fixture,
    module_config,
    opsbot_chat,
    replies_say,
    ssh_endpoint,
)
from tests.fakebotapi import FakeBotAPI
from tests.lab.sshd import SSHServer

KUBECTL = r'''#!/usr/bin/python3
"""kubectl, as far as opsbot uses it: state in state.json, every argv appended to argv.log."""
import json, os, sys

here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "argv.log"), "a") as log:
    log.write(json.dumps(args) + "\n")
with open(os.path.join(here, "state.json")) as f:
    state = json.load(f)
REV = "deployment.kubernetes.io/revision"
if args[:2] == ["-n", "bots"]:
    args = args[2:]
else:
    sys.exit("error: the shim only knows namespace bots")


def owned(rs, name):
    return any(o["name"] == name for o in rs["metadata"]["ownerReferences"])


def revision(rs):
    return int(rs["metadata"]["annotations"][REV])


if args == ["get", "replicasets", "-o", "json"]:
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": state["replicasets"]}))
elif args == ["get", "deployment", "quizbot", "-o", "json"]:
    mine = [rs for rs in state["replicasets"] if owned(rs, "quizbot")]
    top = max(mine, key=revision)
    print(json.dumps({
        "kind": "Deployment",
        "metadata": {"name": "quizbot", "namespace": "bots",
                     "annotations": {REV: str(revision(top))}},
        "spec": {"replicas": 2, "template": top["spec"]["template"]},
        "status": {"replicas": 2, "readyReplicas": 2, "updatedReplicas": 2,
                   "availableReplicas": 2, "observedGeneration": 7},
    }))
elif args[:3] == ["rollout", "undo", "deployment/quizbot"]:
    wanted = [a.split("=", 1)[1] for a in args[3:] if a.startswith("--to-revision=")]
    mine = [rs for rs in state["replicasets"] if owned(rs, "quizbot")]
    newest = max(revision(rs) for rs in mine)
    target = [rs for rs in mine if wanted and str(revision(rs)) == wanted[0]]
    if not target:
        sys.exit(f"error: unable to find specified revision {wanted[0]} in history")
    target[0]["metadata"]["annotations"][REV] = str(newest + 1)
    with open(os.path.join(here, "state.json"), "w") as f:
        json.dump(state, f)
    print("deployment.apps/quizbot rolled back")
elif args[:3] == ["set", "image", "deployment/quizbot"]:
    container, _, image = args[3].partition("=")
    mine = [rs for rs in state["replicasets"] if owned(rs, "quizbot")]
    top = max(mine, key=revision)
    if container not in [c["name"] for c in top["spec"]["template"]["spec"]["containers"]]:
        sys.exit(f'error: unable to find container named "{container}"')
    same = [rs for rs in mine
            if rs["spec"]["template"]["spec"]["containers"][0]["image"] == image]
    if same:  # as Kubernetes does: the ReplicaSet of that template becomes the newest
        chosen = same[0]
    else:
        chosen = json.loads(json.dumps(top))
        chosen["metadata"]["name"] = f"quizbot-s{len(mine)}"
        chosen["spec"]["template"]["spec"]["containers"][0]["image"] = image
        state["replicasets"].append(chosen)
    chosen["metadata"]["annotations"][REV] = str(revision(top) + 1)
    with open(os.path.join(here, "state.json"), "w") as f:
        json.dump(state, f)
    print("deployment.apps/quizbot image updated")
elif args[:3] == ["rollout", "status", "deployment/quizbot"] and (state.get("stuck") or any(
        revision(rs) == max(revision(r) for r in state["replicasets"] if owned(r, "quizbot"))
        and rs["spec"]["template"]["spec"]["containers"][0]["image"] in state.get("broken", [])
        for rs in state["replicasets"] if owned(rs, "quizbot"))):
    print('Waiting for deployment "quizbot" rollout to finish: 0 of 2 updated replicas are '
          'available...')
    sys.exit('error: deployment "quizbot" exceeded its progress deadline')
elif args[:3] == ["rollout", "status", "deployment/quizbot"]:
    print('Waiting for deployment "quizbot" rollout to finish: 1 of 2 updated replicas are '
          'available...')
    print('deployment "quizbot" successfully rolled out')
elif args[:2] == ["logs", "deployment/quizbot"]:
    print("2026-12-01T10:00:00Z INFO quizbot started")
else:
    sys.exit(f"error: unknown command {args!r} for the shim")
'''


def _replicaset(
    deployment: str, suffix: str, revision: int, image: str, created: str
) -> dict[str, Any]:
    annotations = {"deployment.kubernetes.io/revision": str(revision)}
    if revision == 2:
        annotations["kubernetes.io/change-cause"] = "kubectl set image deployment/quizbot"
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{deployment}-{suffix}",
            "namespace": "bots",
            "creationTimestamp": created,
            "annotations": annotations,
            "labels": {"app": deployment, "pod-template-hash": suffix},
            "ownerReferences": [
                {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                 "uid": f"uid-{deployment}", "controller": True},
            ],
        },
        "spec": {
            "replicas": 2 if revision == 3 else 0,
            "template": {
                "metadata": {"labels": {"app": deployment}},
                "spec": {"containers": [{"name": "bot", "image": image}]},
            },
        },
        "status": {"replicas": 2 if revision == 3 else 0},
    }  # fmt: skip


@pytest.fixture(scope="module")
def kube_dir(sshd_server: SSHServer) -> Iterator[Path]:
    """The shim on the lab user's PATH, its state and its argv log beside it."""
    directory = sshd_server.bin_dir
    R, T9 = "registry.local/", "T09:00:00Z"
    state = {
        "replicasets": [
            _replicaset("quizbot", "5d8f7", 1, R + "quizbot:1.0", f"2026-11-20{T9}"),
            _replicaset("quizbot", "7c9b4", 2, R + "quizbot:1.1", f"2026-11-21{T9}"),
            _replicaset("quizbot", "64f2d", 3, R + "quizbot:1.2", f"2026-11-22{T9}"),
            _replicaset("otherbot", "1a2b3", 9, R + "otherbot:3", f"2026-11-22{T9}"),
        ]
    }  # fmt: skip
    (directory / "state.json").write_text(json.dumps(state))
    (directory / "argv.log").write_text("")
    shim = directory / "kubectl"
    shim.write_text(KUBECTL)
    shim.chmod(0o755)
    lab = pwd.getpwnam(sshd_server.username)
    for path in (directory, *directory.iterdir()):
        os.chown(path, lab.pw_uid, lab.pw_gid)
    yield directory
    for name in ("kubectl", "state.json", "argv.log"):
        (directory / name).unlink(missing_ok=True)


def ran(kube_dir: Path) -> list[list[str]]:
    """Every argv the shim was run with, in order (without the program name)."""
    return [json.loads(line) for line in (kube_dir / "argv.log").read_text().splitlines()]


fake = fake_fixture(scope="module", group_per_minute=None)


@pytest_asyncio.fixture(scope="module")
async def chat(
    fake: FakeBotAPI,
    tmp_path_factory: pytest.TempPathFactory,
    sshd_server: SSHServer,
    kube_dir: Path,
) -> AsyncIterator[ChatSession]:
    tmp, config = module_config(fake, tmp_path_factory, "k8s")
    config["endpoints"] = {"lab-ssh": ssh_endpoint(sshd_server)}
    config["targets"] = {
        "quiz": {
            "kind": "k8s", "endpoint": "lab-ssh", "deployment": "quizbot", "namespace": "bots",
            "verify_deadline": 20,
        },
        "proc": {"kind": "command", "endpoint": "lab-ssh", "actions": {"status": ["true"]}},
    }  # fmt: skip
    async with opsbot_chat(fake, tmp, config) as session:
        yield session


async def test_list_shows_the_revisions_with_their_images(
    chat: ChatSession, kube_dir: Path
) -> None:
    before = len(ran(kube_dir))
    reply = await chat.ask("/rollback quiz list", user=OSCAR)
    text = reply.text or ""
    assert "deployment quizbot in bots, 3 revisions, newest first" in text, text
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    assert [row[0] for row in rows] == ["3", "2", "1"]
    assert rows[0][1] == "current" and rows[0][-1] == "registry.local/quizbot:1.2"
    assert "registry.local/quizbot:1.1" in text and "(kubectl set image" in text
    assert "otherbot" not in text  # another deployment's ReplicaSets are not ours
    assert ran(kube_dir)[before:] == [["-n", "bots", "get", "replicasets", "-o", "json"]]
    assert reply.reply_markup is None  # listing changes nothing


async def test_rollback_to_a_revision_after_approval_is_verified(
    chat: ChatSession, kube_dir: Path
) -> None:
    card = await chat.ask("/rollback quiz 1", user=OSCAR)
    text = card.text or ""
    assert "rollback quiz — approval needed" in text, text
    assert (
        "revision 3 (registry.local/quizbot:1.2) → revision 1 (registry.local/quizbot:1.0)" in text
    )
    assert "kubectl -n bots rollout undo deployment/quizbot --to-revision=1" in text
    assert not any("undo" in argv for argv in ran(kube_dir))  # nothing ran before approval

    before = len(ran(kube_dir))
    done = await approved(chat, card, "rollback quiz — done", timeout=40)
    assert (
        done.text is not None and "healthy after" in done.text and "approved by bob" in done.text
    )
    after = ran(kube_dir)[before:]
    assert after[0] == ["-n", "bots", "rollout", "undo", "deployment/quizbot", "--to-revision=1"]
    assert after[1] == ["-n", "bots", "rollout", "status", "deployment/quizbot", "--timeout=20s"]
    assert ["-n", "bots", "get", "deployment", "quizbot", "-o", "json"] in after[2:]  # checks

    listed = await chat.ask("/rollback quiz list", user=OSCAR)
    rows = [
        line.split() for line in (listed.text or "").splitlines() if line[:5].strip().isdigit()
    ]
    assert [row[0] for row in rows] == ["4", "3", "2"]  # revision 1 became 4, as in k8s
    assert rows[0][1] == "current" and rows[0][-1] == "registry.local/quizbot:1.0"


async def test_bad_revisions_run_nothing(chat: ChatSession, kube_dir: Path) -> None:
    before = len(ran(kube_dir))
    replies = await replies_say(chat, [
        ("/rollback quiz 9", "has no revision 9"),
        ("/rollback quiz 0", "a revision is a number"),
        ("/rollback quiz 2;reboot", "a revision is a number"),
        ("/rollback quiz -1", "a revision is a number"),
        ("/rollback quiz 99999999999", "a revision is a number"),
        ("/rollback quiz 1 2", "usage: /rollback TARGET [list | REVISION]"),
        ("/rollback proc list", "only k8s targets have revisions"),
        ("/rollback proc 2", "only a k8s target"),
    ])  # fmt: skip
    assert [r.reply_markup for r in replies] == [None] * len(replies)  # nothing to tap
    current = await chat.ask("/rollback quiz list", user=OSCAR)
    newest = next(line.split()[0] for line in (current.text or "").splitlines()
                  if "current" in line)  # fmt: skip
    reply = await chat.ask(f"/rollback quiz {newest}", user=OSCAR)
    assert reply.text is not None and "is the one quizbot runs already" in reply.text
    assert all(argv[2:4] != ["rollout", "undo"] for argv in ran(kube_dir)[before:])


async def test_a_rollout_that_does_not_finish_is_a_failed_rollback(
    chat: ChatSession, kube_dir: Path
) -> None:
    state = json.loads((kube_dir / "state.json").read_text())
    (kube_dir / "state.json").write_text(json.dumps({**state, "stuck": True}))
    try:
        card = await chat.ask("/rollback quiz 2", user=OSCAR)
        text = card.text or ""
        assert "→ revision 2 (registry.local/quizbot:1.1)" in text, text
        failed = await approved(chat, card, "rollback quiz — failed", timeout=40)
    finally:
        state = json.loads((kube_dir / "state.json").read_text())
        state.pop("stuck", None)
        (kube_dir / "state.json").write_text(json.dumps(state))
    assert failed.text is not None
    assert "exceeded its progress deadline" in failed.text
    assert "kubectl -n bots rollout status deployment/quizbot --timeout=20s" in failed.text


def _current_image(kube_dir: Path) -> str:
    state = json.loads((kube_dir / "state.json").read_text())
    mine = [rs for rs in state["replicasets"] if rs["metadata"]["name"].startswith("quizbot")]
    top = max(mine, key=lambda rs: int(rs["metadata"]["annotations"][REVISION]))
    return str(top["spec"]["template"]["spec"]["containers"][0]["image"])


REVISION = "deployment.kubernetes.io/revision"


async def test_deploy_sets_the_image_and_a_rollout_that_fails_is_set_back(
    chat: ChatSession, kube_dir: Path
) -> None:
    before = _current_image(kube_dir)
    set_image = "kubectl -n bots set image deployment/quizbot bot=registry.local/quizbot:1.3"
    card = await chat.ask("/deploy quiz 1.3", user=OSCAR)
    text = card.text or ""
    assert f"deploy quiz on lab-ssh: {before.rsplit('/', 1)[1]} → quizbot:1.3" in text, text
    assert set_image in text
    assert "kubectl -n bots rollout status deployment/quizbot --timeout=20s" in text
    done = await approved(chat, card, "deploy quiz — done")
    assert "deployed quizbot:1.3: healthy" in (done.text or ""), done.text
    assert _current_image(kube_dir) == "registry.local/quizbot:1.3"
    again = await chat.ask("/deploy quiz 1.3", user=OSCAR)
    assert "runs registry.local/quizbot:1.3 already" in (again.text or "")

    state = json.loads((kube_dir / "state.json").read_text())
    (kube_dir / "state.json").write_text(json.dumps({**state, "broken": [
        "registry.local/quizbot:1.9"]}))  # fmt: skip
    mark = len(ran(kube_dir))
    card = await chat.ask("/deploy quiz 1.9", user=OSCAR)
    failed = await approved(chat, card, "deploy quiz — failed")
    shown = failed.text or ""
    assert "back to quizbot:1.3, healthy again" in shown, shown
    assert "exceeded its progress deadline" in shown
    assert [a[2:4] + a[4:5] for a in ran(kube_dir)[mark:] if a[2] in ("set", "rollout")] == [
        ["set", "image", "deployment/quizbot"], ["rollout", "status", "deployment/quizbot"],
        ["set", "image", "deployment/quizbot"], ["rollout", "status", "deployment/quizbot"],
    ]  # fmt: skip
    assert _current_image(kube_dir) == "registry.local/quizbot:1.3"


