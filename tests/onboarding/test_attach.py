"""Which target a runbook's checks and backups join, and which ways of running one bot are one
target (tests/onboarding/runbooks/three_ways.md)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.onboarding.test_import_cli import RUNBOOKS, imported


def test_three_ways_of_running_one_bot_draft_one_target_and_the_others_as_comments() -> None:
    done = imported(RUNBOOKS / "three_ways.md")
    config = yaml.safe_load(done.stdout)
    # not db (only its logs were read), not docker.service (the engine is an endpoint)
    assert list(config["targets"]) == ["chef"]
    assert "endpoints" not in config  # the plain container is no target of its own
    chef = config["targets"]["chef"]
    assert chef["file"] == "/srv/recipes/docker-compose.yml"
    assert chef["checks"] == [{"type": "command", "argv": [
        "docker", "compose", "-f", "/srv/recipes/docker-compose.yml", "exec", "-T", "chef",
        "curl", "-fsS", "http://localhost:8080/health",
    ]}]  # fmt: skip
    # the dump shown after a `cd` in another block runs with the project's compose file
    assert chef["backups"][0]["pg_dump"] == [
        "docker", "compose", "-f", "/srv/recipes/docker-compose.yml", "exec", "-T", "db", "pg_dump"
    ]  # fmt: skip
    comments = [line.strip() for line in done.stdout.splitlines()]
    assert [c for c in comments if c.startswith("# also documented as:")] == [
        "# also documented as: k8s deployment/chef -n recipes (three_ways.md:27)",
        "# also documented as: container recipe-bot (three_ways.md:19)",
        "# also documented as: command check docker exec recipe-bot curl -fsS "
        "http://localhost:8080/health (three_ways.md:21)",
        "# also documented as: command check kubectl exec -n recipes deploy/chef -- curl -fsS "
        "http://chef-svc:8080/ready (three_ways.md:28)",
        "# also documented as: postgres backup recipes (three_ways.md:35)",
    ]


def test_a_dump_through_kubectl_exec_is_a_backup_and_a_bare_pod_name_is_flagged(
    tmp_path: Path,
) -> None:
    runbook = tmp_path / "k8s.md"
    runbook.write_text(
        "# Notes bot\n\n```bash\nkubectl -n notes rollout restart deployment/notes-bot\n"
        "kubectl -n notes exec notes-db-7f9c -- pg_dump -U notes -Fc notes > /tmp/n.dump\n"
        "kubectl -n notes exec deploy/notes-bot -- curl -fsS http://notes-svc/healthz\n```\n"
    )
    done = imported(runbook)
    bot = yaml.safe_load(done.stdout)["targets"]["notes-bot"]
    assert bot["backups"][0]["pg_dump"] == [
        "kubectl", "exec", "-n", "notes", "notes-db-7f9c", "--", "pg_dump"
    ]  # fmt: skip
    # a URL of the cluster's network is curled where it resolves, not from opsbot's host
    assert bot["checks"] == [{"type": "command", "argv": [
        "kubectl", "exec", "-n", "notes", "deploy/notes-bot", "--", "curl", "-fsS",
        "http://notes-svc/healthz",
    ]}]  # fmt: skip
    assert "fill in: a pod's name changes when it is recreated" in done.stdout


def test_a_probe_through_compose_beside_a_pm2_bot_is_the_bots_own_check(tmp_path: Path) -> None:
    """Only a way the target is also documented as makes a comment: Redis in a compose project
    beside a pm2 bot is probed from the host, a real check of the bot."""
    runbook = tmp_path / "pm2.md"
    runbook.write_text(
        "# Menu bot\n\n```bash\npm2 restart menu\n"
        "docker compose -f /srv/menu/compose.yml exec -T redis redis-cli ping\n```\n"
    )
    done = imported(runbook)
    menu = yaml.safe_load(done.stdout)["targets"]["menu"]
    assert menu["checks"] == [{"type": "command", "argv": [
        "docker", "compose", "-f", "/srv/menu/compose.yml", "exec", "-T", "redis", "redis-cli",
        "ping",
    ]}]  # fmt: skip
    assert "also documented as" not in done.stdout
